import ALBEF
import ArgumentParser
import DataPipeline
import Foundation
import NN
import Tensor
import Training
import Yams

/// `albef-worker eval-retrieval`: `Retrieval.py --evaluate` on a `re_eval_dataset` split with the
/// retrieval model (`ALBEFRetrieval`): ITC ranking, ITM re-ranking of each row's top `k_test`
/// (the raw match logit, −100 elsewhere), `itm_eval`'s recalls printed as the reference's dict.
///
/// Weights: a retrieval checkpoint, or a pretraining one read as `Retrieval.py` reads it
/// (`bert.` dropped, `cls.*` ignored, `pos_embed` interpolated); our checkpoint directories,
/// `model.safetensors` or a reference `.pth`.
struct EvalRetrieval: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval-retrieval",
        abstract: "Image–text retrieval as Retrieval.py evaluates it (ITC top-k, ITM re-rank), on an ALBEF re_eval_dataset JSON.")
    @OptionGroup var model: ModelOptions
    @Option(help: "Checkpoint: directory (model.safetensors), .safetensors or .pth (retrieval or pretraining state dict).") var checkpoint: String
    @Option(help: "Eval annotation [{\"image\": path, \"caption\": [str]}] (default: the config's test_file).") var annotation: String?
    @Option(help: "Directory relative image paths are read from (default: the config's image_root, else the JSON's directory).") var imageRoot: String?
    @Option(help: "Candidates re-ranked by ITM per row (default: the config's k_test, else 128).") var kTest: Int?
    @Option(help: "Write the recalls (reference key names) as JSON here.") var json: String?

    func run() throws {
        Threading.setThreads(model.threads)
        let cfg = try TrainConfig.load(model.config)
        // Notes about keys pretraining ignores but this command reads are dropped.
        let read = ["test_file", "val_file", "image_root", "k_test", "batch_size_train", "batch_size_test", "distill", "warm_up"]
        for n in cfg.notes where !read.contains(where: { n.contains("note: \($0) is ignored") }) { print(n) }
        let extra = try retrievalKeys(model.config)
        let base = URL(fileURLWithPath: model.config).deletingLastPathComponent()
        func resolve(_ p: String) -> String { p.hasPrefix("/") || FileManager.default.fileExists(atPath: p) ? p : base.appendingPathComponent(p).path }
        guard let ann = annotation ?? (extra["test_file"] as? String).map(resolve) else {
            throw ValidationError("no eval annotation: pass --annotation or set test_file in \(model.config)")
        }
        let k = kTest ?? (extra["k_test"] as? Int) ?? 128
        guard k >= 1 else { throw ValidationError("--k-test must be ≥ 1") }
        let albef = ALBEFRetrieval(cfg.model, distill: extra["distill"] as? Bool ?? true, seed: model.seed)
        let report = try albef.loadPretrainedCheckpoint(checkpoint)
        let needed = report.missing.filter { !["idx_queue", "image_queue", "text_queue", "queue_ptr"].contains($0) }
        guard needed.isEmpty else {
            throw ValidationError("\(checkpoint) lacks \(needed.count) weights of the retrieval model (first: \(needed.prefix(3))); is --config the checkpoint's?")
        }
        if !report.unexpected.isEmpty { print("note: \(report.unexpected.count) checkpoint keys unused (first: \(report.unexpected.prefix(3)))") }

        // Relative image paths against image_root: the split is re-written with absolute paths.
        var annotationURL = URL(fileURLWithPath: ann)
        if let root = imageRoot ?? (extra["image_root"] as? String).map(resolve) {
            let file = try AnnotationFile(path: ann, imageRoot: root)
            let entries = file.entries.map { e -> AnnotationFile.Entry in
                var abs = e
                abs.image = file.imagePath(e)
                return abs
            }
            annotationURL = FileManager.default.temporaryDirectory.appendingPathComponent("eval-retrieval-\(getpid()).json")
            try AnnotationFile.write(entries, to: annotationURL, listCaptions: true)
        }
        defer { if annotationURL.path != ann { try? FileManager.default.removeItem(at: annotationURL) } }
        let tokenizer = try BertTokenizer(vocabularyURL: vocabularyURL(cfg))
        // The reference tokenizes eval captions with max_length 30 (pre_caption keeps 30 words).
        let set = try RetrievalEvalSet.load(annotation: annotationURL, imageSize: cfg.model.imageRes, tokenizer: tokenizer, maxTextLength: 30)
        let images = Tensor(set.images, shape: [set.imageCount, 3, set.imageSize, set.imageSize])
        let t0 = monotonicSeconds()
        let scores = RetrievalScoreMatrices.compute(model: albef, images: images, ids: set.texts.inputIds, mask: set.texts.attentionMask,
                                                    length: set.texts.length, k: k, imageChunk: extra["batch_size_test"] as? Int ?? 64)
        let r = RetrievalRecall(scoreI2T: scores.scoreI2T, scoreT2I: scores.scoreT2I, imageToTexts: set.imageToTexts, textToImage: set.textToImage)
        print("eval-retrieval: \(checkpoint) on \(ann): \(set.imageCount) images, \(set.textToImage.count) captions, ITM re-rank of top \(scores.k) (\(String(format: "%.1f", monotonicSeconds() - t0)) s)")
        print(String(format: "  image→text (txt)  R@1 %6.2f  R@5 %6.2f  R@10 %6.2f  mean %6.2f", r.txtR1, r.txtR5, r.txtR10, r.txtRMean))
        print(String(format: "  text→image (img)  R@1 %6.2f  R@5 %6.2f  R@10 %6.2f  mean %6.2f   r_mean %6.2f", r.imgR1, r.imgR5, r.imgR10, r.imgRMean, r.rMean))
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        let line = try enc.encode(r)
        print(String(decoding: line, as: UTF8.self))
        if let json { try line.write(to: URL(fileURLWithPath: json)) }
    }

    /// The `Retrieval_*.yaml` keys pretraining's config ignores (`test_file`, `image_root`, `k_test`, ...).
    func retrievalKeys(_ path: String) throws -> [String: Any] {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        return (try Yams.load(yaml: text) as? [String: Any]) ?? [:]
    }
}
