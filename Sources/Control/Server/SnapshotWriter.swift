import Foundation

/// Writes snapshots on its own thread so the ROUTER loop never waits on JSON encoding or fsync.
///
/// Hand-off: the loop gives the writer a copy of the state only when the writer is ready for one
/// (``isReady``: not writing, and at least `minInterval` since its last write, so bursts of
/// changes coalesce into one snapshot); otherwise it calls ``want()`` and hands the state over
/// once the writer says it is ready. So the loop copies the state (and then, on its next change,
/// pays for the copy-on-write of its storage) once per write rather than once per change, and the
/// writer, which runs at a lower priority, never takes a lock the loop needs.
///
/// ``savedVersion`` tells the loop which durable version is on disk, so it can release the
/// replies that depended on it. ``wakeFD`` becomes readable after each write and when the writer
/// becomes ready for a wanted state, so the loop sleeps in its poll instead of checking.
final class SnapshotWriter: @unchecked Sendable {
    private let store: SnapshotStore
    private let condition = NSCondition()
    private var pending: CoordinatorState?
    private var _savedVersion: UInt64
    private var _error: Error?
    private var stopping = false
    private var busy = false
    /// Cooling down after a write (until `minInterval` has passed).
    private var cooling = false
    /// The loop has a state to hand over (wake it when ready).
    private var wanted = false
    private var thread: Thread?

    /// Least time between two writes (bursts of changes coalesce into one snapshot).
    private let minInterval: Double
    /// Read end of a non-blocking pipe that gets a byte after every write and when the writer
    /// becomes ready for a wanted state (poll it; ``drainWake()``).
    let wakeFD: Int32
    private let wakeWriteFD: Int32

    init(store: SnapshotStore, savedVersion: UInt64, minInterval: Double = 0.02) {
        self.store = store
        self.minInterval = minInterval
        _savedVersion = savedVersion
        var fds: [Int32] = [-1, -1]
        if pipe(&fds) == 0 {
            for fd in fds {
                _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            }
        }
        wakeFD = fds[0]
        wakeWriteFD = fds[1]
        let t = Thread { [weak self] in self?.loop() }
        t.name = "albef-coord-snapshot"
        thread = t
        t.start()
    }

    deinit {
        if wakeFD >= 0 { close(wakeFD) }
        if wakeWriteFD >= 0 { close(wakeWriteFD) }
    }

    /// Empties the wake pipe (after the poll said it is readable).
    func drainWake() {
        var buf = [UInt8](repeating: 0, count: 64)
        while wakeFD >= 0, read(wakeFD, &buf, buf.count) > 0 {}
    }

    /// Durable version last written.
    var savedVersion: UInt64 { condition.withLock { _savedVersion } }

    /// The first write error, if any (the coordinator must stop: replies would wait forever).
    var error: Error? { condition.withLock { _error } }

    /// True when ``submit(_:)`` would start a write at once.
    var isReady: Bool { condition.withLock { pending == nil && !busy && !cooling && !stopping } }

    /// The loop has a newer state: poke ``wakeFD`` when ready for it.
    func want() {
        condition.withLock {
            wanted = true
            if pending == nil && !busy && !cooling { poke() }
        }
    }

    /// Writes `state` (replacing one not yet started).
    func submit(_ state: CoordinatorState) {
        condition.withLock {
            pending = state
            wanted = false
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

    /// Wakes the loop (lock held).
    private func poke() {
        guard wakeWriteFD >= 0 else { return }
        var one: UInt8 = 1
        _ = write(wakeWriteFD, &one, 1)  // full pipe (EAGAIN): the loop has wake-ups pending anyway
    }

    private func loop() {
        // Encoding and fsync are background work: yield the CPU to the request loop first.
        #if os(Linux)
        setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 10)  // who = 0: the calling thread on Linux
        #endif
        condition.lock()
        while true {
            while pending == nil && !stopping { condition.wait() }
            guard let state = pending else {
                condition.unlock()
                return
            }
            pending = nil
            busy = true
            condition.unlock()
            var failure: Error?
            do { try store.save(state) } catch { failure = error }
            let written = DispatchTime.now().uptimeNanoseconds
            condition.lock()
            busy = false
            if let failure { _error = _error ?? failure } else { _savedVersion = max(_savedVersion, state.durableVersion) }
            condition.broadcast()
            poke()
            // Cool down (the wait ends early on `finish()` / `abandon()`), then say so if wanted.
            cooling = true
            while !stopping {
                let left = minInterval - Double(DispatchTime.now().uptimeNanoseconds &- written) / 1e9
                if left <= 0 { break }
                _ = condition.wait(until: Date().addingTimeInterval(left))
            }
            cooling = false
            if wanted { poke() }
        }
    }
}
