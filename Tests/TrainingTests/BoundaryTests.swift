import Training
import XCTest

/// The step-boundary decision (``TrainingRun/Boundary/decide(_:localSignal:)``) from the sums of the
/// per-step allreduce, without MPI.
final class BoundaryTests: XCTestCase {
    func testDecisions() {
        typealias B = TrainingRun.Boundary
        // Nothing asked, every rank has a batch.
        XCTAssertEqual(B.decide([0, 0, 0, 0], localSignal: 0), B(command: .none, signal: 0, endOfData: false))
        // Rank 0's command reaches every rank.
        XCTAssertEqual(B.decide([Float(StepCommand.checkpoint.rawValue), 0, 0, 0], localSignal: 0).command, .checkpoint)
        // One of four ranks has no next batch: the epoch ends for all.
        XCTAssertTrue(B.decide([0, 0, 0, 1], localSignal: 0).endOfData)
        XCTAssertTrue(B.decide([0, 0, 0, 4], localSignal: 0).endOfData)
        // A signal on rank 0 (SIGUSR1 = 10) stops everyone and is named.
        XCTAssertEqual(B.decide([0, 1, 10, 0], localSignal: 0), B(command: .stop, signal: 10, endOfData: false))
        // A signal on another rank only: that rank names its own, the others -1.
        XCTAssertEqual(B.decide([0, 1, 0, 0], localSignal: 15).signal, 15)
        XCTAssertEqual(B.decide([0, 1, 0, 0], localSignal: 0).signal, -1)
        // A stop and the end of data at the same boundary: both are reported (the run writes the
        // epoch-end checkpoint, then stops).
        let both = B.decide([Float(StepCommand.stop.rawValue), 0, 0, 1], localSignal: 0)
        XCTAssertEqual(both.command, .stop)
        XCTAssertTrue(both.endOfData)
        // A sum that is no command is none.
        XCTAssertEqual(B.decide([200, 0, 0, 0], localSignal: 0).command, .none)
    }
}
