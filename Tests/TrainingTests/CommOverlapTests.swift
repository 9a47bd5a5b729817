import DataPipeline
import Distributed
import Foundation
import NN
import XCTest
@testable import ALBEF
@testable import Tensor
@testable import Training

/// Gradient buckets reduced on the communication thread (`grad_overlap: thread`) give the same
/// bits as reducing them on the training thread: parameters, AdamW moments, momentum weights and
/// queues, with the optimizer applied in backward and with a flat gradient buffer, in float32
/// and bf16 buckets; and under real `mpirun` (MPI_THREAD_SERIALIZED) the final checkpoints of a
/// run to its end are byte-identical.
final class CommOverlapTests: XCTestCase {
    func run(overlap: Bool, inBackward: Bool, bf16: Bool = false, steps: Int = 3) throws -> [[Float]] {
        var config = TrainConfig.testMicro(batchSize: 4, queueSize: 32)
        config.optimizerInBackward = inBackward
        config.gradOverlap = overlap
        config.gradReduceBF16 = bf16
        config.gradBucketMB = 0.05  // many small buckets, so reductions run while backward goes on
        return try trainedState(config, world: 2, steps: steps, seed: 5) { trainer in
            XCTAssertEqual(trainer.sync.overlap != nil, overlap)
            XCTAssertGreaterThan(trainer.sync.bucketer.buckets.count, 4)
        }
    }

    func compare(inBackward: Bool, bf16: Bool = false) throws {
        let inline = try run(overlap: false, inBackward: inBackward, bf16: bf16)
        let thread = try run(overlap: true, inBackward: inBackward, bf16: bf16)
        for (i, name) in ["params", "adam m", "adam v", "momentum", "image queue", "text queue"].enumerated() {
            XCTAssertEqual(inline[i], thread[i], "\(name) differs with the communication thread (in backward \(inBackward), bf16 \(bf16))")
        }
        XCTAssertNotEqual(inline[1].filter { $0 != 0 }.count, 0, "the optimizer did not run")
    }

    func testOverlapSameBitsOptimizerInBackward() throws { try compare(inBackward: true) }
    func testOverlapSameBitsFlatGradients() throws { try compare(inBackward: false) }
    func testOverlapSameBitsBF16Buckets() throws { try compare(inBackward: true, bf16: true) }

    /// `mpirun -n 2 albef-worker train` to the end of its 2 epochs with `grad_overlap: thread` and
    /// with `off`: the final checkpoints' weights and optimizer state are byte-identical, and the
    /// run says where its buckets were reduced.
    func testOverlapUnderMPIRunSameFinalCheckpoint() throws {
        let exe = productsDirectory().appendingPathComponent("albef-worker").path
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("overlap-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var files: [String: [Data]] = [:]
        for mode in ["off", "thread"] {
            let sub = dir.appendingPathComponent(mode)
            try FileManager.default.createDirectory(at: sub, withIntermediateDirectories: true)
            let cfg = try writeMicroConfig(in: sub, schedular: "{sched: constant, epochs: 2}", extra: "grad_overlap: \(mode)\ngrad_bucket_mb: 0.05")
            let out = sub.appendingPathComponent("run").path
            let (s, o) = try runCommand("/usr/bin/mpirun", ["--allow-run-as-root", "--oversubscribe", "-n", "2", exe, "train", "--config", cfg.path,
                                                            "--synthetic", "3", "--output-dir", out, "--no-tensorboard", "--log-every", "1",
                                                            "--divergence-check-every", "1"], timeout: 240, env: mpiEnvironment)
            XCTAssertEqual(s, 0, o)
            XCTAssertFalse(o.contains("diverge"), o)
            XCTAssertEqual(o.contains("reduced on a communication thread"), mode == "thread", o)
            let ckpt = try XCTUnwrap(Checkpointer.latest(out), o)
            let state = try String(contentsOf: ckpt.appendingPathComponent("state.json"), encoding: .utf8)
            XCTAssertTrue(state.contains("\"step\" : 6") || state.contains("\"step\":6"), "the run did not reach its end (2 epochs × 3 steps): \(state.prefix(300))")
            files[mode] = try ["model.safetensors", "optimizer.safetensors"].map { try Data(contentsOf: ckpt.appendingPathComponent($0)) }
        }
        XCTAssertEqual(files["off"]![0], files["thread"]![0], "weights differ with the communication thread")
        XCTAssertEqual(files["off"]![1], files["thread"]![1], "optimizer state differs with the communication thread")
    }
}

extension MultiHostTests {
    /// 2 hosts × 2 ranks (shared memory within a host, TCP between hosts): the hierarchical
    /// reduction (reduce-scatter in the host, chunks across hosts, allgather in the host) with the
    /// communication thread, against the flat allreduce. Ranks stay bit-identical (divergence
    /// check after every step), the losses agree with the flat run's to float rounding, and the
    /// bytes host 2 sends are measured for both.
    func testHierarchicalReductionTwoHostsTwoRanksEach() throws {
        try requireNamespaces()
        let script = root.path + "/scripts/netns-cluster"
        let bin = productsDirectory()
        let (s0, o0) = try runCommand(script, ["start", "2"], timeout: 60,
                                      env: ["NETNS_CLUSTER_WATCH_PID": String(getpid()), "NETNS_CLUSTER_SLOTS": "2"])
        XCTAssertEqual(s0, 0, o0)
        let cdir = try XCTUnwrap(exported("NETNS_CLUSTER_DIR", in: o0), o0)
        defer { _ = try? runCommand(script, ["stop", cdir], timeout: 60) }
        let env = ["NETNS_CLUSTER_DIR": cdir].merging(mpiEnvironment) { a, _ in a }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("hier-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var sent: [String: Int] = [:], losses: [String: [Double]] = [:]
        for mode in ["flat", "hierarchical"] {
            let extra = "grad_topology: \(mode)\ngrad_bucket_mb: 1" + (mode == "hierarchical" ? "\ngrad_overlap: thread" : "")
            let cfg = try writeMicroConfig(in: dir.appendingPathComponent(mode).creatingDirectory(), extra: extra)
            let before = try counter(script, env, host: 2, "tx_bytes")
            let out = dir.path + "/run-" + mode
            let (s, o) = try runCommand(script, ["mpirun", "-n", "4", "--map-by", "ppr:2:node", "-x", "OPENBLAS_NUM_THREADS",
                                                 bin.appendingPathComponent("albef-worker").path, "train", "--config", cfg.path,
                                                 "--synthetic", "20", "--output-dir", out, "--max-steps", "5",
                                                 "--divergence-check-every", "1", "--no-tensorboard", "--log-every", "1"],
                                        timeout: 180, env: env)
            XCTAssertEqual(s, 0, o)
            XCTAssertFalse(o.contains("diverge"), o)
            if mode == "hierarchical" {
                XCTAssertTrue(o.contains("gradients: reduced by host (2 hosts"), o)
                XCTAssertTrue(o.contains("reduced on a communication thread"), o)
            }
            sent[mode] = try counter(script, env, host: 2, "tx_bytes") - before
            let lines = try String(contentsOfFile: out + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
            losses[mode] = lines.compactMap { l in
                (try? JSONSerialization.jsonObject(with: Data(l.utf8)) as? [String: Any])?.flatMap { $0["loss"] as? Double }
            }
        }
        print("MultiHostTests: 2 hosts × 2 ranks, host 2 sent \(sent["flat"]!) B (flat allreduce) and \(sent["hierarchical"]!) B (hierarchical) for 5 steps")
        let f = try XCTUnwrap(losses["flat"]), h = try XCTUnwrap(losses["hierarchical"])
        XCTAssertEqual(f.count, 5, "\(f)")
        XCTAssertEqual(h.count, f.count)
        for (a, b) in zip(f, h) { XCTAssertEqual(a, b, accuracy: 1e-4 * max(1, abs(a)), "losses \(f) vs \(h)") }
    }
}
