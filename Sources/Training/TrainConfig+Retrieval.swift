import ALBEF
import Foundation

/// Which ALBEF objective a run trains: pretraining (`Pretrain.py`, `ALBEFPretrain`) or
/// retrieval fine-tuning (`Retrieval.py`, `ALBEFRetrieval`).
public enum TrainingTask: String, Sendable, Codable { case pretrain, retrieval }

/// `Retrieval.yaml`'s own keys (top level), read by retrieval fine-tuning and evaluation:
/// `batch_size_train`, `batch_size_test`, `k_test`, `distill`, `warm_up`, `val_file`,
/// `test_file`, `image_root` (paths: absolute, or existing from the working directory as the
/// reference reads them, else relative to the YAML file).
public struct RetrievalSettings: Sendable {
    public var batchSizeTrain: Int?
    public var batchSizeTest = 64
    public var kTest = 128
    /// Momentum-distilled ITC targets (`distill`, default true).
    public var distill = true
    /// α ramped over epoch 0 (`warm_up`, default true); false: α from the first step.
    public var warmUp = true
    public var valFile: String?
    public var testFile: String?
    /// The directory `image` paths of `train_file`/`val_file`/`test_file` are relative to.
    public var imageRoot: String?
    public init() {}
}

extension TrainConfig {
    /// Reads the retrieval keys of `y` (top level).
    /// A path of `Retrieval.yaml`: as it is when absolute or when it exists from the working
    /// directory (the reference's convention), else relative to the YAML file's directory.
    static func resolveRetrievalPath(_ p: String, dir: URL) -> String {
        p.hasPrefix("/") || FileManager.default.fileExists(atPath: p) ? p : dir.appendingPathComponent(p).path
    }

    static func readRetrieval(_ r: YAMLReader, dir: URL) throws -> RetrievalSettings {
        func resolve(_ p: String) -> String { resolveRetrievalPath(p, dir: dir) }
        var s = RetrievalSettings()
        s.batchSizeTrain = try r.opt("batch_size_train")
        s.batchSizeTest = try r.opt("batch_size_test") ?? s.batchSizeTest
        s.kTest = try r.opt("k_test") ?? s.kTest
        s.distill = try r.opt("distill") ?? s.distill
        s.warmUp = try r.opt("warm_up") ?? s.warmUp
        s.valFile = (try r.opt("val_file") as String?).map(resolve)
        s.testFile = (try r.opt("test_file") as String?).map(resolve)
        s.imageRoot = (try r.opt("image_root") as String?).map(resolve)
        guard s.kTest >= 1 else { throw ConfigError.invalid(key: "k_test", message: "must be ≥ 1, got \(s.kTest)", file: r.file) }
        guard s.batchSizeTest >= 1 else { throw ConfigError.invalid(key: "batch_size_test", message: "must be ≥ 1, got \(s.batchSizeTest)", file: r.file) }
        return s
    }

    /// Switches the config to retrieval fine-tuning as `Retrieval.py` reads `Retrieval.yaml`:
    /// `train_file` paths resolved as the retrieval paths, the per-rank batch is
    /// `batch_size_train` (when set), captions `pre_caption`'d to 30 words
    /// and tokenized to at most 30 tokens (unless `max_length` is set), the train transform's
    /// RandomResizedCrop scale (0.5, 1) (unless `augment` is set), and `warm_up: false` turns the
    /// α ramp off. The notes about the retrieval keys pretraining ignores are dropped.
    public mutating func adoptRetrievalTask() {
        task = .retrieval
        let dir = URL(fileURLWithPath: path).deletingLastPathComponent()
        trainFiles = trainFiles.map { TrainConfig.resolveRetrievalPath($0, dir: dir) }
        if let b = retrieval.batchSizeTrain { batchSize = b }
        if !explicitMaxLength { maxLength = 30 }
        if !explicitAugment { cropScale = (0.5, 1.0) }
        let read = ["test_file", "val_file", "image_root", "k_test", "batch_size_train", "batch_size_test", "distill", "warm_up"]
        notes.removeAll { n in read.contains { n.contains("note: \($0) is ignored") } }
    }
}
