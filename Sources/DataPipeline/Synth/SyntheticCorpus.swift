import Foundation
import Tensor

/// The built-in corpus: rendered shape scenes with templated captions, part of them made web-noisy.
///
/// Layout of `outDir`:
/// - `shards/00000.tar …` WebDataset shards (`KEY.jpg`, `KEY.txt`, `KEY.json` with the clean
///   caption and the noise kind), `KEY` = 9-digit sample number;
/// - `train.json` ALBEF annotation list over `images/KEY.jpg` (same samples; optional), and
///   `re_train.json`, the same pairs as `Retrieval.py`'s `re_train_dataset` (`image_id` = KEY);
/// - `heldout.json` eval list `[{"image": "heldout/NNNNN.jpg", "caption": [str]}]` (the
///   `re_eval_dataset` format), clean,
///   one UNIQUE caption per image; in easy mode every held-out image is a distinct
///   (colour, shape, position) combination, so K ≤ 8·6·5 = 240 and text→image chance R@1 = 1/K;
/// - `index.json` the `CorpusIndex` of the shards; `synth.json` the parameters and counts.
/// Sample i is drawn from `RandomGenerator(seed).split(1).split(i)`, so the corpus does not
/// depend on the thread count.
public struct SyntheticCorpus {
    public struct Options: Sendable {
        public var samples = 20_000
        public var noise = 0.2
        public var seed: UInt64 = 0
        public var difficulty = SynthDifficulty.easy
        public var heldout = 100
        public var shardSize = 1000
        public var imageSize = 64
        public var writeJSON = true
        public var jpegQuality = 90
        public var threads = 2
        public init() {}
    }

    public struct Summary: Codable, Sendable {
        public var samples: Int
        public var noisySamples: Int
        public var noiseKinds: [String: Int]
        public var shards: Int
        public var heldout: Int
        public var chanceRecallAt1: Double
        public var difficulty: String
        public var imageSize: Int
        public var seed: UInt64
        public var noise: Double
        enum CodingKeys: String, CodingKey {
            case samples, shards, heldout, difficulty, seed, noise
            case noisySamples = "noisy_samples", noiseKinds = "noise_kinds"
            case chanceRecallAt1 = "chance_recall_at_1", imageSize = "image_size"
        }
    }

    public let options: Options
    public init(options: Options) { self.options = options }

    /// Scene and clean caption of training sample i.
    func trainScene(_ i: Int) -> (Scene, String, RandomGenerator) {
        var rng = RandomGenerator(seed: options.seed).split(1).split(UInt64(i))
        let hard = options.difficulty == .hard
        let scene = hard ? SceneSampler.hard(rng: &rng)
            : SceneSampler.easy(combination: rng.int(below: SceneSampler.combinations), rng: &rng)
        let caption = SceneSampler.caption(scene, hard: hard, rng: &rng)
        return (scene, caption, rng)
    }

    /// Writes the corpus; returns the summary (also written to `synth.json`).
    @discardableResult
    public func write(to outDir: URL, log: (String) -> Void = { _ in }) throws -> Summary {
        let fm = FileManager.default
        let o = options
        precondition(o.samples > 0 && o.shardSize > 0 && o.imageSize >= 8, "synth: bad options")
        try fm.createDirectory(at: outDir.appendingPathComponent("shards"), withIntermediateDirectories: true)
        if o.writeJSON { try fm.createDirectory(at: outDir.appendingPathComponent("images"), withIntermediateDirectories: true) }
        try fm.createDirectory(at: outDir.appendingPathComponent("heldout"), withIntermediateDirectories: true)
        let nShards = (o.samples + o.shardSize - 1) / o.shardSize
        // Shards of an earlier, larger run would otherwise be picked up by the index.
        let shardDir = outDir.appendingPathComponent("shards")
        for name in (try? fm.contentsOfDirectory(atPath: shardDir.path)) ?? [] where name.hasSuffix(".tar") {
            try fm.removeItem(at: shardDir.appendingPathComponent(name))
        }
        struct Shared {
            var noiseKinds: [String: Int] = [:]
            var firstError: Error? = nil
            var annotations: [AnnotationFile.Entry?]
        }
        let shared = Locked(Shared(annotations: [AnnotationFile.Entry?](repeating: nil, count: o.samples)))
        let queue = DispatchQueue(label: "synth", attributes: .concurrent)
        let group = DispatchGroup()
        let semaphore = DispatchSemaphore(value: max(1, o.threads))
        for s in 0..<nShards {
            semaphore.wait()
            group.enter()
            queue.async {
                defer { semaphore.signal(); group.leave() }
                do {
                    var tar = TarWriter()
                    var kinds: [String: Int] = [:]
                    var entries: [(Int, AnnotationFile.Entry)] = []
                    for i in (s * o.shardSize)..<min(o.samples, (s + 1) * o.shardSize) {
                        var (scene, clean, rng) = self.trainScene(i)
                        let image = SceneRenderer.render(scene, size: o.imageSize, rng: &rng)
                        var caption = clean
                        var kind = "clean"
                        if rng.bernoulli(o.noise) {
                            var j = rng.int(below: o.samples)
                            if j == i { j = (j + 1) % o.samples }
                            let (noisy, k) = CaptionNoise.apply(clean, other: self.trainScene(j).1, rng: &rng)
                            caption = noisy
                            kind = k.rawValue
                        }
                        kinds[kind, default: 0] += 1
                        let jpg = try JPEGEncoder.encode(image, quality: o.jpegQuality)
                        let key = String(format: "%09d", i)
                        let meta = try JSONSerialization.data(withJSONObject: ["clean_caption": clean, "noise": kind], options: [.sortedKeys])
                        tar.add(name: key + ".jpg", bytes: jpg)
                        tar.add(name: key + ".txt", bytes: Array(caption.utf8))
                        tar.add(name: key + ".json", bytes: [UInt8](meta))
                        if o.writeJSON {
                            try Data(jpg).write(to: outDir.appendingPathComponent("images/\(key).jpg"))
                            entries.append((i, .init(image: "images/\(key).jpg", captions: [caption])))
                        }
                    }
                    let shardURL = outDir.appendingPathComponent(String(format: "shards/%05d.tar", s))
                    try tar.finished().write(to: shardURL, options: .atomic)
                    shared.with { sh in
                        for (k, v) in kinds { sh.noiseKinds[k, default: 0] += v }
                        for (i, e) in entries { sh.annotations[i] = e }
                    }
                } catch {
                    shared.with { $0.firstError = $0.firstError ?? error }
                }
            }
        }
        group.wait()
        let (noiseKinds, firstError, annotations) = shared.with { ($0.noiseKinds, $0.firstError, $0.annotations) }
        if let e = firstError { throw e }
        log("synth: wrote \(o.samples) samples in \(nShards) shards")
        if o.writeJSON {
            try AnnotationFile.write(annotations.compactMap { $0 }, to: outDir.appendingPathComponent("train.json"), listCaptions: false)
            // Retrieval.py's re_train_dataset: the same pairs with an image_id (the image's file name).
            let reTrain = annotations.compactMap { $0 }.map { e -> AnnotationFile.Entry in
                var r = e
                r.imageId = ((e.image as NSString).lastPathComponent as NSString).deletingPathExtension
                return r
            }
            try AnnotationFile.write(reTrain, to: outDir.appendingPathComponent("re_train.json"), listCaptions: false)
        }

        // Held-out split: distinct combinations (easy) or distinct captions (hard).
        var held: [AnnotationFile.Entry] = []
        var rng = RandomGenerator(seed: o.seed).split(2)
        var seen = Set<String>()
        if o.difficulty == .easy {
            let k = min(o.heldout, SceneSampler.combinations)
            if k < o.heldout { log("synth: --heldout \(o.heldout) > \(SceneSampler.combinations) combinations; using \(k)") }
            let combos = rng.permutation(SceneSampler.combinations).prefix(k)
            for (n, c) in combos.enumerated() {
                var r = rng.split(UInt64(n))
                let scene = SceneSampler.easy(combination: c, rng: &r)
                var caption = SceneSampler.caption(scene, hard: false, rng: &r)
                while seen.contains(caption) { caption = SceneSampler.caption(scene, hard: false, rng: &r) }
                seen.insert(caption)
                try writeHeldout(scene, caption, n, &r, outDir, &held)
            }
        } else {
            var n = 0, attempts = 0
            while n < o.heldout && attempts < o.heldout * 50 {
                attempts += 1
                var r = rng.split(UInt64(attempts))
                let scene = SceneSampler.hard(rng: &r)
                let caption = SceneSampler.caption(scene, hard: true, rng: &r)
                if seen.contains(caption) { continue }
                seen.insert(caption)
                try writeHeldout(scene, caption, n, &r, outDir, &held)
                n += 1
            }
        }
        try AnnotationFile.write(held, to: outDir.appendingPathComponent("heldout.json"), listCaptions: true)
        let index = try CorpusIndex.build(spec: outDir.appendingPathComponent("shards").path)
        try index.save(outDir.appendingPathComponent("index.json"))
        let summary = Summary(samples: o.samples, noisySamples: o.samples - (noiseKinds["clean"] ?? 0),
                              noiseKinds: noiseKinds, shards: nShards, heldout: held.count,
                              chanceRecallAt1: held.isEmpty ? 0 : 1 / Double(held.count),
                              difficulty: o.difficulty.rawValue, imageSize: o.imageSize, seed: o.seed, noise: o.noise)
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try enc.encode(summary).write(to: outDir.appendingPathComponent("synth.json"))
        log("synth: held-out \(held.count) images with unique captions (chance R@1 = 1/\(held.count)); index \(index.totalSamples) samples")
        return summary
    }

    func writeHeldout(_ scene: Scene, _ caption: String, _ n: Int, _ r: inout RandomGenerator, _ outDir: URL,
                      _ held: inout [AnnotationFile.Entry]) throws {
        let image = SceneRenderer.render(scene, size: options.imageSize, rng: &r)
        let name = String(format: "heldout/%05d.jpg", n)
        try Data(try JPEGEncoder.encode(image, quality: options.jpegQuality)).write(to: outDir.appendingPathComponent(name))
        held.append(.init(image: name, captions: [caption]))
    }
}
