import CZMQ
import Foundation

/// The training rank's side of the control plane: a non-blocking client of `albef-coord`.
///
/// Every call returns at once. A background thread owns the ZeroMQ DEALER socket (which
/// reconnects by itself): it sends what the calls queued, registers (and re-registers after a
/// coordinator restart that lost us), keeps the local lease queue topped up to the prefetch depth,
/// and collects commands. Heartbeats, progress reports and lease returns are fire-and-forget, so
/// a training step never waits on the coordinator; an outage only delays new leases.
///
/// Leases: the coordinator keeps `prefetch` leases queued for each rank beyond the ones it has
/// taken with ``nextLease()`` (taken leases stay the rank's until returned or committed by a
/// checkpoint, up to ``CoordinatorState/maxTakenPerRank``); a lease is identified by its id, and duplicates (a grant resent after a
/// reconnect or a coordinator restart) are ignored. Consume leases in the order ``nextLease()``
/// returns them and finish each with ``completeLease(_:)`` (or ``returnLease(_:consumed:)`` for
/// a partial use), so a checkpoint's ``DataPosition`` (lease id + offset) is exact.
///
/// Checkpoint commits are reliable: they go out one at a time, in order, and each is resent until
/// the coordinator acknowledges it (or refuses it), so a commit the coordinator received but had
/// not yet made durable when it crashed reaches its successor. ``waitForCheckpointCommits(timeout:)``
/// (called by ``close()``) waits for the acknowledgements before the socket goes away.
///
/// Commands (stop, checkpoint-now, pause, resume) reach rank 0 only; rank 0 broadcasts them over
/// MPI at a step boundary so that every rank acts on the same step.
///
/// Usage inside `albef-worker` (`--coordinator tcp://host:5555`); ``LeaseCursor`` does the lease
/// bookkeeping (order, completion, exact position):
/// ```swift
/// let client = try CoordinatorClient(endpoint: "tcp://coord:5555", auth: .token(token),
///                                    rank: Int32(rank), worldSize: UInt32(worldSize), jobId: jobId)
/// client.register()                                    // non-blocking; answered in the background
/// // client.registration?.resumeStep / .resumeCheckpoint: where a restarted job resumes
/// let cursor = LeaseCursor(client: client)
/// for step in startStep... {
///     let refs = cursor.take(localBatchSize)           // [SampleRef]: shardPath + sample index;
///                                                      // short/empty only if no lease arrived yet
///     // ... load refs, train one step ...
///     client.sendHeartbeat(step: step, stepSeconds: dt, timings: [PhaseTime(name: "forward", seconds: f)])
///     if rank == 0 {
///         client.reportProgress(ProgressReport(step: step, samples: seen, losses: losses, samplesPerSecond: sps))
///         if let command = client.pollCommand() { /* broadcast command.kind over MPI at this boundary */ }
///     }
///     // after a checkpoint is durable: gather `cursor.position` from every rank (MPI), then rank 0:
///     //   client.commitCheckpoint(step: step, path: dir, positions: allPositions)
///     //   (store the positions in the checkpoint manifest too; they are Codable)
///     if cursor.isExhausted { break }                  // no data left in any epoch
/// }
/// client.close()
/// ```
/// Without ``LeaseCursor``: take leases with ``nextLease()`` (never blocks; nil until one has
/// arrived), finish each with ``completeLease(_:)``, and report `DataPosition(rank:, leaseId:
/// current.id, offset: samplesTakenFromCurrent)`.
public final class CoordinatorClient: @unchecked Sendable {
    public let endpoint: String
    public let rank: Int32
    public let worldSize: UInt32
    public let jobId: String
    public let auth: ClientAuth
    /// Leases kept queued locally, beyond the ones already taken with `nextLease()`.
    public let prefetch: UInt32
    /// The rank's ``CorpusIndex/fingerprint``, sent with the registration ("" : not checked).
    public let corpusFingerprint: String

    private let lock = NSLock()
    private var outbox: [Body] = []
    private var leaseQueue: [Lease] = []
    private var highestLeaseId: UInt64 = 0
    /// Id of the last lease handed out by `nextLease()` (the coordinator keeps `prefetch` queued
    /// beyond it, so leases being read do not use up the prefetch).
    private var takenThrough: UInt64 = 0
    /// Returns sent but not yet confirmed (a grant no longer lists the lease): resent when a grant
    /// still lists it, e.g. because the coordinator restarted before handling the return.
    private var unconfirmedReturns: [UInt64: LeaseReturn] = [:]
    /// How many grants listed a lease after we returned it (one may cross the return in flight).
    private var lastGrantSawReturn: [UInt64: Int] = [:]
    private var commands: [Command] = []
    private var lastCommandId: UInt64 = 0
    private var _registration: RegistrationReply?
    /// Sequence numbers registrations went out under (an error answering one is a refusal).
    private var registrationSeqs: Set<UInt64> = []
    private var _registrationRefusal: ControlError?
    private var _jobState: JobState = .unspecified
    private var _exhausted = false
    private var _lastError: ControlError?
    private var leaseRequestWanted = true
    private var closed = false
    private var _messagesSent: UInt64 = 0
    /// Checkpoint commits not yet acknowledged, oldest first; only the first is on the wire.
    private var commits: [CheckpointCommitted] = []
    /// Envelope sequence numbers the first commit was sent under (its replies name one of them).
    private var commitSeqs: Set<UInt64> = []
    private var commitLastSent = -Double.infinity
    /// Resend an unacknowledged checkpoint commit after this long.
    public var commitRetryInterval: Double {
        get { lock.withLock { _commitRetryInterval } }
        set { lock.withLock { _commitRetryInterval = newValue } }
    }
    private var _commitRetryInterval = 1.0

    private let context: ZMQContext
    private let socket: ZMQSocket
    private var thread: Thread?
    private let pollInterval: Double
    private let identity: (host: String, pid: UInt32, build: String)
    /// Random per instance, so a new client in the same process starts a fresh `seq` run.
    private let session = UInt64.random(in: 1...UInt64.max)

    /// Connects (lazily; ZeroMQ connects and reconnects in the background) and starts the
    /// client's thread. Nothing is sent until ``register()``.
    public init(endpoint: String, auth: ClientAuth = .none, rank: Int32, worldSize: UInt32, jobId: String,
                prefetch: UInt32 = 4, buildVersion: String = "dev", pollInterval: Double = 0.005,
                corpusFingerprint: String = "") throws {
        self.endpoint = endpoint
        self.corpusFingerprint = corpusFingerprint
        self.auth = auth
        self.rank = rank
        self.worldSize = worldSize
        self.jobId = jobId
        self.prefetch = max(1, prefetch)
        self.pollInterval = pollInterval
        identity = (ProcessInfo.processInfo.hostName, UInt32(ProcessInfo.processInfo.processIdentifier), buildVersion)
        context = try ZMQContext()
        socket = try ZMQSocket(context: context, kind: .dealer)
        try socket.setOption(ZMQ_SNDHWM, Int32(1000))
        try socket.setOption(ZMQ_RECONNECT_IVL, Int32(100))
        try socket.setOption(ZMQ_RECONNECT_IVL_MAX, Int32(1000))
        try auth.configure(socket)
        try socket.connect(endpoint)
        // The thread holds the client only during one iteration, so dropping the last reference
        // ends the thread (deinit stops it) even without an explicit close().
        let t = Thread { [weak self] in
            var loop = LoopState()
            while let client = self, client.iterate(&loop) {}
        }
        t.name = "albef-coord-client"
        thread = t
        t.start()
    }

    deinit { stopThread() }

    /// Stops the background thread after waiting up to `commitTimeout` seconds for pending
    /// checkpoint commits to be acknowledged (other queued messages are sent first, best effort).
    public func close(commitTimeout: Double = 10) {
        if thread !== Thread.current { waitForCheckpointCommits(timeout: commitTimeout) }
        stopThread()
    }

    private func stopThread() {
        lock.withLock { closed = true }
        guard let t = thread, t !== Thread.current else { return }
        while !t.isFinished { usleep(1000) }
    }

    // MARK: - Calls (all non-blocking)

    /// Registers this rank (idempotent; repeated automatically until the coordinator answers, and
    /// again whenever it says it does not know us).
    public func register() {
        enqueue(.registration(Registration(worldSize: worldSize, host: identity.host, pid: identity.pid,
                                           buildVersion: identity.build, session: session, corpusFingerprint: corpusFingerprint)))
        lock.withLock { leaseRequestWanted = true }
    }

    /// The coordinator's answer to ``register()`` (nil until it arrives): resume step and checkpoint.
    public var registration: RegistrationReply? { lock.withLock { _registration } }

    /// Waits up to `timeout` seconds for the coordinator's answer to ``register()`` (nil on timeout
    /// or when the coordinator refused the registration: see ``registrationRefusal``).
    public func waitForRegistration(timeout: Double) -> RegistrationReply? {
        _ = waitUntil(timeout: timeout) { registration != nil || registrationRefusal != nil }
        return registration
    }

    /// The coordinator's error answering a registration (a different corpus index, world size or
    /// job), or nil. The client stops registering once refused.
    public var registrationRefusal: ControlError? { lock.withLock { _registrationRefusal } }

    /// Polls `done` every millisecond until it holds (true) or `timeout` seconds pass or the
    /// background thread has ended (false).
    private func waitUntil(timeout: Double, _ done: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while !done() {
            if Date() >= deadline || thread?.isFinished != false { return false }
            usleep(1000)
        }
        return true
    }

    /// The job state last reported by the coordinator.
    public var jobState: JobState { lock.withLock { _jobState } }

    /// True once the coordinator said there is no more data in any epoch and the queue is empty.
    public var isExhausted: Bool { lock.withLock { _exhausted && leaseQueue.isEmpty } }

    /// The last error the coordinator replied with (for logs).
    public var lastError: ControlError? { lock.withLock { _lastError } }

    /// Liveness signal with this step's timings (fire-and-forget).
    public func sendHeartbeat(step: UInt64, stepSeconds: Double = 0, timings: [PhaseTime] = []) {
        let ack = lock.withLock { lastCommandId }
        enqueue(.heartbeat(Heartbeat(step: step, stepSeconds: stepSeconds, timings: timings, lastCommandId: ack)))
    }

    /// Losses, throughput and phase times (rank 0 reports the global view; fire-and-forget).
    public func reportProgress(_ report: ProgressReport) {
        enqueue(.progress(report))
    }

    /// Asks for the lease queue to be topped up now (it is also topped up automatically).
    public func requestLeases() {
        lock.withLock { leaseRequestWanted = true }
    }

    /// The next prefetched lease, or nil if none has arrived yet (never waits).
    public func nextLease() -> Lease? {
        lock.withLock {
            guard !leaseQueue.isEmpty else {
                leaseRequestWanted = true
                return nil
            }
            let lease = leaseQueue.removeFirst()
            takenThrough = max(takenThrough, lease.id)
            leaseRequestWanted = true  // top the queue up again right away
            return lease
        }
    }

    /// Waits up to `timeout` seconds for a lease (for start-up and tests; training loops use
    /// ``nextLease()``). Returns nil on timeout or when the data is exhausted.
    public func waitForLease(timeout: Double) -> Lease? {
        let deadline = Date().addingTimeInterval(timeout)
        repeat {
            if let lease = nextLease() { return lease }
            if isExhausted { return nil }
            usleep(1000)
        } while Date() < deadline
        return nil
    }

    /// What ``takeLease(epoch:)`` found.
    public enum LeaseTake: Equatable, Sendable {
        /// The next lease of the epoch (now taken, as by ``nextLease()``).
        case lease(Lease)
        /// No more leases of the epoch will come: the next one belongs to a later epoch, or the
        /// coordinator has nothing more for this rank.
        case epochEnded
        /// None has arrived yet.
        case waiting
    }

    /// The next lease of epoch `epoch`, in grant order. Leases of earlier epochs at the head of the
    /// queue are discarded (an epoch the ranks ended before reading them; the coordinator drops
    /// them when that epoch's checkpoint commits); one of a later epoch stays queued for it.
    public func takeLease(epoch: UInt32) -> LeaseTake {
        lock.withLock {
            while let head = leaseQueue.first, head.epoch < epoch {
                takenThrough = max(takenThrough, head.id)
                leaseQueue.removeFirst()
                leaseRequestWanted = true
            }
            if let head = leaseQueue.first {
                if head.epoch > epoch { return .epochEnded }
                leaseQueue.removeFirst()
                takenThrough = max(takenThrough, head.id)
                leaseRequestWanted = true
                return .lease(head)
            }
            leaseRequestWanted = true
            return _exhausted ? .epochEnded : .waiting
        }
    }

    /// Leases queued locally (not yet handed out by ``nextLease()``).
    public var queuedLeases: Int { lock.withLock { leaseQueue.count } }

    /// Finished a lease: every sample was used.
    public func completeLease(_ lease: Lease) {
        returnLease(lease, consumed: lease.count)
    }

    /// Gives a lease back having used its first `consumed` samples; the rest is re-issued.
    public func returnLease(_ lease: Lease, consumed: UInt64) {
        let r = LeaseReturn(leaseId: lease.id, consumed: min(consumed, lease.count))
        lock.withLock {
            unconfirmedReturns[lease.id] = r
            outbox.append(.leaseReturn(r))
        }
    }

    /// Rank 0, once a checkpoint is durable: records every rank's data position in the ledger.
    /// Delivered reliably (resent until acknowledged; see the type's documentation).
    public func commitCheckpoint(step: UInt64, path: String, positions: [DataPosition], epochsDone: UInt32 = 0) {
        lock.withLock { commits.append(CheckpointCommitted(step: step, path: path, positions: positions, epochsDone: epochsDone)) }
    }

    /// Checkpoint commits not yet acknowledged by the coordinator.
    public var pendingCheckpointCommits: Int { lock.withLock { commits.count } }

    /// The newest checkpoint step the coordinator is known to have in its ledger: the latest
    /// acknowledged commit, or the resume step it named at registration. A job restarted by the
    /// coordinator resumes from this checkpoint or a newer one, so older ones may be deleted.
    public var acknowledgedCheckpointStep: UInt64? {
        lock.withLock {
            let resume = _registration.map(\.resumeStep).flatMap { $0 > 0 ? $0 : nil }
            switch (_acknowledgedCheckpointStep, resume) {
            case let (a?, r?): return max(a, r)
            case let (a, r): return a ?? r
            }
        }
    }
    private var _acknowledgedCheckpointStep: UInt64?

    /// Waits until every checkpoint commit was acknowledged (or refused); false on timeout.
    @discardableResult
    public func waitForCheckpointCommits(timeout: Double) -> Bool {
        waitUntil(timeout: timeout) { pendingCheckpointCommits == 0 }
    }

    /// A sample that failed at training time (counted and shown by `albef-coord status`).
    public func reportBadSample(shard: UInt32, key: String, kind: String) {
        enqueue(.badSample(BadSampleReport(shard: shard, key: key, kind: kind)))
    }

    /// The next command for the job (rank 0 only), or nil. Each command is returned once.
    public func pollCommand() -> Command? {
        lock.withLock { commands.isEmpty ? nil : commands.removeFirst() }
    }

    /// Messages put on the wire so far.
    public var messagesSent: UInt64 { lock.withLock { _messagesSent } }

    // MARK: - Background thread

    private func enqueue(_ body: Body) {
        lock.withLock { outbox.append(body) }
    }

    /// What the background thread remembers between iterations.
    private struct LoopState {
        var seq: UInt64 = 0
        var lastRegistrationSent = -Double.infinity
        var lastLeaseRequest = -Double.infinity
        var pendingRegistration: Body?
    }

    @discardableResult
    private func send(_ body: Body, _ loop: inout LoopState) -> UInt64 {
        loop.seq += 1
        let env = Envelope(jobId: jobId, authToken: auth.token, seq: loop.seq, rank: rank, body: body)
        if (try? socket.send([env.encoded()], dontWait: true)) == true {
            lock.withLock { _messagesSent += 1 }
        }
        return loop.seq
    }

    /// One turn of the background thread: send what was queued, register / top up leases when
    /// due, wait up to `pollInterval` for replies and apply them. Returns false once closed.
    private func iterate(_ loop: inout LoopState) -> Bool {
        let (batch, isClosed) = lock.withLock { () -> ([Body], Bool) in
            defer { outbox.removeAll(keepingCapacity: true) }
            return (outbox, closed)
        }
        let now = Date().timeIntervalSince1970
        for body in batch {
            if case .registration = body {
                loop.pendingRegistration = body
                loop.lastRegistrationSent = now
                let seq = send(body, &loop)
                lock.withLock { _ = registrationSeqs.insert(seq) }
                continue
            }
            send(body, &loop)
        }
        if isClosed { return false }
        let (registered, refused) = lock.withLock { (_registration != nil, _registrationRefusal != nil) }
        if !registered, !refused, let reg = loop.pendingRegistration, now - loop.lastRegistrationSent > 1.0 {
            let seq = send(reg, &loop)
            lock.withLock { _ = registrationSeqs.insert(seq) }
            loop.lastRegistrationSent = now
        }
        let last = loop.lastLeaseRequest
        let wantLeases = lock.withLock { () -> Bool in
            registered && !_exhausted && leaseQueue.count < Int(prefetch) && (leaseRequestWanted || now - last > 2.0)
        }
        // The oldest unacknowledged checkpoint commit: sent once registered, resent until answered.
        let commit = lock.withLock { () -> CheckpointCommitted? in
            guard registered, let c = commits.first, commitSeqs.isEmpty || now - commitLastSent >= _commitRetryInterval else { return nil }
            commitLastSent = now
            return c
        }
        if let commit {
            let seq = send(.checkpointCommitted(commit), &loop)
            lock.withLock { if commits.first == commit { commitSeqs.insert(seq) } }
        }
        if wantLeases && now - loop.lastLeaseRequest > 0.05 {
            let taken = lock.withLock { takenThrough }
            send(.leaseRequest(LeaseRequest(want: prefetch, takenThrough: taken)), &loop)
            loop.lastLeaseRequest = now
            lock.withLock { leaseRequestWanted = false }
        }
        guard (try? socket.waitReadable(timeoutMs: Int(pollInterval * 1000))) == true else { return true }
        while let frames = try? socket.receive(dontWait: true), let payload = frames.last {
            guard let env = try? Envelope(decoding: payload), let body = env.body else { continue }
            if handle(body, replyTo: env.replyTo), let reg = loop.pendingRegistration {
                let seq = send(reg, &loop)
                lock.withLock { _ = registrationSeqs.insert(seq) }
                loop.lastRegistrationSent = Date().timeIntervalSince1970
            }
        }
        return true
    }

    /// Applies one reply; returns true when we must register again.
    private func handle(_ body: Body, replyTo: UInt64) -> Bool {
        lock.withLock {
            if replyTo != 0 && commitSeqs.contains(replyTo) {
                // The answer to the commit on the wire: acknowledged (or a duplicate of a durable
                // one), or refused (e.g. superseded by a later checkpoint); either way it is settled.
                if case .error(let e) = body { _lastError = e } else { _acknowledgedCheckpointStep = max(_acknowledgedCheckpointStep ?? 0, commits[0].step) }
                commits.removeFirst()
                commitSeqs = []
                commitLastSent = -Double.infinity
            }
            if replyTo != 0, registrationSeqs.contains(replyTo), case .error(let e) = body, e.code == .badRequest || e.code == .wrongJob || e.code == .unauthenticated || e.code == .unsupportedVersion {
                // The registration itself was refused (another corpus, world size or job).
                _registrationRefusal = e
                _lastError = e
                return false
            }
            switch body {
            case .registrationReply(let r):
                _registration = r
                _jobState = r.jobState
                leaseRequestWanted = true
            case .leaseGrant(let g):
                let listed = Set(g.leases.map(\.id))
                for lease in g.leases where lease.id > highestLeaseId {
                    leaseQueue.append(lease)
                    highestLeaseId = lease.id
                }
                // A grant lists every lease the coordinator thinks we hold: returns it no longer
                // lists are confirmed; ones it still lists were lost (resend them, idempotently).
                for (id, r) in unconfirmedReturns {
                    if listed.contains(id) {
                        if lastGrantSawReturn[id, default: 0] >= 1 {
                            outbox.append(.leaseReturn(r))
                        }
                        lastGrantSawReturn[id, default: 0] += 1
                    } else if id <= highestLeaseId {
                        unconfirmedReturns[id] = nil
                        lastGrantSawReturn[id] = nil
                    }
                }
                _exhausted = g.exhausted
            case .heartbeatReply(let h):
                _jobState = h.jobState
                for c in h.commands { accept(c) }
            case .command(let c):
                accept(c)
            case .error(let e):
                _lastError = e
                if e.code == .notRegistered || e.code == .jobFailed {
                    // A new attempt (rollback) or a failed job: positions of this one must never be
                    // committed into the next one.
                    commits = []
                    commitSeqs = []
                }
                if e.code == .notRegistered {
                    _registration = nil
                    return true
                }
                if e.code == .jobFailed { _jobState = .failed }
            default:
                break
            }
            return false
        }
    }

    /// Queues a command once (called with the lock held).
    private func accept(_ c: Command) {
        guard c.id > lastCommandId else { return }
        lastCommandId = c.id
        commands.append(c)
    }
}
