import ALBEF
import ArgumentParser
import DataPipeline
import Foundation
import NN
import Tensor
import Training

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
        let world = try WorldSetup()
        let comm = world.comm
        Threading.setThreads(model.threads)
        var cfg = try TrainConfig.load(model.config)
        cfg.adoptRetrievalTask()
        if comm.rank == 0 { cfg.notes.forEach { print($0) } }
        guard let ann = annotation ?? cfg.retrieval.testFile else {
            throw ValidationError("no eval annotation: pass --annotation or set test_file in \(model.config)")
        }
        let k = kTest ?? cfg.retrieval.kTest
        guard k >= 1 else { throw ValidationError("--k-test must be ≥ 1") }
        let albef = ALBEFRetrieval(cfg.model, distill: cfg.retrieval.distill, seed: model.seed)
        let report = try albef.loadPretrainedCheckpoint(checkpoint)
        let needed = report.missing.filter { !["idx_queue", "image_queue", "text_queue", "queue_ptr"].contains($0) }
        guard needed.isEmpty else {
            throw ValidationError("\(checkpoint) lacks \(needed.count) weights of the retrieval model (first: \(needed.prefix(3))); is --config the checkpoint's?")
        }
        if !report.unexpected.isEmpty, comm.rank == 0 { print("note: \(report.unexpected.count) checkpoint keys unused (first: \(report.unexpected.prefix(3)))") }
        let tokenizer = try BertTokenizer(vocabularyURL: vocabularyURL(cfg))
        // The reference tokenizes eval captions with max_length 30 (pre_caption keeps 30 words);
        // rank-sliced under mpirun, images streamed in chunks of batch_size_test.
        let e = try RetrievalSplitEvaluation.run(model: albef, annotation: ann, imageRoot: imageRoot ?? cfg.retrieval.imageRoot,
                                                 imageSize: cfg.model.imageRes, tokenizer: tokenizer, k: k,
                                                 imageChunk: cfg.retrieval.batchSizeTest, comm: comm)
        let r = e.recall
        guard comm.rank == 0 else { return }
        print("eval-retrieval: \(checkpoint) on \(ann): \(e.set.imageCount) images, \(e.set.textToImage.count) captions, ITM re-rank of top \(e.scores.k), \(comm.size) rank(s) (\(String(format: "%.1f", e.seconds)) s)")
        print(String(format: "  image→text (txt)  R@1 %6.2f  R@5 %6.2f  R@10 %6.2f  mean %6.2f", r.txtR1, r.txtR5, r.txtR10, r.txtRMean))
        print(String(format: "  text→image (img)  R@1 %6.2f  R@5 %6.2f  R@10 %6.2f  mean %6.2f   r_mean %6.2f", r.imgR1, r.imgR5, r.imgR10, r.imgRMean, r.rMean))
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        let line = try enc.encode(r)
        print(String(decoding: line, as: UTF8.self))
        if let json { try line.write(to: URL(fileURLWithPath: json)) }
        fflush(stdout)
    }
}
