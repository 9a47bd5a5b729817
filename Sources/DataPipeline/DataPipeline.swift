@_exported import Corpus
/// DataPipeline: ALBEF's data path on CPU.
///
/// - Text: `PreCaption.apply` (ALBEF `pre_caption`), `BertTokenizer` (basic + WordPiece,
///   `encodeBatch`: `[CLS]` + ≤ 24 pieces, no `[SEP]`, padding to the longest),
///   `TokenizerSelfCheck.run(fixtureDirectory:)`. MLM masking (spec §2.4, the reference's
///   `ALBEF.mask`) is the model's: `ALBEF.maskTokens(...)`.
/// - Images (`CImage` underneath): `ImageDecoder`, `JPEGEncoder`, `ImageTransform` (pretrain:
///   RandomResizedCrop → flip → RandAugment(2, 7) → CLIP normalization; eval: bicubic resize).
/// - Corpus: `CorpusSpec` (brace ranges, lists, directories), `TarFile` + `WebDatasetShard`,
///   `AnnotationFile` (ALBEF JSON), `CorpusIndex` (the index.json contract), `CorpusReader`.
/// - Loading: `DataLoader` (static rank sharding or coordinator leases via `SampleRangeSource`,
///   background threads, deterministic, resumable with `LoaderPosition`), `Batch`,
///   `RetrievalEvalSet` (held-out retrieval split).
/// - `SyntheticCorpus`: the built-in shapes corpus (`albef-data synth`).
///
/// Typical trainer use:
/// ```swift
/// let index = try CorpusIndex.load(from: URL(fileURLWithPath: "data/synth/index.json"))
/// let tokenizer = try BertTokenizer(vocabularyURL: vocabURL)
/// var cfg = DataLoader.Configuration(batchSize: 16, imageSize: 64)
/// cfg.seed = 42
/// let loader = try DataLoader(index: index, tokenizer: tokenizer, configuration: cfg,
///                             rank: rank, worldSize: world, epoch: epoch, resumeFrom: saved)
/// while let batch = try loader.next() {
///     // … train (ALBEF masks the ids itself); checkpoint `batch.position` to resume after this batch.
/// }
/// ```
/// A loader's worker threads run until the epoch (or range stream) ends; call `stop()` when
/// abandoning a loader early.
public enum DataPipelineOverview {}
