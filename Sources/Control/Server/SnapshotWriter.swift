import Foundation

/// Writes snapshots on its own thread so the ROUTER loop never waits on JSON encoding or fsync.
///
/// Submissions coalesce: only the newest pending state is written. ``savedVersion`` tells the loop
/// which durable version is on disk, so it can release the replies that depended on it.
final class SnapshotWriter: @unchecked Sendable {
    private let store: SnapshotStore
    private let condition = NSCondition()
    private var pending: (state: CoordinatorState, version: UInt64)?
    private var _savedVersion: UInt64
    private var _error: Error?
    private var stopping = false
    private var busy = false
    private var thread: Thread?

    /// Least time between two writes (bursts of changes coalesce into one snapshot).
    private let minInterval: Double

    init(store: SnapshotStore, savedVersion: UInt64, minInterval: Double = 0.02) {
        self.store = store
        self.minInterval = minInterval
        _savedVersion = savedVersion
        let t = Thread { [weak self] in self?.loop() }
        t.name = "albef-coord-snapshot"
        thread = t
        t.start()
    }

    /// Durable version last written.
    var savedVersion: UInt64 { condition.withLock { _savedVersion } }

    /// The first write error, if any (the coordinator must stop: replies would wait forever).
    var error: Error? { condition.withLock { _error } }

    /// Queues `state` (replacing any older pending one).
    func submit(_ state: CoordinatorState, version: UInt64) {
        condition.withLock {
            pending = (state, version)
            condition.signal()
        }
    }

    /// Stops the thread without writing what is pending (tests: a crash of the coordinator).
    func abandon() {
        condition.withLock {
            pending = nil
            stopping = true
            condition.broadcast()
            while busy { condition.wait() }
        }
        while let t = thread, !t.isFinished { usleep(1000) }
    }

    /// Waits until everything submitted is written, then stops the thread.
    func finish() {
        condition.withLock {
            stopping = true
            condition.broadcast()
            while pending != nil || busy { condition.wait() }
        }
        while let t = thread, !t.isFinished { usleep(1000) }
    }

    private func loop() {
        // Encoding and fsync are background work: yield the CPU to the request loop first.
        #if os(Linux)
        setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 10)  // who = 0: the calling thread on Linux
        #endif
        var lastWrite: DispatchTime?
        condition.lock()
        while true {
            while pending == nil && !stopping { condition.wait() }
            guard let job = pending else {
                condition.unlock()
                return
            }
            // Bursts coalesce: at most one write per `minInterval` (unless stopping). The wait
            // ends early on `finish()` / `abandon()`; a newer submission replaces `job`.
            let since = lastWrite.map { Double(DispatchTime.now().uptimeNanoseconds &- $0.uptimeNanoseconds) / 1e9 } ?? .infinity
            if !stopping && since < minInterval {
                _ = condition.wait(until: Date().addingTimeInterval(minInterval - since))
                continue
            }
            pending = nil
            busy = true
            condition.unlock()
            var failure: Error?
            do { try store.save(job.state) } catch { failure = error }
            lastWrite = DispatchTime.now()
            condition.lock()
            busy = false
            if let failure { _error = _error ?? failure } else { _savedVersion = max(_savedVersion, job.version) }
            condition.broadcast()
        }
    }
}
