import CZMQ
import Foundation

/// The coordinator process: a ZeroMQ ROUTER loop around ``CoordinatorState``.
///
/// Each turn waits for messages (up to `pollInterval`, or until the snapshot writer pokes it),
/// handles a bounded batch of frames, ticks the heartbeat clock and, if a durable change
/// happened, hands a copy of the state to the snapshot writer thread once it is ready for one
/// (group commit). A reply leaves only once the state it depends on is on disk (status and error
/// replies, which change nothing, leave at once), so a coordinator crash can never un-grant a
/// lease a rank has seen. Status requests jump the queue: the socket is drained into an inbox
/// between units of work and each status request found is answered at once (from a reply at most
/// `statusMaxAge` old while nothing durable changed). Undecodable, unauthenticated or misdirected
/// frames are counted and answered with an error and never change the state; frames over
/// `ZMQ_MAXMSGSIZE` (1 MiB) make libzmq drop the sender's connection.
public final class CoordinatorServer: @unchecked Sendable {
    /// Transport settings.
    public struct Options: Sendable {
        /// Endpoint to bind (`tcp://*:5555`, `tcp://127.0.0.1:*`).
        public var bind: String
        /// CURVE server keypair; nil for plain TCP (then use a job token).
        public var curve: CurveKeyPair?
        /// With CURVE: the client public keys (Z85) admitted by the ZAP handler; nil admits any
        /// client that knows the server's public key.
        public var allowedClients: [String]?
        /// Longest wait for a message before ticking the clock.
        public var pollInterval: Double = 0.05
        /// Frames handled per turn (between two heartbeat ticks, snapshot hand-offs and reply releases).
        public var maxBatch = 128
        /// A status reply is reused this long unless the state changed durably meanwhile (a
        /// burst of status requests, e.g. many watchers, costs one reply build).
        public var statusMaxAge: Double = 0.05
        /// Least time between two snapshot writes (bursts coalesce).
        public var minSnapshotInterval: Double = 0.05
        /// Soft changes (heartbeats, metrics) are saved at most this often.
        public var softSnapshotInterval: Double = 2
        /// Once the job is stopped or done, keep answering status this long, then return from `run`.
        public var lingerAfterFinish: Double? = nil
        /// Polled every turn; true makes `run` return (e.g. set by a signal handler).
        public var shouldStop: (@Sendable () -> Bool)? = nil
        /// Called (on the loop thread) for every status request answered: its envelope `seq`, and
        /// when it was received and its reply handed to ZeroMQ (`DispatchTime` nanoseconds).
        /// For latency breakdowns (`albef-coord bench`).
        public var onStatusAnswered: (@Sendable (_ seq: UInt64, _ receivedNs: UInt64, _ sentNs: UInt64) -> Void)? = nil
        public init(bind: String, curve: CurveKeyPair? = nil) {
            self.bind = bind
            self.curve = curve
        }
    }

    public let options: Options
    public let store: SnapshotStore?
    /// The endpoint actually bound (ephemeral ports resolved).
    public let endpoint: String
    private let context: ZMQContext
    private let socket: ZMQSocket
    /// ZeroMQ authentication (ZAP) handler socket when CURVE clients are restricted.
    private let zap: ZMQSocket?
    /// Connections refused by the ZAP handler.
    public var refusedConnections: UInt64 { lock.withLock { _refused } }
    private var _refused: UInt64 = 0
    private let lock = NSLock()
    private var _state: CoordinatorState
    private var stopRequested = false
    private var crashRequested = false
    private var writer: SnapshotWriter? = nil
    private var submittedDurable: UInt64
    private var submittedSoft: UInt64
    private var lastSubmit: Double = 0
    /// Replies waiting until the durable version they depend on is on disk, in the order they
    /// were made (so their versions never decrease); `heldHead` is the first one not yet sent.
    private var held: [(Outgoing, UInt64)] = []
    private var heldHead = 0
    /// Frames handled (for benchmarks).
    public var framesHandled: UInt64 { lock.withLock { _frames } }
    private var _frames: UInt64 = 0
    private let clock: @Sendable () -> Double
    /// The last status reply built, when, at which durable version, and its encoding once sent
    /// (loop thread only).
    private var statusCache: (reply: StatusReply, at: Double, durable: UInt64, wire: [UInt8]?)?

    /// A copy of the current state (thread-safe).
    public var state: CoordinatorState { lock.withLock { _state } }

    /// Binds the ROUTER socket. `state` is typically from ``openState(config:index:store:)``.
    public init(state: CoordinatorState, store: SnapshotStore?, options: Options,
                clock: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }) throws {
        self.options = options
        self.store = store
        self.clock = clock
        _state = state
        submittedDurable = state.durableVersion
        submittedSoft = state.softVersion
        context = try ZMQContext()
        if options.curve != nil, options.allowedClients != nil {
            let handler = try ZMQSocket(context: context, kind: .rep)
            try handler.bind("inproc://zeromq.zap.01")
            zap = handler
        } else {
            zap = nil
        }
        socket = try ZMQSocket(context: context, kind: .router)
        try socket.setOption(ZMQ_MAXMSGSIZE, int64: Int64(Envelope.maxWireSize))
        try socket.setOption(ZMQ_ROUTER_HANDOVER, Int32(1))
        try socket.setOption(ZMQ_SNDHWM, Int32(10_000))
        try socket.setOption(ZMQ_RCVHWM, Int32(10_000))
        if let curve = options.curve { try socket.makeCurveServer(secretKey: curve.secretKey) }
        try socket.bind(options.bind)
        endpoint = try socket.lastEndpoint
        // Started last, so a failed bind leaves no thread behind.
        writer = store.map { SnapshotWriter(store: $0, savedVersion: state.durableVersion, minInterval: options.minSnapshotInterval) }
        _state.resumeAfterRestart(now: clock())
    }

    deinit { writer?.finish() }

    /// Loads the job's snapshot from `store` if there is one (checking it is the same job and corpus),
    /// else starts a new state. A resumed job keeps its saved plan settings (seed, lease size,
    /// epochs; `warnings` lists any the command line tried to change) and takes the operational
    /// ones (token, heartbeat timeout, prefetch) from `config`. A different world size starts a
    /// new attempt from the last committed checkpoint.
    public static func openState(config: CoordinatorConfig, index: CorpusIndex, store: SnapshotStore?,
                                 warnings: ((String) -> Void)? = nil) throws -> CoordinatorState {
        let fresh = CoordinatorState(config: config, index: index)
        guard let store, var saved = try store.load() else { return fresh }
        if saved.config.jobId != config.jobId {
            throw CoordinatorError.snapshotMismatch(path: store.url.path, reason: "it holds job \"\(saved.config.jobId)\", not \"\(config.jobId)\"")
        }
        if saved.corpusFingerprint != fresh.corpusFingerprint || saved.shardPaths != fresh.shardPaths {
            throw CoordinatorError.snapshotMismatch(path: store.url.path, reason: "the corpus index changed (\(saved.corpusFingerprint) -> \(fresh.corpusFingerprint))")
        }
        let differences = saved.config.planDifferences(from: config)
        if !differences.isEmpty {
            warnings?("resuming job \(config.jobId) with its saved plan settings; ignoring \(differences.joined(separator: ", ")) (saved vs given)")
        }
        saved.applyOperationalSettings(from: config)
        if saved.config.worldSize != config.worldSize {
            let from = saved.checkpoints.last.map { "checkpoint step \($0.step)" } ?? "the start"
            warnings?("world size \(saved.config.worldSize) -> \(config.worldSize): starting a new attempt from \(from)")
            saved.changeWorldSize(to: config.worldSize)
        }
        return saved
    }

    /// Applies `change` to the live state under the lock (tests and admin tools; the change is
    /// snapshotted at the next turn). Not part of the protocol.
    public func mutateState(_ change: (inout CoordinatorState) -> Void) {
        lock.withLock { change(&_state) }
    }

    /// Closes the ROUTER socket (after `run` has returned); the port is released shortly after.
    public func close() { socket.close() }

    /// Asks `run` to return after its current turn (thread-safe).
    public func stop() { lock.withLock { stopRequested = true } }

    /// Tests: makes `run` return after its current turn as if the process had been killed: no
    /// further snapshot is written and the replies waiting for one are never sent.
    func simulateCrash() { lock.withLock { stopRequested = true; crashRequested = true } }

    /// Serves until ``stop()`` (or, with `lingerAfterFinish`, until the job has finished).
    /// Returns after the last snapshot is on disk and every held reply was sent.
    public func run() throws {
        var finishedAt: Double?
        defer { writer?.finish() }
        while !lock.withLock({ stopRequested }) && options.shouldStop?() != true {
            try turn()
            if let linger = options.lingerAfterFinish {
                let st = state.jobState
                if st == .stopped || st == .done {
                    let now = clock()
                    if finishedAt == nil { finishedAt = now }
                    if let f = finishedAt, now - f >= linger { break }
                }
            }
        }
        if lock.withLock({ crashRequested }) {
            writer?.abandon()
            return
        }
        submitSnapshot(force: true)
        writer?.finish()
        if let error = writer?.error { throw error }
        try releaseHeld()
    }

    /// Runs ``run()`` on a new thread (for tests and the benchmark).
    @discardableResult
    public func startInBackground() -> Thread {
        let thread = Thread { [self] in
            do { try self.run() } catch { FileHandle.standardError.write(Data("albef-coord: \(error)\n".utf8)) }
        }
        thread.stackSize = 4 << 20
        thread.start()
        return thread
    }

    /// One loop iteration: wait for frames (or the writer's poke), handle a bounded batch in
    /// arrival order, tick, hand a snapshot to the writer, send the replies whose state is durable
    /// (status and errors need no durability).
    ///
    /// Status requests never queue behind rank messages: the socket is drained into an inbox
    /// before and between units of work (``answerStatusRequests()``), status requests found there
    /// are answered and sent at once, everything else waits in the inbox for its turn.
    public func turn() throws {
        if let error = writer?.error { throw error }
        var sockets = [socket]
        if let zap { sockets.append(zap) }
        // The writer's wake pipe ends the wait when a snapshot lands (held replies can go out) or
        // when it is ready for a state we have.
        let wake = writer.map { [$0.wakeFD] } ?? []
        let timeout = inbox.count > inboxHead ? 0 : Int(options.pollInterval * 1000)
        let ready = try ZMQSocket.waitReadable(sockets, fds: wake, timeoutMs: timeout)
        if zap != nil && ready[1] { try answerZAP() }
        if !wake.isEmpty && ready[sockets.count] { writer?.drainWake() }
        try answerStatusRequests()
        var out: [Outgoing] = []
        var n = 0
        while n < options.maxBatch && inboxHead < inbox.count {
            out += handle(inbox[inboxHead])
            inboxHead += 1
            n += 1
            if n % Self.statusCheckEvery == 0 { try answerStatusRequests() }
        }
        compactQueue(&inbox, head: &inboxHead)
        let now = clock()
        let durable: UInt64 = lock.withLock {
            out += _state.tick(now: now)
            return _state.durableVersion
        }
        submitSnapshot(force: false)
        for (i, o) in out.enumerated() {
            switch o.envelope.body {
            case .statusReply?, .error?: send(o)
            default:
                if writer == nil { send(o) } else { held.append((o, durable)) }
            }
            if i % Self.statusCheckEvery == Self.statusCheckEvery - 1 { try answerStatusRequests() }
        }
        try releaseHeld()
    }

    /// Units of work (frames handled, replies sent) between two looks for status requests.
    static let statusCheckEvery = 32
    /// Frames received and waiting to be handled, in arrival order (`inboxHead` is the next one).
    private var inbox: [(Peer, Result<Envelope, Error>, Int)] = []
    private var inboxHead = 0
    /// The inbox takes at most this many frames; beyond, they wait in the socket (high-water mark).
    static let maxInbox = 20_000

    /// Receives everything queued on the socket: status requests are answered and sent at once,
    /// other frames go to the inbox.
    private func answerStatusRequests() throws {
        while inbox.count - inboxHead < Self.maxInbox, let frames = try socket.receive(dontWait: true) {
            let received = options.onStatusAnswered == nil ? 0 : DispatchTime.now().uptimeNanoseconds
            guard let frame = decode(frames) else { continue }
            if case .success(let env) = frame.1, case .statusRequest? = env.body {
                handle(frame).forEach(sendStatus)
                options.onStatusAnswered?(env.seq, received, DispatchTime.now().uptimeNanoseconds)
            } else {
                inbox.append(frame)
            }
        }
    }

    /// Answers pending ZAP requests (RFC 27): admit a CURVE client whose public key is allowed.
    private func answerZAP() throws {
        guard let zap else { return }
        while let frames = try zap.receive(dontWait: true) {
            guard frames.count >= 6 else { continue }
            let mechanism = String(decoding: frames[5], as: UTF8.self)
            let key = frames.count > 6 ? z85Encode(frames[6]) : nil
            let allowed = mechanism == "CURVE" && key.map { options.allowedClients?.contains($0) ?? true } == true
            if !allowed {
                lock.withLock {
                    _refused &+= 1
                    _state.noteRefusedConnection()
                }
            }
            try zap.send([Array("1.0".utf8), frames[1], Array((allowed ? "200" : "400").utf8),
                          Array((allowed ? "OK" : "client key not admitted").utf8), [], []])
        }
    }

    private func send(_ o: Outgoing) {
        _ = try? socket.send([o.peer.id, o.envelope.encoded()], dontWait: true)
    }

    /// Sends a reply to a status request, encoding a cached reply's body only once: protobuf
    /// messages concatenate as a merge, so the envelope's constant part with the body (encoded
    /// once per cached reply) followed by a body-less envelope holding this reply's `seq` and
    /// `reply_to` is this reply's encoding.
    private func sendStatus(_ o: Outgoing) {
        guard case .statusReply(let reply)? = o.envelope.body, var c = statusCache, c.reply == reply else { return send(o) }
        if c.wire == nil {
            var constant = o.envelope
            constant.seq = 0
            constant.replyTo = 0
            c.wire = constant.encoded()
            statusCache = c
        }
        var header = o.envelope
        header.body = nil
        header.jobId = ""
        _ = try? socket.send([o.peer.id, (c.wire ?? []) + header.encoded()], dontWait: true)
    }

    private func releaseHeld() throws {
        guard let writer, heldHead < held.count else { return }
        let saved = writer.savedVersion
        var n = 0
        while heldHead < held.count && held[heldHead].1 <= saved {
            send(held[heldHead].0)
            heldHead += 1
            n += 1
            if n % Self.statusCheckEvery == 0 { try answerStatusRequests() }
        }
        compactQueue(&held, head: &heldHead)
    }

    /// Hands the writer a copy of the state when a durable change happened (or, every
    /// `softSnapshotInterval`, a soft one) and the writer is ready for it; else asks the writer
    /// to poke the loop when it is. `force` (shutdown): any change, handed over at once.
    private func submitSnapshot(force: Bool) {
        guard let writer else { return }
        let now = clock()
        let due: Bool = lock.withLock {
            let softDue = _state.softVersion != submittedSoft && (force || now - lastSubmit >= options.softSnapshotInterval)
            return _state.durableVersion != submittedDurable || softDue
        }
        guard due else { return }
        // Shutdown hands the state over at once (`finish()` then cuts the cool-down short).
        guard force || writer.isReady else { return writer.want() }
        let snapshot: CoordinatorState = lock.withLock {
            submittedDurable = _state.durableVersion
            submittedSoft = _state.softVersion
            return _state
        }
        lastSubmit = now
        writer.submit(snapshot)
    }

    /// Peer and decoded envelope of a ROUTER message (nil: not even a routing frame); the last
    /// element is -1 for one payload frame, else the number of frames (an error).
    private func decode(_ frames: [[UInt8]]) -> (Peer, Result<Envelope, Error>, Int)? {
        guard frames.count >= 2 else { return nil }
        let payloadFrames = frames.dropFirst().filter { !$0.isEmpty }
        let decoded: Result<Envelope, Error>
        if payloadFrames.count == 1, let payload = payloadFrames.first {
            decoded = Result { try Envelope(decoding: payload) }
        } else {
            decoded = .failure(CodecError.malformed(byteCount: frames.dropFirst().reduce(0) { $0 + $1.count }))
        }
        return (Peer(frames[0]), decoded, payloadFrames.count == 1 ? -1 : frames.count - 1)
    }

    /// Runs one decoded message through the state machine (status replies from the cache).
    private func handle(_ frame: (Peer, Result<Envelope, Error>, Int)) -> [Outgoing] {
        let (peer, decoded, frameCount) = frame
        let now = clock()
        return lock.withLock {
            _frames &+= 1
            switch decoded {
            case .success(let env): return _state.handle(env, from: peer, now: now, status: { cachedStatus($0, now: now) })
            case .failure(let error):
                let reason = frameCount < 0 ? "\(error)" : "expected one non-empty payload frame, got \(frameCount) frames"
                return _state.handleUndecodable(from: peer, reason: reason)
            }
        }
    }

    /// The status reply for `state`, reused for up to `statusMaxAge` seconds while no durable
    /// change happened (lock held).
    private func cachedStatus(_ state: CoordinatorState, now: Double) -> StatusReply {
        if let c = statusCache, c.durable == state.durableVersion, now >= c.at, now - c.at < options.statusMaxAge { return c.reply }
        let reply = state.status(now: now)
        statusCache = (reply, now, state.durableVersion, nil)
        return reply
    }
}

/// Drops the consumed prefix `[0, head)` of a FIFO kept as an array and a head index: all of it
/// when everything was consumed, else once the prefix is long enough to be worth the move.
func compactQueue<T>(_ queue: inout [T], head: inout Int) {
    if head == queue.count {
        queue.removeAll(keepingCapacity: true)
        head = 0
    } else if head > 4096 {
        queue.removeFirst(head)
        head = 0
    }
}
