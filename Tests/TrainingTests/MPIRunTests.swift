import Foundation
import XCTest

/// Runs a command with a timeout; returns (status, stdout + stderr), status −1 on timeout.
/// The child gets this process's environment without the variables `dropping` selects, plus `env`.
func runCommand(_ exe: String, _ args: [String], timeout: TimeInterval = 300, env: [String: String] = [:],
                dropping: (String) -> Bool = { _ in false }) throws -> (Int32, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: exe)
    p.arguments = args
    var e = ProcessInfo.processInfo.environment.filter { k, _ in !dropping(k) }
    for (k, v) in env { e[k] = v }
    p.environment = e
    let out = FileManager.default.temporaryDirectory.appendingPathComponent("out-\(UUID().uuidString)")
    _ = FileManager.default.createFile(atPath: out.path, contents: nil)
    defer { try? FileManager.default.removeItem(at: out) }
    let h = try FileHandle(forWritingTo: out)
    p.standardOutput = h
    p.standardError = h
    p.standardInput = FileHandle.nullDevice
    try p.run()
    let deadline = Date().addingTimeInterval(timeout)
    while p.isRunning && Date() < deadline { usleep(50_000) }
    let timedOut = p.isRunning
    if timedOut { p.terminate() }
    p.waitUntilExit()
    try? h.close()
    let text = (try? String(contentsOf: out, encoding: .utf8)) ?? ""
    return (timedOut ? -1 : p.terminationStatus, timedOut ? text + "\n(timed out after \(Int(timeout)) s)" : text)
}

/// Polls `text()` until it contains `needle` (true), `timeout` seconds pass or `process` has
/// exited (false).
func waitForText(_ needle: String, _ text: () -> String, while process: Process? = nil, timeout: Double = 120) -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while !text().contains(needle) {
        if Date() >= deadline || process?.isRunning == false { return text().contains(needle) }
        usleep(100_000)
    }
    return true
}

/// The step `albef-worker train` names in its line for a SIGUSR1 stop, if the log has one.
/// The step of rank 0's stop line after SIGUSR1: "stopped by User defined signal 1 (10) at step N",
/// or, when mpirun's forwarded signal reached another rank before rank 0 looked (the ranks agree
/// on a stop at the next step boundary), "stopped by a signal on another rank at step N".
func signalStopStep(in log: String) -> Int? {
    for line in ["stopped by User defined signal 1 (10) at step ", "stopped by a signal on another rank at step "] {
        if let s = log.components(separatedBy: line).dropFirst().first.flatMap({ Int($0.prefix { $0.isNumber }) }) { return s }
    }
    return nil
}

let mpiEnvironment = ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                      "OMPI_MCA_rmaps_base_oversubscribe": "1", "OPENBLAS_NUM_THREADS": "1"]

func productsDirectory() -> URL {
    let b = Bundle(for: MPIRunTests.self).bundleURL
    return b.pathExtension == "xctest" ? b.deletingLastPathComponent() : b
}

final class MPIRunTests: XCTestCase {
    /// Under real `mpirun -n 2`: ranks bit-identical after k steps and equal to the single-process reference.
    func testDataParallelUnderMPIRun() throws {
        let exe = productsDirectory().appendingPathComponent("albef-worker").path
        let (status, out) = try runCommand("/usr/bin/mpirun", ["--allow-run-as-root", "--oversubscribe", "-n", "2", exe, "dist-selftest", "--steps", "3"],
                                    env: mpiEnvironment)
        XCTAssertEqual(status, 0, out)
        XCTAssertTrue(out.contains("dist-selftest: PASS (2 ranks, 3 steps, ranks bit-identical)"), out)
    }

    /// `mpirun -n 2 albef-worker train` end to end: log lines, metrics, checkpoints, resume.
    func testTrainUnderMPIRunWithResume() throws {
        let exe = productsDirectory().appendingPathComponent("albef-worker").path
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardized
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mpitrain-\(UUID().uuidString)").path
        let common = ["--allow-run-as-root", "--oversubscribe", "-n", "2", exe, "train", "--config", root.path + "/configs/tiny.yaml",
                      "--synthetic", "10", "--batch-size", "4", "--output-dir", dir, "--log-every", "1"]
        let (s1, o1) = try runCommand("/usr/bin/mpirun", common + ["--max-steps", "2"], env: mpiEnvironment)
        XCTAssertEqual(s1, 0, o1)
        XCTAssertTrue(o1.contains("epoch 0 step 2 | loss_ita"), o1)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/checkpoints/step_00000002/model.safetensors"), o1)
        let (s2, o2) = try runCommand("/usr/bin/mpirun", common + ["--max-steps", "3", "--resume"], env: mpiEnvironment)
        XCTAssertEqual(s2, 0, o2)
        XCTAssertTrue(o2.contains("resumed from"), o2)
        XCTAssertTrue(o2.contains("epoch 0 step 3 |"), o2)
        XCTAssertEqual(try String(contentsOfFile: dir + "/checkpoints/latest", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines), "step_00000003")
    }

    /// SIGUSR1 to `mpirun` (it forwards the signal to every rank): the ranks agree to stop at the
    /// next step boundary, write a checkpoint at that step, and exit with 75; nothing trained is lost.
    func testSIGUSR1ToMPIRunCheckpointsAndExits75() throws {
        let exe = productsDirectory().appendingPathComponent("albef-worker").path
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardized
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mpisignal-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let (p, text) = try startMPIRun(["-n", "2", exe, "train", "--config", root.path + "/configs/tiny.yaml",
                                         "--synthetic", "1000", "--batch-size", "4", "--output-dir", dir + "/run", "--log-every", "1", "--max-steps", "500"],
                                        log: dir + "/train.log")
        defer { if p.isRunning { p.terminate() } }
        XCTAssertTrue(waitForText("epoch 0 step 3 |", text, while: p), text())
        kill(p.processIdentifier, SIGUSR1)
        p.waitUntilExit()
        let out = text()
        XCTAssertEqual(p.terminationStatus, 75, out)
        let stop = try XCTUnwrap(signalStopStep(in: out), out)
        XCTAssertTrue(out.contains("epoch 0 step \(stop) |") && !out.contains("epoch 0 step \(stop + 1) |"), out)
        XCTAssertEqual(try String(contentsOfFile: dir + "/run/checkpoints/latest", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines),
                       String(format: "step_%08d", stop), "the checkpoint is at the step the signal stopped")
    }
}

/// Writes `micro.yaml` in `dir`: the micro ALBEF (32 px, 2 ViT blocks, 4 BERT layers fused from
/// layer 2, queue 64) the multi-process tests train.
/// Starts `mpirun ARGS` (as root, oversubscribed, with `mpiEnvironment`) writing stdout and
/// stderr to `log`; returns the running process and a reader of the log so far.
func startMPIRun(_ args: [String], log: String) throws -> (Process, () -> String) {
    FileManager.default.createFile(atPath: log, contents: nil)
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/mpirun")
    p.arguments = ["--allow-run-as-root", "--oversubscribe"] + args
    var env = ProcessInfo.processInfo.environment
    for (k, v) in mpiEnvironment { env[k] = v }
    p.environment = env
    p.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
    p.standardError = p.standardOutput
    p.standardInput = FileHandle.nullDevice
    try p.run()
    return (p, { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" })
}

func writeMicroConfig(in dir: URL, batchSize: Int = 4, schedular: String = "{sched: constant, epochs: 50}", queueSize: Int = 64,
                      extra: String = "") throws -> URL {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardized
    let cfg = dir.appendingPathComponent("micro.yaml")
    try """
    bert: {hidden_size: 32, num_hidden_layers: 4, num_attention_heads: 2, intermediate_size: 64, vocab_size: 30522,
           hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0, fusion_layer: 2, encoder_width: 32}
    vocab: '\(root.path)/configs/vocab.txt'
    image_res: 32
    vision_width: 32
    vit: {patch_size: 16, depth: 2, num_heads: 2, mlp_ratio: 4}
    embed_dim: 16
    batch_size: \(batchSize)
    queue_size: \(queueSize)
    optimizer: {opt: adamW, lr: 1e-4, weight_decay: 0.02}
    schedular: \(schedular)
    \(extra)
    """.write(to: cfg, atomically: true, encoding: .utf8)
    return cfg
}
