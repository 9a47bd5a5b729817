import ALBEF
import ArgumentParser
import DataPipeline
import Foundation
import NN
import Tensor
import Training
import Yams

/// `albef-worker finetune-retrieval`: `Retrieval.py`'s training on a `re_train_dataset` JSON
/// (`[{"image", "caption", "image_id"}]`, images under `image_root`), one process.
///
/// Per epoch: the samples shuffled (seed + epoch), full batches of `batch_size_train` (the last
/// partial one dropped, as the reference's loader); images through the fine-tuning transform
/// (RandomResizedCrop scale (0.5, 1), flip, RandAugment); captions `pre_caption`'d and tokenized
/// (padding to the longest, at most 30 tokens); `image_id`s numbered in order of first appearance
/// (`re_train_dataset`'s `img_ids`); α ramped over epoch 0 when `warm_up`; the learning rate of
/// the config's `schedular` (Retrieval_*.yaml: constant in epoch 0, per-epoch cosine after);
/// `ALBEFRetrieval.forwardStep`, backward, enqueue, AdamW. After each epoch the weights go to
/// `OUTPUT/epoch_EE/model.safetensors` and, with `val_file`/`test_file`, the recalls (as
/// `eval-retrieval`) to `OUTPUT/log.txt` (one JSON object per epoch).
///
/// Not yet: several ranks (the queue gather and gradient allreduce of `train`), resuming, the
/// best-checkpoint selection by val r_mean.
struct FinetuneRetrieval: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "finetune-retrieval",
        abstract: "Retrieval fine-tuning as Retrieval.py (ITC with image-id positives, ITM), one process, on a re_train_dataset JSON.")
    @OptionGroup var model: ModelOptions
    @Option(help: "Starting weights: a pretraining (or retrieval) checkpoint, read as Retrieval.py reads it.") var checkpoint: String?
    @Option(help: "Where epoch_EE/model.safetensors and log.txt go.") var outputDir: String = "runs/retrieval"
    @Option(help: "Override the config's schedular.epochs.") var epochs: Int?
    @Option(help: "Stop after this many steps (smoke tests).") var maxSteps: Int?
    @Option(help: "Log every N steps.") var logEvery: Int = 10

    func run() throws {
        Threading.setThreads(model.threads)
        let cfg = try TrainConfig.load(model.config)
        // Notes about keys pretraining ignores but this command reads are dropped.
        let read = ["test_file", "val_file", "image_root", "k_test", "batch_size_train", "batch_size_test", "distill", "warm_up"]
        for n in cfg.notes where !read.contains(where: { n.contains("note: \($0) is ignored") }) { print(n) }
        let yaml = (try Yams.load(yaml: String(contentsOfFile: model.config, encoding: .utf8)) as? [String: Any]) ?? [:]
        let base = URL(fileURLWithPath: model.config).deletingLastPathComponent()
        func resolve(_ p: String) -> String { p.hasPrefix("/") || FileManager.default.fileExists(atPath: p) ? p : base.appendingPathComponent(p).path }
        let trainFiles = ((yaml["train_file"] as? [String]) ?? (yaml["train_file"] as? String).map { [$0] } ?? []).map(resolve)
        guard !trainFiles.isEmpty else { throw ValidationError("\(model.config): no train_file") }
        let imageRoot = (yaml["image_root"] as? String).map(resolve)
        let batchSize = yaml["batch_size_train"] as? Int ?? cfg.batchSize
        let epochCount = epochs ?? cfg.epochs
        let warmUp = yaml["warm_up"] as? Bool ?? true
        let k = yaml["k_test"] as? Int ?? 128
        guard batchSize >= 2, cfg.model.queueSize % batchSize == 0 else {
            throw ValidationError("batch_size_train \(batchSize) must be ≥ 2 and divide queue_size \(cfg.model.queueSize)")
        }

        // re_train_dataset: one sample per (image, caption); ids by first appearance.
        var samples: [(image: String, caption: String, id: Int64)] = []
        var ids: [String: Int64] = [:]
        for f in trainFiles {
            guard let data = FileManager.default.contents(atPath: f),
                  let list = try JSONSerialization.jsonObject(with: data) as? [[String: Any]] else {
                throw ValidationError("\(f): not a JSON list of {image, caption, image_id}")
            }
            let root = imageRoot ?? (f as NSString).deletingLastPathComponent
            for (i, e) in list.enumerated() {
                guard let img = e["image"] as? String, let cap = e["caption"] as? String, let raw = e["image_id"] else {
                    throw ValidationError("\(f): entry \(i) needs string image, string caption and image_id")
                }
                let key = "\(raw)"
                let id = ids[key] ?? Int64(ids.count)
                ids[key] = id
                samples.append((img.hasPrefix("/") ? img : root + "/" + img, cap, id))
            }
        }
        let steps = samples.count / batchSize
        guard steps > 0 else { throw ValidationError("\(samples.count) samples make no full batch of \(batchSize)") }
        print("finetune-retrieval: \(samples.count) pairs of \(ids.count) images, \(steps) steps/epoch × \(epochCount) epochs, batch \(batchSize)")

        let albef = ALBEFRetrieval(cfg.model, distill: yaml["distill"] as? Bool ?? true, seed: model.seed)
        if let checkpoint {
            let r = try albef.loadPretrainedCheckpoint(checkpoint)
            print("checkpoint \(checkpoint): \(r.summary)")
        }
        albef.pack()
        let adam = AdamW(albef.online!, lr: Float(cfg.lr), weightDecay: Float(cfg.weightDecay))
        let tokenizer = try BertTokenizer(vocabularyURL: vocabularyURL(cfg))
        var transform = ImageTransform(mode: .pretrain, imageSize: cfg.model.imageRes)
        transform.scale = (0.5, 1.0)
        try FileManager.default.createDirectory(atPath: outputDir, withIntermediateDirectories: true)
        var rng = RandomGenerator(seed: model.seed).split(0x5E7)
        var imageRNG = RandomGenerator(seed: model.seed).split(0x1A6)
        var global = 0
        let per = 3 * cfg.model.imageRes * cfg.model.imageRes
        for epoch in 0..<epochCount {
            var order = Array(samples.indices)
            var shuffle = RandomGenerator(seed: model.seed &+ UInt64(epoch))
            shuffle.shuffle(&order)
            let lr = cfg.schedule.lr(epoch: epoch, iteration: 0, globalStep: global)
            var sums = (ita: 0.0, itm: 0.0, n: 0)
            for it in 0..<steps {
                if let m = maxSteps, global >= m { break }
                let rows = order[(it * batchSize)..<((it + 1) * batchSize)].map { samples[$0] }
                var pixels = [Float](repeating: 0, count: batchSize * per)
                for (b, s) in rows.enumerated() {
                    guard let bytes = FileManager.default.contents(atPath: s.image) else { throw ValidationError("\(s.image): no such file") }
                    try pixels.withUnsafeMutableBufferPointer { buf in
                        try transform.run([UInt8](bytes), source: s.image, rng: &imageRNG,
                                          into: UnsafeMutableBufferPointer(rebasing: buf[(b * per)..<((b + 1) * per)]))
                    }
                }
                let text = tokenizer.encodeBatch(rows.map { PreCaption.apply($0.caption, maxWords: 30) }, maxLength: 30)
                let batch = RetrievalBatch(images: Tensor(pixels, shape: [batchSize, 3, cfg.model.imageRes, cfg.model.imageRes]),
                                           inputIds: text.inputIds, attentionMask: text.attentionMask, imageIds: rows.map(\.id),
                                           batchSize: batchSize, length: text.length)
                let alpha = warmUp ? Double(alphaRamp(alpha: cfg.model.alpha, epoch: epoch, iteration: it, iterationsPerEpoch: steps)) : Double(cfg.model.alpha)
                adam.lr = Float(cfg.schedule.lr(epoch: epoch, iteration: it, globalStep: global))
                albef.online!.zeroGradients()
                let out = albef.forwardStep(batch, alpha: alpha, rng: &rng)
                out.total.backward()
                albef.commitEnqueue()
                adam.update()
                global += 1
                sums.ita += Double(out.lossITA.item); sums.itm += Double(out.lossITM.item); sums.n += 1
                if global % max(logEvery, 1) == 0 || it == steps - 1 {
                    print(String(format: "epoch %d step %d/%d | loss_ita %.4f | loss_itm %.4f | lr %.3e | alpha %.3f",
                                 epoch, it + 1, steps, out.lossITA.item, out.lossITM.item, Double(adam.lr), alpha))
                }
            }
            let dir = URL(fileURLWithPath: outputDir).appendingPathComponent(String(format: "epoch_%02d", epoch))
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            try albef.save(to: dir.appendingPathComponent("model.safetensors").path)
            var log: [String: Any] = ["epoch": epoch, "train_lr": lr, "train_loss_ita": sums.ita / Double(max(sums.n, 1)),
                                      "train_loss_itm": sums.itm / Double(max(sums.n, 1))]
            for (prefix, key) in [("val", "val_file"), ("test", "test_file")] {
                guard let file = (yaml[key] as? String).map(resolve) else { continue }
                let r = try evaluate(albef, annotation: file, imageRoot: imageRoot, cfg: cfg, tokenizer: tokenizer, k: k)
                for (name, v) in r.byName { log["\(prefix)_\(name)"] = v }
                print(String(format: "epoch %d %@: txt_r1 %.2f img_r1 %.2f r_mean %.2f", epoch, prefix, r.txtR1, r.imgR1, r.rMean))
            }
            let line = try JSONSerialization.data(withJSONObject: log, options: [.sortedKeys])
            let logURL = URL(fileURLWithPath: outputDir).appendingPathComponent("log.txt")
            if !FileManager.default.fileExists(atPath: logURL.path) { FileManager.default.createFile(atPath: logURL.path, contents: nil) }
            let h = try FileHandle(forWritingTo: logURL)
            h.seekToEndOfFile()
            h.write(line + Data("\n".utf8))
            try h.close()
            print("epoch \(epoch): weights \(dir.path)/model.safetensors")
            if let m = maxSteps, global >= m { break }
        }
    }

    /// `Retrieval.py`'s `evaluation` + `itm_eval` on a `re_eval_dataset` file.
    func evaluate(_ albef: ALBEFRetrieval, annotation: String, imageRoot: String?, cfg: TrainConfig, tokenizer: BertTokenizer, k: Int) throws -> RetrievalRecall {
        var url = URL(fileURLWithPath: annotation)
        if let imageRoot {
            let file = try AnnotationFile(path: annotation, imageRoot: imageRoot)
            let entries = file.entries.map { e -> AnnotationFile.Entry in
                var abs = e
                abs.image = file.imagePath(e)
                return abs
            }
            url = FileManager.default.temporaryDirectory.appendingPathComponent("finetune-eval-\(getpid()).json")
            try AnnotationFile.write(entries, to: url, listCaptions: true)
        }
        defer { if url.path != annotation { try? FileManager.default.removeItem(at: url) } }
        let set = try RetrievalEvalSet.load(annotation: url, imageSize: cfg.model.imageRes, tokenizer: tokenizer, maxTextLength: 30)
        let s = RetrievalScoreMatrices.compute(model: albef, images: Tensor(set.images, shape: [set.imageCount, 3, set.imageSize, set.imageSize]),
                                               ids: set.texts.inputIds, mask: set.texts.attentionMask, length: set.texts.length, k: k)
        return RetrievalRecall(scoreI2T: s.scoreI2T, scoreT2I: s.scoreT2I, imageToTexts: set.imageToTexts, textToImage: set.textToImage)
    }
}
