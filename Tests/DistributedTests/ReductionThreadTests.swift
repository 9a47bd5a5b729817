import Foundation
import XCTest
@testable import Distributed

/// The communication thread runs jobs one at a time, in submission order, off the caller's
/// thread; `wait(upTo:)` and `waitAll` return only once the jobs are done.
final class ReductionThreadTests: XCTestCase {
    func testJobsRunInOrderOffTheCallerThreadAndWaitsBlock() {
        let t = ReductionThread()
        let lock = NSLock()
        var order: [Int] = []
        var onCaller = false
        let caller = Thread.current
        var tickets: [Int] = []
        for i in 0..<20 {
            tickets.append(t.submit {
                usleep(UInt32(i % 3) * 2000)  // uneven durations: order must still hold
                lock.lock()
                order.append(i)
                if Thread.current == caller { onCaller = true }
                lock.unlock()
            })
        }
        XCTAssertEqual(tickets, Array(0..<20))
        t.wait(upTo: 9)
        lock.lock()
        XCTAssertGreaterThanOrEqual(order.count, 10, "wait(upTo: 9) returned before job 9 finished")
        lock.unlock()
        XCTAssertTrue(t.isDone(9))
        t.waitAll()
        XCTAssertEqual(order, Array(0..<20))
        XCTAssertFalse(onCaller, "a job ran on the submitting thread")
        XCTAssertEqual(t.completedCount, 20)
        XCTAssertGreaterThan(t.busySeconds, 0.01)
    }

    /// The caller keeps computing while a job runs: a job that waits for the caller's signal
    /// finishes only because the caller was not blocked in `submit`.
    func testSubmitDoesNotBlockTheCaller() {
        let t = ReductionThread()
        let go = DispatchSemaphore(value: 0)
        let ticket = t.submit { go.wait() }
        XCTAssertFalse(t.isDone(ticket))
        go.signal()
        t.waitAll()
        XCTAssertTrue(t.isDone(ticket))
    }
}
