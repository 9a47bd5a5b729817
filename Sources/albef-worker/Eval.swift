import ALBEF
import ArgumentParser
import DataPipeline
import Foundation
import NN
import Tensor
import Training

/// `albef-worker eval`: zero-shot retrieval on a held-out split (ITC ranking + ITM re-ranking of
/// the top k) of a pretraining checkpoint; under `mpirun -n W` each rank re-ranks its slice of
/// the rows (as `Retrieval.py`), with the same recalls as one process.
struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Zero-shot image–text retrieval (R@1/5/10) of a checkpoint on a held-out split.")
    @OptionGroup var model: ModelOptions
    @Option(help: "Checkpoint directory (holds model.safetensors), or a training --output-dir (its latest checkpoint).") var checkpoint: String
    @Option(help: "Held-out annotation list [{\"image\": path, \"caption\": [str]}].") var heldout: String
    @Option(help: "Top-k candidates re-ranked by ITM (ALBEF: 128 Flickr / 256 COCO).") var k: Int = 16
    @Option(help: "Write the result as JSON here.") var json: String?
    @Option(help: "Score of re-ranked pairs: itm (ALBEF Retrieval.py) or itm+itc (LAVIS).") var score: String = "itm"
    @Option(help: "Images decoded and encoded at a time (batch_size_test).") var imageChunk: Int = 64

    func validate() throws {
        guard RetrievalEvaluator.Scoring(rawValue: score) != nil else { throw ValidationError("--score must be itm or itm+itc") }
        guard k >= 1 else { throw ValidationError("--k must be ≥ 1") }
        guard imageChunk >= 1 else { throw ValidationError("--image-chunk must be ≥ 1") }
    }

    func run() throws {
        let world = try WorldSetup()
        let comm = world.comm
        Threading.setThreads(model.threads)
        let cfg = try TrainConfig.load(model.config)
        var dir = URL(fileURLWithPath: checkpoint)
        if !FileManager.default.fileExists(atPath: dir.appendingPathComponent("model.safetensors").path), let l = Checkpointer.latest(checkpoint) { dir = l }
        let albef = ALBEFPretrain(cfg.model, seed: model.seed)
        try albef.load(from: SafeTensorsFile(path: dir.appendingPathComponent("model.safetensors").path), strict: true)
        let tokenizer = try BertTokenizer(vocabularyURL: vocabularyURL(cfg))
        // Rank-sliced under mpirun (every rank gets the summed matrices), images streamed in chunks.
        let e = try RetrievalSplitEvaluation.run(model: albef, annotation: heldout, imageRoot: nil, imageSize: cfg.model.imageRes,
                                                 tokenizer: tokenizer, k: k, imageChunk: imageChunk, comm: comm)
        let r = e.result(scoring: RetrievalEvaluator.Scoring(rawValue: score) ?? .itm)
        guard comm.rank == 0 else { return }
        print("eval: \(dir.path) on \(heldout): \(r.images) images, \(r.texts) captions, \(score) re-rank of top \(r.k), \(comm.size) rank(s) (\(String(format: "%.1f", e.seconds)) s)")
        print(String(format: "  text→image  R@1 %6.2f  R@5 %6.2f  R@10 %6.2f   (chance R@1 %.2f; ITC-only R@1 %.2f)", r.imgR1, r.imgR5, r.imgR10, r.chanceImgR1, r.itcImgR1))
        print(String(format: "  image→text  R@1 %6.2f  R@5 %6.2f  R@10 %6.2f   (chance R@1 %.2f; ITC-only R@1 %.2f)", r.txtR1, r.txtR5, r.txtR10, r.chanceTxtR1, r.itcTxtR1))
        print(String(format: "retrieval: img_r1=%.2f txt_r1=%.2f chance_r1=%.2f img_r1_vs_chance=%.1f", r.imgR1, r.txtR1, r.chanceImgR1, r.imgR1 / r.chanceImgR1))
        if let json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            try enc.encode(r).write(to: URL(fileURLWithPath: json))
        }
        fflush(stdout)
    }
}
