import ALBEF
import DataPipeline
import Foundation
import Tensor

/// `BatchSource` over the data pipeline's `DataLoader`: static sharding (the epoch's slot layout,
/// ``SlotPlan``: `DistributedSampler`'s when there is no accumulation) or ranges leased from the
/// coordinator.
public final class LoaderSource: BatchSource {
    public let index: CorpusIndex
    public let tokenizer: BertTokenizer
    public let configuration: DataLoader.Configuration
    public let rank: Int, worldSize: Int
    /// Ranks × micro-steps × batch of one optimizer step.
    public let layout: StepLayout
    /// Leases instead of static sharding (coordinator): the range source of each epoch.
    public let ranges: ((Int) -> SampleRangeSource)?
    public private(set) var iterationsPerEpoch: Int
    /// Usable samples of the index (static sharding: |S| of the slot layout).
    let usable: Int
    let shardOffsets: [Int]
    var loader: DataLoader?
    /// Static sharding: the current epoch's slot layout.
    public private(set) var plan: SlotPlan
    /// Position after the last batch trained, and after the last one read.
    var lastPosition: LoaderPosition?
    var readPosition: LoaderPosition?
    var restored: LoaderPosition?
    var counts: [String: Int] = [:]

    /// Each sample's image id by global sample number (retrieval fine-tuning), else nil.
    public let imageIds: [Int64]?

    /// With `imageIds`, every batch carries its samples' image ids (``imageIDTable(index:)``).
    public init(index: CorpusIndex, tokenizer: BertTokenizer, configuration: DataLoader.Configuration, rank: Int, worldSize: Int,
                ranges: ((Int) -> SampleRangeSource)? = nil, iterationsPerEpoch: Int? = nil, accumSteps: Int = 1,
                imageIds: Bool = false) throws {
        self.imageIds = imageIds ? try LoaderSource.imageIDTable(index: index) : nil
        self.index = index
        self.tokenizer = tokenizer
        self.configuration = configuration
        self.rank = rank
        self.worldSize = worldSize
        self.ranges = ranges
        layout = StepLayout(batchSize: configuration.batchSize, ranks: worldSize, accumSteps: accumSteps)
        plan = layout.freshPlan
        var offsets: [Int] = []
        var o = 0
        for s in index.shards { offsets.append(o); o += s.samples }
        shardOffsets = offsets
        usable = try DataLoader.usableCount(index: index, configuration: configuration)
        if let n = iterationsPerEpoch {
            self.iterationsPerEpoch = n
        } else {
            self.iterationsPerEpoch = usable / layout.globalBatch
            guard self.iterationsPerEpoch > 0 else {
                throw DataError.notEnoughSamples(available: usable, needed: layout.globalBatch)
            }
        }
    }

    public func resume(from state: CheckpointState, rank: Int, layout: StepLayout) throws {
        let positions = try state.ranks.sorted { $0.rank < $1.rank }.map { r -> LoaderPosition? in
            guard let p = r.dataPosition, let d = p.data(using: .utf8) else { return nil }
            return try JSONDecoder().decode(LoaderPosition.self, from: d)
        }
        let before = state.layout ?? StepLayout(batchSize: state.batchSize ?? layout.batchSize, ranks: state.worldSize, accumSteps: 1)
        if ranges != nil {
            // Leases: the coordinator re-plans what its ledger has not seen consumed.
            if state.worldSize == worldSize { restored = positions.indices.contains(rank) ? positions[rank] : nil }
            return
        }
        if before == layout {
            restored = positions.indices.contains(rank) ? positions[rank] : nil
            return
        }
        // Another split of the same slots: every slot continues where its old rank stopped.
        guard before.slots == layout.slots, before.batchSize == layout.batchSize else {
            throw TrainingError.checkpoint("the checkpoint's layout (\(before)) and this run's (\(layout)) have different slots; resume with a world size that divides \(before.slots)")
        }
        guard positions.count == state.worldSize, state.ranks.count == state.worldSize else {
            throw TrainingError.checkpoint("the checkpoint at step \(state.step) lacks the data position of some of its \(state.worldSize) ranks; it cannot be resumed on another world size without losing samples")
        }
        let epochPositions = positions.compactMap { $0 }.filter { $0.epoch == state.epoch }
        guard !epochPositions.isEmpty else { return }  // at an epoch's start: a fresh layout
        guard epochPositions.count == positions.count else {
            throw TrainingError.checkpoint("the ranks of the checkpoint at step \(state.step) stand in different epochs; cannot re-deal its samples")
        }
        let old = epochPositions[0].plan ?? before.freshPlan
        let next = old.advanced(count: usable, ranks: before.ranks, cursors: epochPositions.map(\.cursor))
        restored = LoaderPosition(epoch: state.epoch, plan: next)
    }

    public func start(epoch: Int, iteration: Int) throws {
        loader?.stop()
        lastPosition = nil
        readPosition = nil
        if let ranges {
            loader = try DataLoader(index: index, tokenizer: tokenizer, configuration: configuration, ranges: ranges(epoch), rank: rank,
                                    worldSize: worldSize, epoch: epoch)
        } else {
            let resume = restored.flatMap { $0.epoch == epoch ? $0 : nil }
            plan = resume?.plan ?? layout.freshPlan
            loader = try DataLoader(index: index, tokenizer: tokenizer, configuration: configuration, rank: rank, worldSize: worldSize,
                                    epoch: epoch, resumeFrom: resume, plan: plan)
            lastPosition = resume
            readPosition = resume
        }
        restored = nil
    }

    public func next() throws -> PretrainBatch? {
        guard let loader, let b = try loader.next() else { return nil }
        readPosition = b.position
        if ranges == nil { readPosition?.plan = plan }
        for (k, v) in loader.statistics.badByKind { counts["\(k)"] = v }
        let images = Tensor(b.images, shape: [b.batchSize, 3, b.imageSize, b.imageSize])
        let ids = b.samples.map { Int64(shardOffsets[$0.shard] + $0.index) }
        return PretrainBatch(images: images, inputIds: b.inputIds, attentionMask: b.attentionMask, batchSize: b.batchSize, length: b.textLength,
                             sampleIDs: ids, imageIds: imageIds.map { table in ids.map { table[Int($0)] } } ?? [])
    }

    /// `re_train_dataset`'s `img_ids`: the `image_id` of every sample of a JSON corpus (global
    /// sample number = shard offset + index, shards in index order), numbered 0, 1, … in order of
    /// first appearance. Throws naming the file and entry when the corpus is not JSON or an
    /// entry has no `image_id`.
    public static func imageIDTable(index: CorpusIndex) throws -> [Int64] {
        guard index.format == .json else {
            throw TrainingError.data("retrieval fine-tuning reads image ids from a re_train_dataset JSON ([{\"image\", \"caption\", \"image_id\"}]); the corpus is \(index.format.rawValue) (\(index.root))")
        }
        var files: [String: AnnotationFile] = [:]
        var numbers: [String: Int64] = [:]
        var out: [Int64] = []
        out.reserveCapacity(index.totalSamples)
        for s in index.shards.indices {
            let path = index.filePath(s)
            let ann: AnnotationFile
            if let a = files[path] { ann = a } else { ann = try AnnotationFile(path: path, imageRoot: index.imageRoot); files[path] = ann }
            let file = index.shards[s].path.split(separator: "#").first.map(String.init) ?? ""
            let perShard = index.shards.first(where: { $0.path == file + "#0" })?.samples ?? ann.entries.count
            let first = index.chunk(s) * max(1, perShard)
            for i in 0..<index.shards[s].samples {
                let g = first + i
                guard g < ann.entries.count, let raw = ann.entries[g].imageId else {
                    throw TrainingError.data("\(path): entry \(g) has no image_id (re_train_dataset entries are {\"image\", \"caption\", \"image_id\"}; `albef-data synth` writes re_train.json)")
                }
                let n = numbers[raw] ?? Int64(numbers.count)
                numbers[raw] = n
                out.append(n)
            }
        }
        return out
    }

    public func markTrained() { lastPosition = readPosition }

    public func position() -> String? {
        guard let p = lastPosition, let d = try? JSONEncoder().encode(p) else { return nil }
        return String(decoding: d, as: UTF8.self)
    }

    public var badSampleCounts: [String: Int] { counts }

    /// The loader position after the last batch trained (range mode: `pending` = unread ranges).
    public var loaderPosition: LoaderPosition? { lastPosition }

    /// "shard path#index" of a global sample number (the audit trail's sample names).
    public func sampleName(_ id: Int64) -> String {
        let g = Int(id)
        var lo = 0, hi = shardOffsets.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if shardOffsets[mid] <= g { lo = mid } else { hi = mid - 1 }
        }
        return "\(index.shards[lo].path)#\(g - shardOffsets[lo])"
    }

    deinit { loader?.stop() }
}
