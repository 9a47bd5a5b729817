import Foundation
import NN
import Distributed
import XCTest
@testable import Training

/// `train` starting from PyTorch weights (`vision_init`, `text_init`, `checkpoint`), with the
/// `pth-visible` fixture's files: a DeiT-layout ViT, a legacy-format BERT with its MLM head, and
/// an ALBEF micro checkpoint saved at 32 px (run here at 64 px: pos_embed re-interpolated).
final class PretrainedInitTests: XCTestCase {
    let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../../shared/fixtures/pth-visible").standardized

    /// Writes a config for the fixture's shapes (ViT 32 wide, 2 blocks of 2 heads, 16 px patches;
    /// BERT 32 wide, vocab 512) at `imageRes`, with `layers` BERT layers fused from `fusion`.
    func config(_ dir: URL, imageRes: Int, layers: Int, fusion: Int, extra: String) throws -> String {
        let bert = """
        {"architectures": ["BertForMaskedLM"], "attention_probs_dropout_prob": 0.0, "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
         "hidden_size": 32, "initializer_range": 0.02, "intermediate_size": 64, "layer_norm_eps": 1e-12, "max_position_embeddings": 512,
         "model_type": "bert", "num_attention_heads": 2, "num_hidden_layers": \(layers), "pad_token_id": 0, "type_vocab_size": 2,
         "vocab_size": 512, "fusion_layer": \(fusion), "encoder_width": 32}
        """
        try bert.write(to: dir.appendingPathComponent("bert.json"), atomically: true, encoding: .utf8)
        let yaml = """
        bert_config: 'bert.json'
        image_res: \(imageRes)
        vision_width: 32
        vit: {patch_size: 16, depth: 2, num_heads: 2, mlp_ratio: 4}
        embed_dim: 16
        batch_size: 4
        max_length: 10
        queue_size: 32
        optimizer: {opt: adamW, lr: 1e-4, weight_decay: 0.02}
        schedular: {sched: cosine, lr: 1e-4, epochs: 1, min_lr: 1e-5, decay_rate: 1, warmup_lr: 1e-5, warmup_epochs: 1, cooldown_epochs: 0}
        \(extra)
        """
        let p = dir.appendingPathComponent("train.yaml").path
        try yaml.write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }

    func train(_ cfg: String, _ dir: URL) throws -> String {
        let exe = productsDirectory().appendingPathComponent("albef-worker").path
        let (status, out) = try runCommand(exe, ["train", "--config", cfg, "--synthetic", "2", "--batch-size", "4", "--max-steps", "1",
                                                 "--output-dir", dir.appendingPathComponent("run").path, "--log-every", "1"], env: mpiEnvironment)
        XCTAssertEqual(status, 0, out)
        XCTAssertTrue(out.contains("step 1 |"), out)
        return out
    }

    func tempDir() throws -> URL {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("pthinit-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: d) }
        return d
    }

    func testVisionAndTextInitFromPyTorchFiles() throws {
        guard FileManager.default.fileExists(atPath: fixture.appendingPathComponent("fixture.json").path) else { throw XCTSkip("no \(fixture.path)") }
        let dir = try tempDir()
        // The BERT file has 2 layers: text layer 0, fusion layer 1 (its cross-attention stays random).
        let cfg = try config(dir, imageRes: 64, layers: 2, fusion: 1, extra: """
        vision_init: '\(fixture.path)/deit_tiny.pth'
        text_init: '\(fixture.path)/bert_legacy.bin'
        """)
        let out = try train(cfg, dir)
        XCTAssertTrue(out.contains("vision_init \(fixture.path)/deit_tiny.pth: visual_encoder 30 loaded, 2 unexpected [\"head.bias\", \"head.weight\"]"), out)
        XCTAssertTrue(out.contains("text_init \(fixture.path)/bert_legacy.bin: text_encoder.bert 38 loaded, 10 missing [\"encoder.layer.1.crossattention"), out)
        XCTAssertFalse(out.contains("unexpected [\"cls."), out)
        XCTAssertTrue(out.contains("text_init \(fixture.path)/bert_legacy.bin: text_encoder.cls 5 loaded"), out)

        // The weights really are the file's: a Trainer built from the same config holds them.
        let t = try Trainer(config: TrainConfig.load(cfg), comm: LocalWorld(size: 1).communicators()[0], seed: 3)
        let deit = try openWeightFile(fixture.appendingPathComponent("deit_tiny.pth").path)
        let bert = try openWeightFile(fixture.appendingPathComponent("bert_legacy.bin").path)
        let named = Dictionary(t.model.namedParameters().map { ($0.0, $0.1) }, uniquingKeysWith: { a, _ in a })
        XCTAssertEqual(named["visual_encoder.blocks.1.attn.qkv.weight"]!.scalars, try deit.floats("blocks.1.attn.qkv.weight"))
        XCTAssertEqual(named["visual_encoder_m.blocks.1.attn.qkv.weight"]!.scalars, try deit.floats("blocks.1.attn.qkv.weight"))
        XCTAssertEqual(named["text_encoder.bert.encoder.layer.0.attention.self.query.weight"]!.scalars, try bert.floats("bert.encoder.layer.0.attention.self.query.weight"))
        XCTAssertEqual(named["text_encoder.cls.predictions.transform.dense.weight"]!.scalars, try bert.floats("cls.predictions.transform.dense.weight"))
        XCTAssertEqual(named["text_encoder.cls.predictions.bias"]!.scalars, try bert.floats("cls.predictions.bias"))
        XCTAssertEqual(named["text_encoder_m.cls.predictions.bias"]!.scalars, try bert.floats("cls.predictions.bias"))
        XCTAssertEqual(t.model.visualEncoder.posEmbed.shape, [1, 17, 32], "pos_embed at the 64 px grid")
    }

    func testALBEFCheckpointAtAnotherImageResRunsAStep() throws {
        guard FileManager.default.fileExists(atPath: fixture.appendingPathComponent("fixture.json").path) else { throw XCTSkip("no \(fixture.path)") }
        let dir = try tempDir()
        let cfg = try config(dir, imageRes: 64, layers: 4, fusion: 2, extra: "checkpoint: '\(fixture.path)/albef_micro.pth'")
        let out = try train(cfg, dir)
        // 268 entries: 264 tensors, 4 of them tied aliases (MLM decoders = word embeddings / bias) filled once.
        XCTAssertTrue(out.contains("checkpoint \(fixture.path)/albef_micro.pth: 264 loaded\n"), out)
        XCTAssertFalse(out.contains("missing"), out)
        XCTAssertFalse(out.contains("unexpected"), out)
        let t = try Trainer(config: TrainConfig.load(cfg), comm: LocalWorld(size: 1).communicators()[0], seed: 3)
        let ck = try openWeightFile(fixture.appendingPathComponent("albef_micro.pth").path)
        XCTAssertEqual(t.model.imageQueue.scalars, try ck.floats("image_queue"), "queues come from the checkpoint")
        XCTAssertEqual(t.model.temp.scalars, try ck.floats("temp"))
        XCTAssertEqual(t.model.visualEncoder.posEmbed.shape, [1, 17, 32])
        XCTAssertEqual(Array(t.model.visualEncoder.posEmbed.scalars.prefix(32)), Array(try ck.floats("visual_encoder.pos_embed").prefix(32)), "CLS row kept")
    }
}
