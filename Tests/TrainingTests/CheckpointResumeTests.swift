import Distributed
import Foundation
import XCTest
@testable import ALBEF
@testable import NN
@testable import Tensor
@testable import Training

final class CheckpointResumeTests: XCTestCase {
    func tempDir() -> String {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("ckpt-\(UUID().uuidString)").path
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    func params(_ t: Trainer) -> [Float] {
        let on = t.model.online!, mo = t.model.momentum!
        return Array(UnsafeBufferPointer(start: on.values.pointer, count: on.count)) + Array(UnsafeBufferPointer(start: mo.values.pointer, count: mo.count))
            + t.model.imageQueue.scalars + t.model.textQueue.scalars
    }

    /// 6 steps straight equal 3 steps + checkpoint + a fresh process resuming for 3 more, bit for bit
    /// (weights, momentum, queues, optimizer moments, RNG streams, data position, schedule).
    func testResumeIsBitExact() throws {
        var config = TrainConfig.testMicro(batchSize: 4, queueSize: 32, dropout: 0.1)
        config.epochs = 3
        config.schedule = .albef(baseLR: 1e-3, warmupLR: 1e-4, minLR: 1e-5, warmupEpochs: 2, stepSize: 1, epochs: 3)
        let data = SyntheticBatches(batchSize: 4, length: 8, imageRes: 32, vocabSize: 1200, seed: 3)
        let comm = LocalWorld(size: 1).communicators()[0]

        let a = try Trainer(config: config, comm: comm, seed: 11)
        var o = RunOptions(); o.outputDir = tempDir(); o.maxSteps = 6; o.logEvery = 0
        try TrainingRun(trainer: a, source: SyntheticSource(data, rank: 0, iterationsPerEpoch: 4), options: o).run()

        let dir = tempDir()
        let b = try Trainer(config: config, comm: comm, seed: 11)
        var o1 = RunOptions(); o1.outputDir = dir; o1.maxSteps = 3; o1.logEvery = 0
        let run1 = TrainingRun(trainer: b, source: SyntheticSource(data, rank: 0, iterationsPerEpoch: 4), options: o1)
        try run1.run()
        XCTAssertNotNil(Checkpointer.latest(dir))
        XCTAssertTrue(FileManager.default.fileExists(atPath: Checkpointer.latest(dir)!.appendingPathComponent("model.safetensors").path))

        let c = try Trainer(config: config, comm: comm, seed: 999)  // different init: everything must come from the checkpoint
        var o2 = RunOptions(); o2.outputDir = dir; o2.maxSteps = 6; o2.logEvery = 0; o2.resume = true
        try TrainingRun(trainer: c, source: SyntheticSource(data, rank: 0, iterationsPerEpoch: 4), options: o2).run()
        XCTAssertEqual(c.globalStep, 6)
        XCTAssertTrue(params(a) == params(c), "resumed run differs from the straight run")
        // Resuming a run that already reached --max-steps (a requeued job) trains nothing more.
        let d = try Trainer(config: config, comm: comm, seed: 5)
        try TrainingRun(trainer: d, source: SyntheticSource(data, rank: 0, iterationsPerEpoch: 4), options: o2).run()
        XCTAssertEqual(d.globalStep, 6, "a resume at --max-steps must not train another step")
        XCTAssertTrue(params(a) == params(d))
        XCTAssertTrue(Checkpointer.latest(dir)!.lastPathComponent.hasSuffix("06"))
        // The checkpoint's model file loads strictly into a fresh model under PyTorch names.
        let fresh = ALBEFPretrain(config.model, seed: 1)
        let report = try fresh.load(from: SafeTensorsFile(path: Checkpointer.latest(dir)!.appendingPathComponent("model.safetensors").path))
        XCTAssertTrue(report.isClean, report.summary)
    }

    /// `resumeStep` (with a coordinator: its last committed checkpoint) picks that checkpoint over
    /// a newer `latest` (one whose commit never reached the coordinator); a missing one is an error
    /// naming it, not a silent fresh start.
    func testResumeFromAGivenStepPassesOverNewerCheckpoints() throws {
        let config = TrainConfig.testMicro()
        let comm = LocalWorld(size: 1).communicators()[0]
        let data = SyntheticBatches(batchSize: 4, length: 6, imageRes: 32, vocabSize: 1200, seed: 2)
        let dir = tempDir()
        var o = RunOptions(); o.outputDir = dir; o.maxSteps = 6; o.logEvery = 0; o.checkpointEvery = 2
        try TrainingRun(trainer: try Trainer(config: config, comm: comm, seed: 1), source: SyntheticSource(data, rank: 0, iterationsPerEpoch: 10), options: o).run()
        XCTAssertEqual(Checkpointer.latest(dir)?.lastPathComponent, "step_00000006")

        var o2 = o; o2.resume = true; o2.resumeStep = 4
        let t = try Trainer(config: config, comm: comm, seed: 1)
        let run = TrainingRun(trainer: t, source: SyntheticSource(data, rank: 0, iterationsPerEpoch: 10), options: o2)
        try run.run()
        XCTAssertEqual(run.history.map(\.step), [5, 6], "resumed from step 4, not from the latest (6)")
        XCTAssertEqual(t.globalStep, 6)

        var o3 = o2; o3.resumeStep = 3
        XCTAssertThrowsError(try TrainingRun(trainer: try Trainer(config: config, comm: comm, seed: 1),
                                             source: SyntheticSource(data, rank: 0, iterationsPerEpoch: 10), options: o3).run()) {
            XCTAssertTrue("\($0)".contains("step_00000003") && "\($0)".contains("step 3"), "\($0)")
        }
    }

    func testMetricsAndLatestPointer() throws {
        let config = TrainConfig.testMicro()
        let comm = LocalWorld(size: 1).communicators()[0]
        let dir = tempDir()
        let t = try Trainer(config: config, comm: comm, seed: 1)
        var o = RunOptions(); o.outputDir = dir; o.maxSteps = 4; o.logEvery = 2; o.checkpointEvery = 2
        try TrainingRun(trainer: t, source: SyntheticSource(SyntheticBatches(batchSize: 4, length: 6, imageRes: 32, vocabSize: 1200, seed: 1),
                                                            rank: 0, iterationsPerEpoch: 10), options: o).run()
        let lines = try String(contentsOfFile: dir + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.count, 3)  // steps 1, 2, 4
        let last = try JSONSerialization.jsonObject(with: Data(lines.last!.utf8)) as! [String: Any]
        XCTAssertEqual(last["step"] as? Int, 4)
        XCTAssertNotNil(last["loss_ita"] as? Double)
        XCTAssertEqual(Checkpointer.latest(dir)?.lastPathComponent, "step_00000004")
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/checkpoints/step_00000002/state.json"))
        let tmp = try FileManager.default.contentsOfDirectory(atPath: dir + "/checkpoints").filter { $0.hasPrefix(".tmp") }
        XCTAssertEqual(tmp, [])
    }

    /// `--keep-checkpoints 2`: after a run with checkpoints at 2, 4, 6, 8 only 6 and 8 remain
    /// (and a resume from them works); a coordinator's protected step keeps older ones.
    func testKeepCheckpointsPrunesOldOnesAndResumeStillWorks() throws {
        let config = TrainConfig.testMicro()
        let comm = LocalWorld(size: 1).communicators()[0]
        let dir = tempDir()
        let data = SyntheticBatches(batchSize: 4, length: 6, imageRes: 32, vocabSize: 1200, seed: 1)
        let t = try Trainer(config: config, comm: comm, seed: 1)
        var o = RunOptions(); o.outputDir = dir; o.maxSteps = 8; o.logEvery = 0; o.checkpointEvery = 2; o.keepCheckpoints = 2
        // A left-over of an interrupted save: removed once a newer checkpoint exists.
        try FileManager.default.createDirectory(atPath: dir + "/checkpoints/.tmp-step_00000001", withIntermediateDirectories: true)
        try TrainingRun(trainer: t, source: SyntheticSource(data, rank: 0, iterationsPerEpoch: 10), options: o).run()
        func listing() throws -> [String] { try FileManager.default.contentsOfDirectory(atPath: dir + "/checkpoints").sorted() }
        XCTAssertEqual(try listing(), ["latest", "step_00000006", "step_00000008"])

        let r = try Trainer(config: config, comm: comm, seed: 7)
        var o2 = o; o2.maxSteps = 10; o2.resume = true
        try TrainingRun(trainer: r, source: SyntheticSource(data, rank: 0, iterationsPerEpoch: 10), options: o2).run()
        XCTAssertEqual(r.globalStep, 10)
        XCTAssertEqual(try listing(), ["latest", "step_00000008", "step_00000010"])

        // Protected from step 8 (say, the newest the coordinator acknowledged): nothing at or after
        // 8 goes even beyond keep = 1, and with nothing acknowledged (nil) nothing goes at all.
        let p = try Trainer(config: config, comm: comm, seed: 7)
        var o3 = o2; o3.maxSteps = 14; o3.keepCheckpoints = 1
        var run = TrainingRun(trainer: p, source: SyntheticSource(data, rank: 0, iterationsPerEpoch: 10), options: o3)
        run.checkpointsProtectedFrom = { 8 }
        try run.run()
        XCTAssertEqual(try listing(), ["latest", "step_00000008", "step_00000010", "step_00000012", "step_00000014"])
        let q = try Trainer(config: config, comm: comm, seed: 7)
        var o4 = o3; o4.maxSteps = 16
        run = TrainingRun(trainer: q, source: SyntheticSource(data, rank: 0, iterationsPerEpoch: 10), options: o4)
        run.checkpointsProtectedFrom = { nil }
        try run.run()
        XCTAssertEqual(try listing().count, 6)
        XCTAssertEqual(Checkpointer.prune(output: dir, keep: 1, protectFrom: nil),
                       ["step_00000008", "step_00000010", "step_00000012", "step_00000014"])
        XCTAssertEqual(try listing(), ["latest", "step_00000016"])
    }
}
