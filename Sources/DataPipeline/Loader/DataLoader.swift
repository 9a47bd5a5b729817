import Foundation
import Tensor

/// Background-threaded, deterministic, resumable batch loader.
///
/// Work plan (PyTorch counterpart: `DistributedSampler(shuffle=True)` + `DataLoader(drop_last=True)`):
/// - Static sharding: the usable samples (index-known bad ones excluded) are permuted with
///   `RandomGenerator(seed).split(0xE90C).split(epoch)`; the permutation is cut to
///   ⌊N/W⌋·W entries and rank r takes entries r, r+W, r+2W, … (its *sequence*, ⌊N/W⌋ long).
///   Every rank yields exactly `batchesPerEpoch = ⌊⌊N/W⌋/B⌋` batches. Samples that turn out bad
///   at read time are skipped and the batch is filled from the following ones; near the end the
///   sequence wraps around to its start, so the batch count never changes.
/// - Range mode: the sequence is the concatenation of the ranges handed out by a
///   `SampleRangeSource` (coordinator leases), in order; it ends when the source returns nil
///   (the last partial batch is emitted unless `dropLast`).
/// Per-sample randomness (crop, flip, RandAugment, caption choice) comes from
/// `RandomGenerator(seed).split(epoch).split(globalIndex)`, so batches do not depend on the
/// thread count or timing: workers decode sample positions in parallel, and one assembler
/// consumes them strictly in sequence order into a bounded queue of ready batches.
public final class DataLoader: @unchecked Sendable {
    public struct Configuration: Sendable {
        public var batchSize: Int
        public var imageSize: Int
        /// Token budget including `[CLS]` (ALBEF: 25 = [CLS] + 24 pieces).
        public var maxTextLength = 25
        public var preCaptionMaxWords = 30
        public var seed: UInt64 = 0
        public var workers = 2
        /// Ready batches kept ahead of the consumer.
        public var prefetchBatches = 2
        public var mode = ImageTransform.Mode.pretrain
        public var useRandAugment = true
        public var flipProbability = 0.5
        /// Swap the words "left" and "right" in the caption of a flipped image (NOT in ALBEF; for
        /// corpora whose captions name positions, such as the synthetic one).
        public var flipSwapsLeftRight = false
        public var cropScale = (0.2, 1.0)
        public var maxCaptionBytes = CaptionCheck.defaultMaxBytes
        /// Throw `DataError.tooManyBadSamples` when bad / seen exceeds this, checked once at least
        /// `minSamplesForBadFraction` samples were seen (and at the end of the stream).
        public var maxBadFraction = 0.1
        /// Images declaring more pixels than this are skipped (`image_too_large`) before decoding:
        /// a loader thread's image buffers never exceed 3 bytes × this (plus the fixed-size crop).
        public var maxImagePixels = ImageDecoder.defaultMaxPixels
        public var minSamplesForBadFraction = 20
        /// JSON-lines file that receives every skipped sample.
        public var quarantineFile: URL? = nil
        /// Range mode: drop the final partial batch.
        public var dropLast = false
        /// Called (from a loader thread) for every sample skipped at read time, with its shard
        /// index (the coordinator link reports them).
        public var onBadSample: (@Sendable (BadSample, Int) -> Void)? = nil
        public var log: @Sendable (String) -> Void = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }

        public init(batchSize: Int, imageSize: Int) {
            self.batchSize = batchSize
            self.imageSize = imageSize
        }

        /// Augmentation presets.
        /// - `albef`: ALBEF pretraining (RRC scale 0.2–1, flip 0.5, RandAugment(2, 7)); the default.
        /// - `light`: RRC scale 0.5–1, flip 0.5 with "left"/"right" swapped in the caption, no
        ///   RandAugment: for small, position-naming corpora such as the synthetic quickstart one.
        /// - `none`: RRC scale 1 (the whole image up to the aspect-ratio jitter), no flip, no RandAugment.
        public enum AugmentPreset: String, Sendable, CaseIterable { case albef, light, none }

        /// Sets the crop scale, flip and RandAugment fields from a preset.
        public mutating func apply(_ preset: AugmentPreset) {
            switch preset {
            case .albef:
                cropScale = (0.2, 1.0); flipProbability = 0.5; flipSwapsLeftRight = false; useRandAugment = true
            case .light:
                cropScale = (0.5, 1.0); flipProbability = 0.5; flipSwapsLeftRight = true; useRandAugment = false
            case .none:
                cropScale = (1.0, 1.0); flipProbability = 0; flipSwapsLeftRight = false; useRandAugment = false
            }
        }
    }

    /// Counters of skipped samples.
    public struct Stats: Sendable, Equatable {
        public var seen = 0
        public var bad = 0
        public var badByKind: [BadSampleKind: Int] = [:]
        /// Samples marked bad in the index and excluded from the static plan.
        public var excludedByIndex = 0
    }

    enum Plan {
        case staticShard(sequence: [Int])
        case ranges(source: SampleRangeSource)
    }

    struct Decoded {
        var ref: SampleRef
        var key: String
        var caption: String
        var ids: [Int32]
        var image: [Float]
    }

    public let index: CorpusIndex
    public let configuration: Configuration
    public let rank: Int
    public let worldSize: Int
    public let epoch: Int
    /// Batches this loader yields (static mode); nil in range mode.
    public let batchesPerEpoch: Int?
    let reader: CorpusReader
    let tokenizer: BertTokenizer
    let plan: Plan
    let shardOffsets: [Int]

    // Shared state, guarded by `cond`.
    let cond = NSCondition()
    var nextClaim: Int
    var assemblePos: Int
    var results: [Int: Result<Decoded, BadSample>] = [:]
    /// Shard index of each failed result in `results`.
    var failedShard: [Int: Int] = [:]
    var ready: [Batch] = []
    var builder: [Decoded] = []
    var batchesMade: Int
    var finished = false
    var failure: Error? = nil
    var stopped = false
    var sequenceEnd: Int? = nil
    var fetchedRanges: [SampleRange] = []
    var fetchedStarts: [Int] = []
    /// Every range from the source (empty ones too): sequence start and length.
    var sourceRanges: [(start: Int, count: Int)] = []
    /// A worker is calling the range source (with the lock released).
    var fetching = false
    var stats = Stats()
    var lastBad: BadSample? = nil
    var threads: [Thread] = []
    let quarantine: FileHandle?

    /// Static sharding over the whole index for (rank, worldSize, epoch), optionally resuming:
    /// rank `rank` reads its slots of `plan` (default: one slot per rank, `DistributedSampler`'s
    /// layout) from the epoch's permutation of the usable samples.
    public convenience init(index: CorpusIndex, tokenizer: BertTokenizer, configuration: Configuration,
                            rank: Int, worldSize: Int, epoch: Int, resumeFrom: LoaderPosition? = nil, plan: SlotPlan? = nil) throws {
        precondition(rank >= 0 && rank < worldSize, "DataLoader: rank \(rank) not in 0..<\(worldSize)")
        let plan = plan ?? SlotPlan(slots: worldSize, batchSize: configuration.batchSize)
        precondition(plan.batchSize == configuration.batchSize && plan.slots % worldSize == 0,
                     "DataLoader: plan of \(plan.slots) slots × \(plan.batchSize) does not fit \(worldSize) ranks × batch \(configuration.batchSize)")
        let (usable, excluded) = try DataLoader.usableSamples(index: index, configuration: configuration)
        let order = DataLoader.epochOrder(usable: usable, seed: configuration.seed, epoch: epoch)
        let steps = plan.steps(samples: order.count)
        guard steps > 0 || plan.origins.contains(where: { $0 > 0 }) else {
            throw DataError.notEnoughSamples(available: order.count, needed: plan.slots * configuration.batchSize)
        }
        let sequence = plan.sequence(count: order.count, rank: rank, ranks: worldSize).map { order[$0] }
        try self.init(index: index, tokenizer: tokenizer, configuration: configuration, rank: rank, worldSize: worldSize,
                      epoch: epoch, plan: .staticShard(sequence: sequence), batches: steps * (plan.slots / worldSize),
                      start: resumeFrom, excludedByIndex: excluded)
    }

    /// The epoch's permutation of the usable samples (global sample numbers), the same on every rank.
    static func epochOrder(usable: [Int], seed: UInt64, epoch: Int) -> [Int] {
        var permRNG = RandomGenerator(seed: seed).split(0xE90C).split(UInt64(epoch))
        var order = usable
        permRNG.shuffle(&order)
        return order
    }

    /// How many samples of the index are usable (not marked bad by it): |S| of ``SlotPlan``.
    public static func usableCount(index: CorpusIndex, configuration: Configuration) throws -> Int {
        try usableSamples(index: index, configuration: configuration).usable.count
    }

    /// Global indices of the samples not marked bad in the index, and how many were excluded.
    /// Throws `tooManyBadSamples` when the excluded fraction exceeds `maxBadFraction`.
    static func usableSamples(index: CorpusIndex, configuration: Configuration) throws -> (usable: [Int], excluded: Int) {
        var usable: [Int] = []
        usable.reserveCapacity(index.totalSamples)
        var offset = 0
        var excluded = 0
        for s in index.shards {
            let badKeys = Set(s.bad.map(\.key))
            if badKeys.isEmpty {
                usable.append(contentsOf: offset..<(offset + s.samples))
            } else {
                let badIdx = DataLoader.badIndices(index: index, shard: s, badKeys: badKeys)
                for i in 0..<s.samples where !badIdx.contains(i) { usable.append(offset + i) }
                excluded += badIdx.count
            }
            offset += s.samples
        }
        if index.totalSamples > 0, Double(excluded) / Double(index.totalSamples) > configuration.maxBadFraction {
            throw DataError.tooManyBadSamples(bad: excluded, seen: index.totalSamples, maxFraction: configuration.maxBadFraction,
                                              last: BadSample(shard: "index", key: "*", kind: .corruptImage,
                                                              message: "the index marks \(excluded) samples bad"))
        }
        return (usable, excluded)
    }

    /// Batches per epoch of static sharding, ⌊⌊usable/W⌋/B⌋, without starting a loader (the same
    /// on every rank and every epoch).
    public static func batchesPerEpoch(index: CorpusIndex, configuration: Configuration, worldSize: Int) throws -> Int {
        let (usable, _) = try usableSamples(index: index, configuration: configuration)
        return usable.count / worldSize / configuration.batchSize
    }

    /// Range mode: reads the ranges handed out by `ranges` (e.g. coordinator leases), in order.
    public convenience init(index: CorpusIndex, tokenizer: BertTokenizer, configuration: Configuration,
                            ranges: SampleRangeSource, rank: Int = 0, worldSize: Int = 1, epoch: Int = 0) throws {
        try self.init(index: index, tokenizer: tokenizer, configuration: configuration, rank: rank, worldSize: worldSize,
                      epoch: epoch, plan: .ranges(source: ranges), batches: nil, start: nil, excludedByIndex: 0)
    }

    init(index: CorpusIndex, tokenizer: BertTokenizer, configuration: Configuration, rank: Int, worldSize: Int,
         epoch: Int, plan: Plan, batches: Int?, start: LoaderPosition?, excludedByIndex: Int) throws {
        precondition(configuration.batchSize > 0 && configuration.imageSize > 0 && configuration.maxTextLength > 0,
                     "DataLoader: batchSize, imageSize and maxTextLength must be positive")
        self.index = index
        self.configuration = configuration
        self.rank = rank
        self.worldSize = worldSize
        self.epoch = epoch
        self.plan = plan
        batchesPerEpoch = batches
        reader = CorpusReader(index: index, maxCaptionBytes: configuration.maxCaptionBytes)
        self.tokenizer = tokenizer
        var offsets: [Int] = []
        var o = 0
        for s in index.shards { offsets.append(o); o += s.samples }
        shardOffsets = offsets
        stats.excludedByIndex = excludedByIndex
        if let p = start {
            precondition(p.epoch == epoch, "DataLoader: resume position is for epoch \(p.epoch), loader for \(epoch)")
            nextClaim = p.cursor
            assemblePos = p.cursor
            batchesMade = p.batches
        } else {
            nextClaim = 0
            assemblePos = 0
            batchesMade = 0
        }
        if let q = configuration.quarantineFile {
            if !FileManager.default.fileExists(atPath: q.path) { _ = FileManager.default.createFile(atPath: q.path, contents: nil) }
            quarantine = try FileHandle(forWritingTo: q)
            quarantine?.seekToEndOfFile()
        } else {
            quarantine = nil
        }
        if let b = batches, batchesMade >= b { finished = true }
        for w in 0..<max(1, configuration.workers) {
            // Threads hold the loader until they exit (epoch end, stream end, failure or `stop()`).
            let t = Thread { self.workerLoop() }
            t.name = "albef-data-\(rank)-\(w)"
            t.stackSize = 1 << 20
            threads.append(t)
        }
        threads.forEach { $0.start() }
    }

    deinit {
        cond.lock()
        stopped = true
        cond.broadcast()
        cond.unlock()
        try? quarantine?.close()
    }

    /// Stops the worker threads (also done on deinit).
    public func stop() {
        cond.lock()
        stopped = true
        cond.broadcast()
        cond.unlock()
    }

    /// Skipped-sample counters so far.
    public var statistics: Stats {
        cond.lock()
        defer { cond.unlock() }
        return stats
    }

    /// The next batch, or nil at the end of the epoch / range stream (or after `stop()`). Blocks
    /// while workers decode.
    /// Throws `DataError.tooManyBadSamples` (or a range-source error).
    public func next() throws -> Batch? {
        cond.lock()
        defer { cond.unlock() }
        while ready.isEmpty && !finished && failure == nil && !stopped { cond.wait() }
        if let e = failure { throw e }
        if ready.isEmpty { return nil }
        let b = ready.removeFirst()
        cond.broadcast()
        return b
    }

    // MARK: - Workers

    /// Indices of the samples of `shard` listed as bad in the index.
    static func badIndices(index: CorpusIndex, shard: CorpusIndex.Shard, badKeys: Set<String>) -> Set<Int> {
        if index.format == .json {
            // Keys are global entry numbers within the file; shard chunk k covers [k·n0, …).
            let parts = shard.path.split(separator: "#")
            let chunk = parts.count > 1 ? Int(parts[1]) ?? 0 : 0
            let first = index.shards.first { $0.path == parts[0] + "#0" }?.samples ?? shard.samples
            return Set(badKeys.compactMap { Int($0).map { $0 - chunk * first } })
        }
        let path = shard.path.hasPrefix("/") ? shard.path : index.root + "/" + shard.path
        // Every loader (each epoch, each rank in the process) needs this; scan each tar once.
        let cacheKey = "\(path)|\(shard.bytes)|\(shard.bad.map { "\($0.key)/\($0.kind)" }.joined(separator: ","))"
        if let cached = badIndexCache.with({ $0[cacheKey] }) { return cached }
        guard let tar = try? TarFile(path: path), let scan = try? tar.scan() else { return Set(0..<shard.samples) }
        let found = matchBad(shard: shard, entries: WebDatasetShard(scan: scan).entries, badKeys: badKeys)
        badIndexCache.with { cache in
            if cache.count > 4096 { cache.removeAll() }
            cache[cacheKey] = found
        }
        return found
    }

    static let badIndexCache = Locked([String: Set<Int>]())

    static func matchBad(shard: CorpusIndex.Shard, entries: [WebDatasetShard.Entry], badKeys: Set<String>) -> Set<Int> {
        // Match each listed (key, kind) to one group in file order: structural kinds to the group
        // carrying that problem, caption kinds to the first structurally fine group with that key
        // (a duplicated key has two groups, only one of them bad).
        var remaining = shard.bad.map { ($0.key, $0.kind) }
        var out = Set<Int>()
        for (i, e) in entries.enumerated() where badKeys.contains(e.key) {
            let j: Int?
            if let b = e.bad {
                j = remaining.firstIndex { $0.0 == e.key && $0.1 == b.kind.rawValue }
            } else {
                j = remaining.firstIndex { $0.0 == e.key && BadSampleKind(rawValue: $0.1).map(DataLoader.isCaptionKind) == true }
            }
            if let j = j {
                remaining.remove(at: j)
                out.insert(i)
            }
        }
        return out
    }

    static func isCaptionKind(_ k: BadSampleKind) -> Bool {
        k == .emptyCaption || k == .nonUTF8Caption || k == .overlongCaption
    }

    /// Sample address of sequence position p and the epoch of its random stream (lock held; in
    /// range mode the lock is released while the source is asked for more). nil: beyond the
    /// known end, or stopping.
    func ref(at p: Int) throws -> (SampleRef, Int)? {
        switch plan {
        case .staticShard(let seq):
            // The rank's sequence ends here (its spare tail used up by skipped samples): never
            // wrap around, which would train samples of this epoch twice.
            guard p < seq.count else { sequenceEnd = seq.count; return nil }
            let g = seq[p]
            var lo = 0, hi = shardOffsets.count - 1
            while lo < hi {
                let mid = (lo + hi + 1) / 2
                if shardOffsets[mid] <= g { lo = mid } else { hi = mid - 1 }
            }
            return (SampleRef(shard: lo, index: g - shardOffsets[lo]), epoch)
        case .ranges(let source):
            while true {
                if let last = fetchedRanges.last, p < fetchedStarts.last! + last.count {
                    var lo = 0, hi = fetchedStarts.count - 1
                    while lo < hi {
                        let mid = (lo + hi + 1) / 2
                        if fetchedStarts[mid] <= p { lo = mid } else { hi = mid - 1 }
                    }
                    let r = fetchedRanges[lo]
                    return (SampleRef(shard: r.shard, index: r.start + p - fetchedStarts[lo]), r.epoch)
                }
                if sequenceEnd != nil || stopped || failure != nil { return nil }
                if fetching {
                    // Another worker is asking the source; its answer may cover p.
                    cond.wait()
                    continue
                }
                // Ask the source without holding the lock: it may block (waiting for a lease) and
                // the consumer must still get the batches that are ready.
                fetching = true
                cond.unlock()
                let answer = Result { try source.nextRange() }
                cond.lock()
                fetching = false
                cond.broadcast()
                guard let r = try answer.get() else {
                    sequenceEnd = (fetchedStarts.last ?? 0) + (fetchedRanges.last?.count ?? 0)
                    return nil
                }
                guard r.shard >= 0, r.shard < index.shards.count, r.start >= 0, r.end <= index.shards[r.shard].samples else {
                    throw DataError.badIndex(path: "lease", reason: "range \(r) is outside the index (\(index.shards.count) shards)")
                }
                sourceRanges.append((start: (fetchedStarts.last ?? 0) + (fetchedRanges.last?.count ?? 0), count: r.count))
                if r.count == 0 { continue }
                fetchedStarts.append((fetchedStarts.last ?? 0) + (fetchedRanges.last?.count ?? 0))
                fetchedRanges.append(r)
            }
        }
    }

    var window: Int { configuration.batchSize * (max(1, configuration.prefetchBatches) + 1) }

    func workerLoop() {
        var transform = ImageTransform(mode: configuration.mode, imageSize: configuration.imageSize)
        transform.randAugment = RandAugment()
        transform.useRandAugment = configuration.useRandAugment
        transform.flipProbability = configuration.flipProbability
        transform.scale = configuration.cropScale
        transform.maxPixels = configuration.maxImagePixels
        let floats = 3 * configuration.imageSize * configuration.imageSize
        while true {
            cond.lock()
            while !stopped && !finished && failure == nil
                    && (nextClaim - assemblePos >= window || ready.count >= max(1, configuration.prefetchBatches)) {
                cond.wait()
            }
            if stopped || finished || failure != nil { cond.unlock(); return }
            let p = nextClaim
            let address: (SampleRef, Int)?
            do {
                address = try ref(at: p)
            } catch {
                failure = error
                cond.broadcast()
                cond.unlock()
                return
            }
            if p != nextClaim {
                // Another worker claimed p while the source was being asked; take the next one.
                cond.unlock()
                continue
            }
            guard let (r, sampleEpoch) = address else {
                // End of the range stream: let the assembler flush, and wake the consumer.
                assemble()
                cond.broadcast()
                cond.unlock()
                return
            }
            nextClaim += 1
            cond.unlock()

            let result = decode(r, epoch: sampleEpoch, transform: &transform, floats: floats)

            cond.lock()
            results[p] = result
            if case .failure = result { failedShard[p] = r.shard }
            assemble()
            cond.broadcast()
            cond.unlock()
        }
    }

    func decode(_ r: SampleRef, epoch: Int, transform: inout ImageTransform, floats: Int) -> Result<Decoded, BadSample> {
        let global = shardOffsets[r.shard] + r.index
        var rng = RandomGenerator(seed: configuration.seed).split(UInt64(epoch)).split(UInt64(global))
        do {
            let raw = try reader.read(shard: r.shard, index: r.index)
            let pick = raw.captions.count > 1 ? rng.int(below: raw.captions.count) : 0
            var caption = PreCaption.apply(raw.captions[pick], maxWords: configuration.preCaptionMaxWords)
            var image = [Float](repeating: 0, count: floats)
            do {
                try image.withUnsafeMutableBufferPointer { try transform.run(raw.image, source: raw.source, rng: &rng, into: $0) }
            } catch let e as ImageError {
                let kind: BadSampleKind
                switch e.kind {
                case .truncated: kind = .truncatedImage
                case .unknownFormat: kind = .unknownImageFormat
                case .tooLarge: kind = .imageTooLarge
                default: kind = .corruptImage
                }
                return .failure(BadSample(shard: raw.shardPath, key: raw.key, kind: kind, message: e.message))
            }
            if configuration.flipSwapsLeftRight && transform.lastFlipped {
                caption = caption.split(separator: " ", omittingEmptySubsequences: false)
                    .map { $0 == "left" ? "right" : ($0 == "right" ? "left" : String($0)) }.joined(separator: " ")
            }
            let ids = [tokenizer.vocabulary.clsId] + tokenizer.ids(caption).prefix(configuration.maxTextLength - 1)
            return .success(Decoded(ref: r, key: raw.key, caption: caption, ids: ids, image: image))
        } catch let b as BadSample {
            return .failure(b)
        } catch {
            return .failure(BadSample(shard: index.shards[r.shard].path, key: "#\(r.index)", kind: .missingFile, message: "\(error)"))
        }
    }

    /// Consumes results in sequence order into batches (lock held).
    func assemble() {
        while !finished, failure == nil {
            if let end = sequenceEnd, assemblePos >= end {
                checkBadFraction(last: nil)
                if failure != nil { return }
                if !builder.isEmpty && !configuration.dropLast { emitBatch() }
                builder.removeAll()
                finished = true
                return
            }
            guard let r = results.removeValue(forKey: assemblePos) else { return }
            let shard = failedShard.removeValue(forKey: assemblePos)
            assemblePos += 1
            stats.seen += 1
            switch r {
            case .success(let d):
                builder.append(d)
                if builder.count == configuration.batchSize { emitBatch() }
            case .failure(let bad):
                record(bad)
                if let shard { configuration.onBadSample?(bad, shard) }
            }
        }
    }

    func record(_ bad: BadSample) {
        lastBad = bad
        stats.bad += 1
        stats.badByKind[bad.kind, default: 0] += 1
        configuration.log("albef-data: rank \(rank) epoch \(epoch): skipped \(bad)")
        if let q = quarantine {
            let line: [String: Any] = ["shard": bad.shard, "key": bad.key, "kind": bad.kind.rawValue,
                                       "message": bad.message, "rank": rank, "epoch": epoch]
            if let data = try? JSONSerialization.data(withJSONObject: line, options: [.sortedKeys]) {
                q.write(data + Data("\n".utf8))
            }
        }
        if stats.seen >= configuration.minSamplesForBadFraction { checkBadFraction(last: bad) }
    }

    func checkBadFraction(last: BadSample?) {
        guard stats.seen > 0, let last = last ?? lastBad else { return }
        if Double(stats.bad) / Double(stats.seen) > configuration.maxBadFraction {
            failure = DataError.tooManyBadSamples(bad: stats.bad, seen: stats.seen, maxFraction: configuration.maxBadFraction, last: last)
        }
    }

    func emitBatch() {
        let b = builder.count
        let side = configuration.imageSize
        let floats = 3 * side * side
        let length = builder.map(\.ids.count).max() ?? 1
        var images = [Float](repeating: 0, count: b * floats)
        var ids = [Int32](repeating: tokenizer.vocabulary.padId, count: b * length)
        var mask = [Int32](repeating: 0, count: b * length)
        images.withUnsafeMutableBufferPointer { dst in
            for (i, d) in builder.enumerated() {
                d.image.withUnsafeBufferPointer { src in
                    (dst.baseAddress! + i * floats).update(from: src.baseAddress!, count: floats)
                }
                for (j, t) in d.ids.enumerated() {
                    ids[i * length + j] = t
                    mask[i * length + j] = 1
                }
            }
        }
        batchesMade += 1
        var position = LoaderPosition(epoch: epoch, cursor: assemblePos, batches: batchesMade)
        if case .ranges = plan {
            position.pending = pendingRanges(from: assemblePos)
            position.rangesCompleted = sourceRanges.prefix { $0.start + $0.count <= assemblePos }.count
        }
        ready.append(Batch(images: images, inputIds: ids, attentionMask: mask, batchSize: b, textLength: length,
                           imageSize: side, keys: builder.map(\.key), captions: builder.map(\.caption),
                           samples: builder.map(\.ref), position: position))
        builder.removeAll(keepingCapacity: true)
        if let target = batchesPerEpoch, batchesMade >= target { finished = true }
    }

    func pendingRanges(from p: Int) -> [SampleRange] {
        var out: [SampleRange] = []
        for (i, r) in fetchedRanges.enumerated() {
            let s = fetchedStarts[i]
            if p >= s + r.count { continue }
            let skip = max(0, p - s)
            out.append(SampleRange(epoch: r.epoch, shard: r.shard, start: r.start + skip, end: r.end))
        }
        return out
    }
}
