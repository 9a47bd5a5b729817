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
    var index = try loadIndex(spec)
    if config.task == .retrieval, let root = config.retrieval.imageRoot { index.imageRoot = root }
    let vocabURL = vocabularyURL(config)
    let tokenizer = try BertTokenizer(vocabularyURL: vocabURL)
    // Token ids index the word embeddings: the vocabulary must fit the model's vocab_size.
    let tokens = tokenizer.vocabulary.tokens.count
    guard tokens <= config.model.bert.vocabSize else {
        throw TrainingError.data("\(vocabURL.path) has \(tokens) tokens but the BERT config of \(config.path) says vocab_size \(config.model.bert.vocabSize): ids up to \(tokens - 1) would index past the word embeddings; set vocab_size ≥ \(tokens) or use the vocabulary the model was made for (config key vocab)")
    }
    var c = DataLoader.Configuration(batchSize: config.batchSize, imageSize: config.model.imageRes)
    c.maxTextLength = config.maxLength
    c.seed = seed
    c.workers = max(1, threads)
    try FileManager.default.createDirectory(atPath: outputDir, withIntermediateDirectories: true)
    c.quarantineFile = URL(fileURLWithPath: outputDir).appendingPathComponent(String(format: "quarantine_rank%03d.jsonl", rank))
    c.dropLast = true
    c.onBadSample = onBadSample
    c.maxImagePixels = config.maxImagePixels
    c.maxBadFraction = config.maxBadFraction
    c.cropScale = config.cropScale
    c.flipProbability = config.flip ? 0.5 : 0
    c.useRandAugment = config.randAugment
    c.flipSwapsLeftRight = config.flipSwapsLeftRight
    return try LoaderSource(index: index, tokenizer: tokenizer, configuration: c, rank: rank, worldSize: worldSize, ranges: ranges,
                            iterationsPerEpoch: iterationsPerEpoch, accumSteps: config.accumSteps,
                            imageIds: config.task == .retrieval)
}

