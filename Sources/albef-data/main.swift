import ArgumentParser
import DataPipeline
import Foundation

/// `albef-data`: corpus tools (synthetic corpus, index, inspection, bench).
struct AlbefData: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "albef-data",
        abstract: "ALBEF data pipeline tools: synthetic corpus, corpus index, bench.",
        subcommands: [Synth.self, Index.self, Bench.self, Inspect.self, SelfCheck.self])
}

struct Synth: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Render the synthetic shapes corpus (WebDataset shards + ALBEF JSON + held-out split + index).")
    @Option(help: "Output directory.") var out: String
    @Option(help: "Number of training samples.") var samples = 20_000
    @Option(help: "Fraction of captions made web-noisy.") var noise = 0.2
    @Option(help: "Seed.") var seed: UInt64 = 0
    @Option(help: "easy (1 big object, 8 colours × 6 shapes × 5 positions) or hard (1–3 objects, clutter, sizes).")
    var difficulty = "easy"
    @Option(help: "Held-out images (unique captions; easy mode ≤ 240).") var heldout = 100
    @Option(name: .customLong("shard-size"), help: "Samples per shard.") var shardSize = 1000
    @Option(name: .customLong("image-size"), help: "Image side in pixels.") var imageSize = 64
    @Flag(name: .customLong("no-json"), help: "Do not write train.json, re_train.json + images/ (shards only).") var noJSON = false
    @Option(help: "Threads.") var threads = 2

    func validate() throws {
        guard SynthDifficulty(rawValue: difficulty) != nil else { throw ValidationError("--difficulty must be easy or hard") }
        guard samples > 0, shardSize > 0, imageSize >= 8, (0...1).contains(noise) else {
            throw ValidationError("need --samples > 0, --shard-size > 0, --image-size ≥ 8, 0 ≤ --noise ≤ 1")
        }
    }

    func run() throws {
        var o = SyntheticCorpus.Options()
        o.samples = samples; o.noise = noise; o.seed = seed; o.difficulty = SynthDifficulty(rawValue: difficulty)!
        o.heldout = heldout; o.shardSize = shardSize; o.imageSize = imageSize; o.writeJSON = !noJSON; o.threads = threads
        let start = Date()
        let s = try SyntheticCorpus(options: o).write(to: URL(fileURLWithPath: out)) { print($0) }
        print(String(format: "synth: done in %.1f s: %d samples (%d noisy), %d shards, %d held-out (chance R@1 %.4f) → %@",
                     Date().timeIntervalSince(start), s.samples, s.noisySamples, s.shards, s.heldout, s.chanceRecallAt1, out))
    }
}

struct Index: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Scan a corpus and write its index JSON (the loader/coordinator contract).")
    @Option(help: "Corpus spec: data/{00000..00127}.tar, a directory, a :: list, @list.txt or ann.json files.") var corpus: String
    @Option(help: "Output index file.") var out: String
    @Option(help: "Root directory for relative shard paths (default: the first file's directory).") var root: String?
    @Option(name: .customLong("entries-per-shard"), help: "JSON annotation entries per virtual shard.") var entriesPerShard = 1000

    func run() throws {
        let index = try CorpusIndex.build(spec: corpus, root: root, entriesPerShard: entriesPerShard)
        try index.save(URL(fileURLWithPath: out))
        print("index: \(index.format.rawValue), \(index.shards.count) shards, \(index.totalSamples) samples, \(index.badSamples) bad → \(out)")
        for s in index.shards where !s.bad.isEmpty {
            for b in s.bad.prefix(5) { print("  bad \(s.path):\(b.key) \(b.kind)") }
        }
    }
}

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the first batch of a corpus as the loader makes it.")
    @Option(help: "Corpus spec or index.json.") var corpus: String
    @Option(help: "Vocabulary file (vocab.txt).") var vocab: String
    @Option(name: .customLong("batch-size")) var batchSize = 4
    @Option(name: .customLong("image-size")) var imageSize = 64

    func run() throws {
        let index = corpus.hasSuffix("index.json") ? try CorpusIndex.load(from: URL(fileURLWithPath: corpus)) : try CorpusIndex.build(spec: corpus)
        var cfg = DataLoader.Configuration(batchSize: batchSize, imageSize: imageSize)
        cfg.workers = 1
        let loader = try DataLoader(index: index, tokenizer: BertTokenizer(vocabularyURL: URL(fileURLWithPath: vocab)),
                                    configuration: cfg, rank: 0, worldSize: 1, epoch: 0)
        guard let b = try loader.next() else { print("no batch"); return }
        for i in 0..<b.batchSize {
            print("\(b.keys[i]) \"\(b.captions[i])\" ids \(b.inputIds[(i * b.textLength)..<((i + 1) * b.textLength)].map { $0 })")
        }
        print("images \(b.batchSize)x3x\(b.imageSize)x\(b.imageSize), text \(b.batchSize)x\(b.textLength), position \(b.position)")
    }
}

struct SelfCheck: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "selfcheck", abstract: "Compare pre_caption + tokenizer with a reference fixture directory (fixture.json + vocab.txt).")
    @Argument(help: "Fixture directory of kind \"tokenizer\".") var directory: String

    func run() throws {
        let (report, passed) = try TokenizerSelfCheck.run(fixtureDirectory: URL(fileURLWithPath: directory))
        report.forEach { print($0) }
        if !passed { throw ExitCode.failure }
    }
}

AlbefData.main()
