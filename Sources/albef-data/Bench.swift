import ArgumentParser
import DataPipeline
import Foundation
import Tensor

/// Single-thread throughput of decode + RandomResizedCrop + flip + RandAugment (the image path of
/// one loader worker), over the JPEGs of a corpus held in memory.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Images/s per core of decode + RRC + flip + RandAugment.")
    @Option(help: "Corpus spec or index.json.") var corpus: String
    @Option(name: .customLong("image-size")) var imageSize = 256
    @Option(help: "Seconds to run.") var seconds = 5.0
    @Option(help: "Maximum samples loaded into memory.") var samples = 500
    @Option(help: "Instead: run the full DataLoader (read + decode + augment + tokenize + batch) with this vocab.txt.")
    var loaderVocab: String?
    @Option(name: .customLong("batch-size")) var batchSize = 16
    @Option(help: "Loader worker threads.") var workers = 2

    func run() throws {
        if let vocab = loaderVocab { return try runLoader(vocab) }
        let index = corpus.hasSuffix("index.json") ? try CorpusIndex.load(from: URL(fileURLWithPath: corpus)) : try CorpusIndex.build(spec: corpus)
        let reader = CorpusReader(index: index)
        var images: [[UInt8]] = []
        outer: for s in index.shards.indices {
            for i in 0..<index.shards[s].samples {
                if let r = try? reader.read(shard: s, index: i) { images.append(r.image) }
                if images.count >= samples { break outer }
            }
        }
        guard !images.isEmpty else { throw ValidationError("no readable samples in \(corpus)") }
        var t = ImageTransform(mode: .pretrain, imageSize: imageSize)
        var rng = RandomGenerator(seed: 1)
        // Warm-up.
        for img in images.prefix(20) { try t.transformToRGB(img, source: "bench", rng: &rng) }
        var n = 0
        let start = Date()
        while Date().timeIntervalSince(start) < seconds {
            for _ in 0..<10 {
                try t.transformToRGB(images[n % images.count], source: "bench", rng: &rng)
                n += 1
            }
        }
        let rate = Double(n) / Date().timeIntervalSince(start)
        print(String(format: "ours_img_s=%.1f", rate))
    }

    func runLoader(_ vocab: String) throws {
        let index = corpus.hasSuffix("index.json") ? try CorpusIndex.load(from: URL(fileURLWithPath: corpus)) : try CorpusIndex.build(spec: corpus)
        let tok = try BertTokenizer(vocabularyURL: URL(fileURLWithPath: vocab))
        var cfg = DataLoader.Configuration(batchSize: batchSize, imageSize: imageSize)
        cfg.workers = workers
        let start = Date()
        var images = 0, epoch = 0
        while Date().timeIntervalSince(start) < seconds {
            let loader = try DataLoader(index: index, tokenizer: tok, configuration: cfg, rank: 0, worldSize: 1, epoch: epoch)
            while Date().timeIntervalSince(start) < seconds, let b = try loader.next() { images += b.batchSize }
            loader.stop()
            epoch += 1
        }
        let dt = Date().timeIntervalSince(start)
        print(String(format: "loader_img_s=%.1f batches_s=%.2f workers=%d", Double(images) / dt, Double(images) / dt / Double(batchSize), workers))
    }
}
