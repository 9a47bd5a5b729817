import ALBEF
import DataPipeline
import Foundation
import NN
import Tensor
import Training
import XCTest

/// Mistakes people make, each a clear error naming the file or key and the fix, with a normal
/// exit status (never a signal) and nothing written to the output directory; the parsers we own
/// fuzzed with generated inputs: a thrown error every time, never a crash or a hang.
final class InputHardeningTests: XCTestCase {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardized

    func tempDir() throws -> URL {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("harden-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        return d
    }

    /// A micro config (its BERT keys `bert`) with `extra` lines appended (keys the base lacks).
    func config(_ dir: URL, bert: String = "vocab_size: 30522, max_position_embeddings: 512", _ extra: String = "") throws -> URL {
        let url = dir.appendingPathComponent("c.yaml")
        try """
        bert: {hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64, \(bert),
               hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0, fusion_layer: 1, encoder_width: 32}
        vocab: '\(root.path)/configs/vocab.txt'
        image_res: 32
        vision_width: 32
        vit: {patch_size: 16, depth: 1, num_heads: 2, mlp_ratio: 4}
        embed_dim: 16
        batch_size: 4
        optimizer: {opt: adamW, lr: 1e-4, weight_decay: 0.02}
        schedular: {sched: constant, epochs: 1}
        \(extra)
        """.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    /// Runs the worker; returns (exited normally, status, output).
    func worker(_ args: [String]) throws -> (normal: Bool, status: Int32, out: String) {
        let p = Process()
        p.executableURL = productsDirectory().appendingPathComponent("albef-worker")
        p.arguments = args
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("w-\(UUID().uuidString)")
        FileManager.default.createFile(atPath: out.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: out) }
        let h = try FileHandle(forWritingTo: out)
        p.standardOutput = h
        p.standardError = h
        p.standardInput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        try? h.close()
        return (p.terminationReason == .exit, p.terminationStatus, (try? String(contentsOf: out, encoding: .utf8)) ?? "")
    }

    func assertRefused(_ args: [String], mentions: [String], output: URL, file: StaticString = #filePath, line: UInt = #line) throws {
        let before = (try? FileManager.default.contentsOfDirectory(atPath: output.path)) ?? []
        let r = try worker(args)
        XCTAssertTrue(r.normal, "ended by a signal (\(r.status)): \(r.out)", file: file, line: line)
        XCTAssertNotEqual(r.status, 0, r.out, file: file, line: line)
        for m in mentions { XCTAssertTrue(r.out.contains(m), "the error names \(m): \(r.out)", file: file, line: line) }
        XCTAssertEqual((try? FileManager.default.contentsOfDirectory(atPath: output.path)) ?? [], before, "nothing written to \(output.path)", file: file, line: line)
    }

    // MARK: - The table of the issue, one row each

    func testTypoInAConfigKeyIsAnErrorWithTheNearestKey() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let cfg = try config(dir, "queue_sise: 128")
        XCTAssertThrowsError(try TrainConfig.load(cfg.path)) { e in
            XCTAssertTrue("\(e)".contains("queue_sise") && "\(e)".contains("did you mean 'queue_size'") && "\(e)".contains(cfg.path), "\(e)")
        }
        let out = dir.appendingPathComponent("run")
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        try assertRefused(["train", "--config", cfg.path, "--synthetic", "2", "--output-dir", out.path], mentions: ["queue_sise", "queue_size"], output: out)
        // In a section too.
        let cfg2 = try config(dir, "augment: {flipp: true}")
        XCTAssertThrowsError(try TrainConfig.load(cfg2.path)) { XCTAssertTrue("\($0)".contains("augment.flip"), "\($0)") }
    }

    func testMaxLengthBeyondThePositionEmbeddingsIsAnError() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let cfg = try config(dir, "max_length: 700")
        XCTAssertThrowsError(try TrainConfig.load(cfg.path)) { e in
            XCTAssertTrue("\(e)".contains("max_length") && "\(e)".contains("max_position_embeddings 512"), "\(e)")
        }
    }

    func testBatchSizeZeroIsAnErrorNotASignal() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let cfg = try config(dir)
        let out = dir.appendingPathComponent("run")
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        try assertRefused(["train", "--config", cfg.path, "--synthetic", "2", "--batch-size", "0", "--output-dir", out.path],
                          mentions: ["--batch-size", "≥ 2"], output: out)
    }

    func testVocabularyLargerThanTheModelIsAnErrorNotASegfault() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (s, o) = try runCommand(productsDirectory().appendingPathComponent("albef-data").path,
                                    ["synth", "--out", dir.path + "/corpus", "--samples", "20", "--heldout", "2", "--image-size", "32"])
        XCTAssertEqual(s, 0, o)
        let cfg = try config(dir, bert: "vocab_size: 1000, max_position_embeddings: 512")
        let out = dir.appendingPathComponent("run")
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        try assertRefused(["train", "--config", cfg.path, "--corpus", dir.path + "/corpus/index.json", "--output-dir", out.path, "--max-steps", "1"],
                          mentions: ["vocab.txt", "30522 tokens", "vocab_size 1000"], output: out)
    }

    /// A valid 20000×20000 PNG of about 400 KB: refused from its header, before any pixel memory
    /// (1.2 GB as RGB) is allocated; in a shard it is skipped, counted and quarantined.
    func testDecompressionBombIsSkippedFromItsHeader() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let png = dir.appendingPathComponent("bomb.png")
        let script = """
        import struct, sys, zlib
        def chunk(t, d): return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
        w = h = 20000
        c = zlib.compressobj(9); row = b'\\0' * (w + 1); idat = b''.join(c.compress(row) for _ in range(h)) + c.flush()
        sys.stdout.buffer.write(b'\\x89PNG\\r\\n\\x1a\\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 0, 0, 0, 0)) + chunk(b'IDAT', idat) + chunk(b'IEND', b''))
        """
        let (s, _) = try runCommand("/bin/sh", ["-c", "python3 -c \"$0\" > '\(png.path)'", script])
        XCTAssertEqual(s, 0)
        let bytes = [UInt8](try Data(contentsOf: png))
        XCTAssertLessThan(bytes.count, 2_000_000, "a small file")
        XCTAssertEqual(try ImageDecoder.size(of: bytes, source: "bomb").width, 20000)
        XCTAssertThrowsError(try ImageDecoder.decode(bytes, source: "bomb.png")) { e in
            XCTAssertEqual((e as? ImageError)?.kind, .tooLarge, "\(e)")
            XCTAssertTrue("\(e)".contains("max_image_pixels"), "\(e)")
        }
        // In a shard, beside a good sample: skipped as image_too_large, the good one kept.
        let (s2, o2) = try runCommand(productsDirectory().appendingPathComponent("albef-data").path,
                                      ["synth", "--out", dir.path + "/corpus", "--samples", "8", "--heldout", "2", "--image-size", "32", "--shard-size", "100"])
        XCTAssertEqual(s2, 0, o2)
        var index = try CorpusIndex.load(from: dir.appendingPathComponent("corpus/index.json"))
        let tarPath = index.filePath(0)
        let inject = """
        import sys, tarfile, io
        tar, png = sys.argv[1], sys.argv[2]
        with tarfile.open(tar) as t: members = [(m, t.extractfile(m).read() if m.isfile() else None) for m in t.getmembers()]
        first = sorted({m.name.split('.')[0] for m, _ in members})[0]
        with tarfile.open(tar, 'w', format=tarfile.USTAR_FORMAT) as t:
            for m, d in members:
                if m.name.startswith(first + '.') and m.name.endswith(('.jpg', '.png')):
                    d = open(png, 'rb').read(); m = tarfile.TarInfo(first + '.png')
                m.size = len(d); t.addfile(m, io.BytesIO(d))
        """
        let (s3, o3) = try runCommand("/usr/bin/env", ["python3", "-c", inject, tarPath, png.path])
        XCTAssertEqual(s3, 0, o3)
        index = try CorpusIndex.build(spec: tarPath)
        let tok = try BertTokenizer(vocabularyURL: root.appendingPathComponent("configs/vocab.txt"))
        var c = DataLoader.Configuration(batchSize: 1, imageSize: 32)
        c.maxBadFraction = 1
        let quarantine = dir.appendingPathComponent("q.jsonl")
        c.quarantineFile = quarantine
        let loader = try DataLoader(index: index, tokenizer: tok, configuration: c,
                                    ranges: FixedRangeSource([SampleRange(epoch: 0, shard: 0, start: 0, end: index.shards[0].samples)]))
        var n = 0
        while try loader.next() != nil { n += 1 }
        XCTAssertEqual(n, index.shards[0].samples - 1, "every sample but the bomb")
        XCTAssertEqual(loader.statistics.badByKind[.imageTooLarge], 1)
        let q = try String(contentsOf: quarantine, encoding: .utf8)
        XCTAssertTrue(q.contains("image_too_large"), q)
    }

    // MARK: - More boundaries

    /// The shipped binaries keep their checks: no target of the manifest is built unchecked.
    func testReleaseBuildKeepsSafetyChecks() throws {
        let manifest = try String(contentsOf: root.appendingPathComponent("Package.swift"), encoding: .utf8)
        XCTAssertNil(manifest.range(of: #"unsafeFlags\([^)]*-Ounchecked"#, options: .regularExpression), "a target is built with -Ounchecked")
        XCTAssertNil(manifest.range(of: #"unsafeFlags\([^)]*-remove-runtime-asserts"#, options: .regularExpression))
    }

    func testValueRangesAndTheQueueAreChecked() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        for (extra, key) in [("mlm_probability: 1.5", "mlm_probability"), ("momentum: -0.1", "momentum"), ("temp: 0", "temp"),
                             ("alpha: 2", "alpha"), ("queue_size: 30", "queue_size"), ("max_bad_fraction: 2", "max_bad_fraction"),
                             ("max_image_pixels: 0", "max_image_pixels"), ("queue_size: 0", "queue_size")] {
            let cfg = try config(dir, extra)
            XCTAssertThrowsError(try TrainConfig.load(cfg.path), extra) { XCTAssertTrue("\($0)".contains(key) && "\($0)".contains(cfg.path), "\($0)") }
        }
        // The queue takes one global batch per step: 64 with batch 4 works for 1, 2, 4, 8, 16 ranks, not 3.
        let cfg = try TrainConfig.load(try config(dir, "queue_size: 64").path)
        XCTAssertNoThrow(try cfg.validate(worldSize: 2))
        XCTAssertThrowsError(try cfg.validate(worldSize: 3)) { XCTAssertTrue("\($0)".contains("world sizes that work: 1, 2, 4, 8, 16"), "\($0)") }
    }

    /// ALBEF's own Pretrain.yaml still loads; the keys it sets that we ignore are noted.
    func testALBEFConfigLoadsWithNotesForIgnoredKeys() throws {
        let cfg = try TrainConfig.load(root.appendingPathComponent("configs/base.yaml").path)
        XCTAssertEqual(cfg.model.queueSize, 65536)
        XCTAssertTrue(cfg.notes.contains { $0.contains("schedular.decay_rate is ignored") }, "\(cfg.notes)")
        XCTAssertTrue(cfg.notes.contains { $0.contains("schedular.cooldown_epochs is ignored") }, "\(cfg.notes)")
        for name in ["tiny", "small", "quickstart"] { XCTAssertNoThrow(try TrainConfig.load(root.appendingPathComponent("configs/\(name).yaml").path), name) }
    }

    func testSafeTensorsHeadersWithOverlapsOrHugeShapesAreErrors() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        func file(_ header: String, data: Int) throws -> String {
            var h = Array(header.utf8)
            while h.count % 8 != 0 { h.append(0x20) }
            var bytes = withUnsafeBytes(of: UInt64(h.count).littleEndian, Array.init) + h
            bytes += [UInt8](repeating: 0, count: data)
            let p = dir.appendingPathComponent("\(UUID().uuidString).safetensors").path
            try Data(bytes).write(to: URL(fileURLWithPath: p))
            return p
        }
        let overlap = try file(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, data: 12)
        XCTAssertThrowsError(try SafeTensorsFile(path: overlap)) { XCTAssertTrue("\($0)".contains("overlap") && "\($0)".contains(overlap), "\($0)") }
        let huge = try file(#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}"#, data: 8)
        XCTAssertThrowsError(try SafeTensorsFile(path: huge)) { XCTAssertTrue("\($0)".contains("shape"), "\($0)") }
        let negative = try file(#"{"a":{"dtype":"F32","shape":[-1,-4],"data_offsets":[0,16]}}"#, data: 16)
        XCTAssertThrowsError(try SafeTensorsFile(path: negative))
        let fine = try file(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[0],"data_offsets":[8,8]}}"#, data: 8)
        XCTAssertNoThrow(try SafeTensorsFile(path: fine))
    }

    // MARK: - Fuzzing the parsers we own

    /// Deterministic byte mutations of a valid input (flip, insert, delete, truncate, splice).
    struct Mutator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func mutate(_ input: [UInt8]) -> [UInt8] {
            var b = input
            for _ in 0...(next() % 4) {
                guard !b.isEmpty else { b.append(UInt8(truncatingIfNeeded: next())); continue }
                let i = Int(next() % UInt64(b.count))
                switch next() % 6 {
                case 0: b[i] ^= UInt8(truncatingIfNeeded: 1 << (next() % 8))
                case 1: b.insert(UInt8(truncatingIfNeeded: next()), at: i)
                case 2: b.remove(at: i)
                case 3: b = Array(b.prefix(i))
                case 4: b[i] = [0x00, 0xFF, 0x22, 0x7B, 0x7D, 0x3A, 0x2D, 0x39][Int(next() % 8)]
                default: let j = Int(next() % UInt64(b.count)); b.insert(contentsOf: b[min(i, j)..<max(i, j)].prefix(64), at: i)
                }
            }
            return b
        }
    }

    /// Runs `parse` on `n` mutations of `seed`; each must return or throw (a crash ends the test
    /// process, which the suite reports). Prints the count and the time.
    func fuzz(_ name: String, seed: [UInt8], n: Int, _ parse: ([UInt8]) throws -> Void) {
        var m = Mutator(state: 0xF00D ^ UInt64(name.utf8.count))
        var errors = 0
        let t0 = Date()
        for _ in 0..<n {
            do { try parse(m.mutate(seed)) } catch { errors += 1 }
        }
        let dt = Date().timeIntervalSince(t0)
        print(String(format: "fuzz %@: %d inputs, %d rejected with an error, %.2f s", name, n, errors, dt))
        XCTAssertGreaterThan(errors, 0, "\(name): some mutations must be rejected")
    }

    func testFuzzConfigIndexTarAndSafeTensorsParsers() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        // YAML config.
        let yaml = [UInt8](try Data(contentsOf: try config(dir, "queue_size: 64")))
        let yamlPath = dir.appendingPathComponent("f.yaml").path
        fuzz("config", seed: yaml, n: 1500) { b in
            try Data(b).write(to: URL(fileURLWithPath: yamlPath))
            _ = try TrainConfig.load(yamlPath)
        }
        // Corpus index JSON.
        let (s, o) = try runCommand(productsDirectory().appendingPathComponent("albef-data").path,
                                    ["synth", "--out", dir.path + "/corpus", "--samples", "12", "--heldout", "2", "--image-size", "32", "--shard-size", "4"])
        XCTAssertEqual(s, 0, o)
        let indexBytes = [UInt8](try Data(contentsOf: dir.appendingPathComponent("corpus/index.json")))
        let indexPath = dir.appendingPathComponent("fi.json")
        fuzz("corpus index", seed: indexBytes, n: 3000) { b in
            try Data(b).write(to: indexPath)
            _ = try CorpusIndex.load(from: indexPath)
        }
        // Tar reader (scan + read every member).
        let index = try CorpusIndex.load(from: dir.appendingPathComponent("corpus/index.json"))
        let tarBytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: index.filePath(0))))
        let tarPath = dir.appendingPathComponent("f.tar").path
        fuzz("tar", seed: tarBytes, n: 800) { b in
            try Data(b).write(to: URL(fileURLWithPath: tarPath))
            // The tar reader reports damage in the scan (the loader skips and quarantines from there).
            let t = try TarFile(path: tarPath)
            let scan = try t.scan()
            for e in scan.members { _ = try t.read(e) }
            if let p = scan.problem { throw BadSample(shard: tarPath, key: p.name, kind: p.kind, message: p.message) }
        }
        // safetensors.
        let stPath = dir.appendingPathComponent("s.safetensors").path
        try SafeTensorsFile.write([("a", .float(Tensor([1, 2, 3, 4], shape: [2, 2]))), ("b", .float(Tensor([5, 6], shape: [2])))], to: stPath)
        let st = [UInt8](try Data(contentsOf: URL(fileURLWithPath: stPath)))
        let fz = dir.appendingPathComponent("f.safetensors").path
        fuzz("safetensors", seed: st, n: 3000) { b in
            try Data(b).write(to: URL(fileURLWithPath: fz))
            let f = try SafeTensorsFile(path: fz)
            for k in f.keys where f.entries[k]?.dtype == "F32" { _ = try f.floats(k) }
        }
    }
}

extension InputHardeningTests {
    /// The BERT config is strict too: a typo in `config_bert.json` (or the YAML's inline `bert:`)
    /// is an error naming the key and the nearest known one; the file metadata HF writes loads.
    func testBertConfigTypoIsAnErrorWithSuggestion() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bertkeys-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardized
        let good = try String(contentsOf: root.appendingPathComponent("configs/config_bert.json"), encoding: .utf8)
        XCTAssertNoThrow(try BertConfig.load(root.appendingPathComponent("configs/config_bert.json").path))
        let bad = dir.appendingPathComponent("config_bert.json")
        try good.replacingOccurrences(of: "\"num_hidden_layers\"", with: "\"num_hiden_layers\"").write(to: bad, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try BertConfig.load(bad.path)) { e in
            XCTAssertTrue("\(e)".contains("num_hiden_layers") && "\(e)".contains("did you mean 'num_hidden_layers'") && "\(e)".contains(bad.path), "\(e)")
        }
        let yaml = dir.appendingPathComponent("inline.yaml")
        try "bert: {hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64, encoder_widht: 32}\n"
            .write(to: yaml, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try TrainConfig.load(yaml.path)) { e in
            XCTAssertTrue("\(e)".contains("encoder_widht") && "\(e)".contains("did you mean 'encoder_width'"), "\(e)")
        }
    }
}
