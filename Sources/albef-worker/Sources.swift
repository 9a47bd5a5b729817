import ALBEF
import DataPipeline
import Distributed
import Foundation
import Training

/// The vocabulary for a config: its `vocab` key, else `vocab.txt` beside the config, else configs/vocab.txt.
func vocabularyURL(_ cfg: TrainConfig) -> URL {
    if let v = cfg.vocab { return URL(fileURLWithPath: v) }
    let beside = URL(fileURLWithPath: cfg.path).deletingLastPathComponent().appendingPathComponent("vocab.txt")
    if FileManager.default.fileExists(atPath: beside.path) { return beside }
    return URL(fileURLWithPath: "configs/vocab.txt")
}

/// A corpus index from an index file or a corpus spec (shards, brace ranges, JSON lists).
func loadIndex(_ spec: String) throws -> CorpusIndex {
    if spec.hasSuffix(".json"), let d = FileManager.default.contents(atPath: spec),
       let o = try? JSONSerialization.jsonObject(with: d) as? [String: Any], o["shards"] != nil {
        return try CorpusIndex.load(from: URL(fileURLWithPath: spec))
    }
    return try CorpusIndex.build(spec: spec)
}

/// Builds this rank's corpus reader (static sharding by rank, or leases when `ranges` is given).
func makeCorpusSource(config: TrainConfig, corpus: String?, rank: Int, worldSize: Int, seed: UInt64, threads: Int,
                      outputDir: String, ranges: ((Int) -> SampleRangeSource)? = nil, iterationsPerEpoch: Int? = nil,
                      onBadSample: (@Sendable (BadSample, Int) -> Void)? = nil) throws -> LoaderSource {
    let spec = corpus ?? config.trainFiles.joined(separator: "::")
    guard !spec.isEmpty else { throw TrainingError.data("no corpus: pass --corpus (an index from `albef-data index`, shards or ALBEF JSON) or set train_file in \(config.path)") }
    let index = try loadIndex(spec)
    let tokenizer = try BertTokenizer(vocabularyURL: vocabularyURL(config))
    var c = DataLoader.Configuration(batchSize: config.batchSize, imageSize: config.model.imageRes)
    c.maxTextLength = config.maxLength
    c.seed = seed
    c.workers = max(1, threads)
    try FileManager.default.createDirectory(atPath: outputDir, withIntermediateDirectories: true)
    c.quarantineFile = URL(fileURLWithPath: outputDir).appendingPathComponent(String(format: "quarantine_rank%03d.jsonl", rank))
    c.dropLast = true
    c.onBadSample = onBadSample
    c.cropScale = config.cropScale
    c.flipProbability = config.flip ? 0.5 : 0
    c.useRandAugment = config.randAugment
    c.flipSwapsLeftRight = config.flipSwapsLeftRight
    return try LoaderSource(index: index, tokenizer: tokenizer, configuration: c, rank: rank, worldSize: worldSize, ranges: ranges,
                            iterationsPerEpoch: iterationsPerEpoch)
}

