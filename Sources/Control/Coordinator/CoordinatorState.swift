import Foundation

/// The coordinator's whole truth as a pure state machine: `handle(message, from:, now:)` returns
/// the messages to send and mutates nothing else, so it is tested without sockets and saved to disk
/// as one Codable value (see ``SnapshotStore``).
///
/// It owns the epoch plan (``LeasePlanner``), the leases per rank (up to K outstanding, identified by
/// increasing ids, regranted idempotently), heartbeats (a silent rank fails the job at its last
/// committed checkpoint; a rank relaunched as a new process restarts it there, see
/// `isRelaunch`), the checkpoint registry and the ledger of committed sample ranges (exact
/// accounting: on rollback, everything leased after the checkpoint is re-issued; nothing is lost
/// and nothing duplicated), commands for rank 0, bad-sample reports and aggregated metrics.
///
/// Concretely, the ledger invariant: for every epoch, the committed ranges, the dropped ranges
/// (what a finished epoch left: its tail and the ends of the ranks' streams past the agreed last
/// step), the ranges in live leases (beyond their committed prefix) and the planner's queues (with
/// the streams of epochs not started yet) partition the epoch's samples.
public struct CoordinatorState: Codable, Sendable {
    /// What the coordinator knows about a rank.
    public struct RankRecord: Codable, Hashable, Sendable {
        public var rank: Int32
        public var host: String
        public var pid: UInt32
        public var buildVersion: String
        public var session: UInt64
        public var peer: Peer
        public var lastSeen: Double
        public var lastSeq: UInt64
        public var step: UInt64
        public var health: RankHealth
        public var lastCommandId: UInt64
        public var want: UInt32
        /// Highest lease id the rank said it has started reading.
        public var takenThrough: UInt64 = 0
        public var timings: [PhaseTime]
        public var stepSeconds: Double = 0
    }

    /// A lease not yet fully committed.
    public struct LeaseRecord: Codable, Hashable, Sendable {
        public var lease: Lease
        public var rank: Int32
        /// nil while the rank holds it; else how many samples it used before returning it.
        public var returnedConsumed: UInt64?
        /// Samples of this lease already recorded in a committed checkpoint.
        public var committedOffset: UInt64
        public var isOutstanding: Bool { returnedConsumed == nil }
        /// Samples of the lease the rank used or still holds, beyond the committed prefix.
        var uncommitted: SampleRange { lease.range(from: committedOffset, to: returnedConsumed ?? lease.count) }
    }

    /// A committed checkpoint and the sample ranges it committed (since the previous one).
    public struct CheckpointRecord: Codable, Hashable, Sendable {
        public var step: UInt64
        public var path: String
        public var positions: [DataPosition]
        public var ranges: [SampleRange]
        /// Samples committed by this and every earlier checkpoint.
        public var committedSamples: UInt64
        /// Samples this checkpoint recorded as dropped (it finished epochs).
        public var dropped: [SampleRange] = []
        /// Epochs finished at this checkpoint.
        public var epochsDone: Int = 0
    }

    /// The committed checkpoints older than the detailed ones, folded into one record: their
    /// number, the newest step among them and the union of their ranges. Their positions and
    /// per-checkpoint ranges are gone, so the job cannot roll back to them (only to a detailed one
    /// or to the start); that keeps snapshots from growing with the job's length.
    public struct FoldedCheckpoints: Codable, Hashable, Sendable {
        public var count: Int
        public var throughStep: UInt64
        public var ranges: [SampleRange]
        public var dropped: [SampleRange] = []
        public var epochsDone: Int = 0
    }

    /// Latest global metrics (from rank 0's progress reports).
    public struct Metrics: Codable, Hashable, Sendable {
        public var step: UInt64 = 0
        public var samples: UInt64 = 0
        public var losses = Losses()
        public var samplesPerSecond: Double = 0
        public var phases: [PhaseTime] = []
        public var epoch: UInt32 = 0
    }

    public private(set) var config: CoordinatorConfig
    public let shardPaths: [String]
    /// Identifies the corpus this state was planned for ("shards:samples").
    public let corpusFingerprint: String
    public private(set) var planner: LeasePlanner
    public private(set) var jobState: JobState = .waiting
    public private(set) var failureReason = ""
    public private(set) var ranks: [Int32: RankRecord] = [:]
    public private(set) var leases: [UInt64: LeaseRecord] = [:]
    public private(set) var nextLeaseId: UInt64 = 1
    public private(set) var nextCommandId: UInt64 = 1
    /// Commands not yet acknowledged by rank 0.
    public private(set) var pendingCommands: [Command] = []
    /// The newest committed checkpoints, with positions and ranges (at most
    /// `detailedCheckpointLimit`; older ones are in `folded`).
    public private(set) var checkpoints: [CheckpointRecord] = []
    public private(set) var folded: FoldedCheckpoints?
    /// How many committed checkpoints keep their positions and ranges (nil: 32). A rollback can
    /// go back that far; workers keep fewer on disk anyway (`--keep-checkpoints`).
    public var detailedCheckpoints: Int?
    public var detailedCheckpointLimit: Int { max(1, detailedCheckpoints ?? 32) }
    /// Committed sample ranges (merged), i.e. the union of `folded.ranges` and `checkpoints[*].ranges`.
    public private(set) var ledger: [SampleRange] = []
    /// Samples recorded as dropped at epoch ends (merged; `folded.dropped` ∪ `checkpoints[*].dropped`).
    public private(set) var dropped: [SampleRange] = []
    /// Epochs finished: the newest committed checkpoint's `epochsDone`.
    public var epochsDone: Int { checkpoints.last?.epochsDone ?? folded?.epochsDone ?? 0 }
    public let badSamplesIndexed: UInt64
    public private(set) var badSamplesReported: Set<String> = []
    /// Reported bad samples by kind (each shard/key counted once).
    public private(set) var badByKind: [String: UInt64] = [:]
    /// Every reported bad sample, in arrival order (each shard/key once); the server appends new
    /// ones to `quarantine.jsonl` in the state directory.
    public private(set) var quarantine: [BadSampleReport] = []
    public private(set) var metrics = Metrics()
    /// Messages rejected (unauthenticated, malformed, out of order, ...).
    public private(set) var droppedMessages: UInt64 = 0
    public private(set) var receivedMessages: UInt64 = 0
    /// Incremented when the job starts over from a checkpoint.
    public private(set) var attempt: UInt32 = 1
    /// What happened to the job, oldest first: ranks lost (at which step, from which host), the
    /// restarts from committed checkpoints, world size changes (`albef-coord status` shows them).
    public private(set) var events: [String] = []
    /// Bumped by every change that must be on disk before replies go out.
    public private(set) var durableVersion: UInt64 = 0
    /// Bumped by changes worth saving eventually (metrics, heartbeats).
    public private(set) var softVersion: UInt64 = 0
    private var outSeq: UInt64 = 0

    public init(config: CoordinatorConfig, index: CorpusIndex) {
        self.config = config
        shardPaths = index.shards.map(\.path)
        corpusFingerprint = index.fingerprint
        planner = LeasePlanner(shardSamples: index.shards.map(\.samples), seed: config.seed,
                               leaseSize: Int(max(1, config.leaseSize)), epochs: Int(config.epochs),
                               worldSize: Int(max(1, config.worldSize)))
        badSamplesIndexed = UInt64(index.badSamples)
    }

    // MARK: - Entry points

    /// Handles one decoded message from `peer` at time `now` (seconds) and returns what to send.
    public mutating func handle(_ env: Envelope, from peer: Peer, now: Double) -> [Outgoing] {
        handle(env, from: peer, now: now, status: { $0.status(now: now) })
    }

    /// ``handle(_:from:now:)`` with the body of a status reply supplied by `status` (given the
    /// state; a server may answer with a recent copy instead of building a new one each time).
    public mutating func handle(_ env: Envelope, from peer: Peer, now: Double,
                                status: (CoordinatorState) -> StatusReply) -> [Outgoing] {
        receivedMessages &+= 1
        if env.protocolVersion != Envelope.currentProtocolVersion {
            return reject(peer, env, .unsupportedVersion, "protocol version \(env.protocolVersion); this coordinator speaks \(Envelope.currentProtocolVersion)")
        }
        if let token = config.authToken, env.authToken != token {
            return reject(peer, env, .unauthenticated, "missing or wrong job token")
        }
        // Tools (rank -1) may leave the job id empty: they talk to whatever job this is.
        if env.jobId != config.jobId && !(env.jobId.isEmpty && env.rank < 0) {
            return reject(peer, env, .wrongJob, "job \"\(env.jobId)\" is not this coordinator's job \"\(config.jobId)\"")
        }
        guard let body = env.body else { return reject(peer, env, .malformed, "envelope without a body") }
        switch body {
        case .statusRequest:
            return [reply(peer, env, .statusReply(status(self)))]
        case .command(let command):
            return handleCommandRequest(command, env, peer, now)
        case .registration(let registration):
            return handleRegistration(registration, env, peer, now)
        case .heartbeat, .leaseRequest, .leaseReturn, .progress, .checkpointCommitted, .badSample:
            return handleRankMessage(body, env, peer, now)
        case .registrationReply, .heartbeatReply, .leaseGrant, .statusReply, .error, .ack:
            return reject(peer, env, .badRequest, "\(body.name) is a coordinator-to-client message")
        }
    }

    /// Records a frame that could not be decoded and answers with an error.
    public mutating func handleUndecodable(from peer: Peer, reason: String) -> [Outgoing] {
        receivedMessages &+= 1
        droppedMessages &+= 1
        return [Outgoing(peer: peer, envelope: makeEnvelope(replyTo: 0, .error(ControlError(code: .malformed, message: reason))))]
    }

    /// Takes the settings that may change across a coordinator restart (token, heartbeat timeout,
    /// prefetch depth) from `config`; the plan-defining ones stay as saved.
    public mutating func applyOperationalSettings(from config: CoordinatorConfig) {
        self.config.authToken = config.authToken
        self.config.heartbeatTimeout = config.heartbeatTimeout
        self.config.maxOutstanding = config.maxOutstanding
    }

    /// The job continues with another number of ranks: a new attempt from the last committed
    /// checkpoint (the ledger is exact across world sizes; everything uncommitted is re-issued).
    public mutating func changeWorldSize(to worldSize: UInt32) {
        guard worldSize != config.worldSize else { return }
        rollback()
        config.worldSize = worldSize
        if worldSize > 0 { planner.changeWorldSize(to: Int(worldSize)) }
    }

    /// Counts a connection the transport refused (e.g. a CURVE key not admitted).
    public mutating func noteRefusedConnection() {
        droppedMessages &+= 1
    }

    /// Time passes: ranks silent past the heartbeat timeout are marked lost, which fails the job at
    /// its last committed checkpoint (or ends a stopping job).
    public mutating func tick(now: Double) -> [Outgoing] {
        guard [.waiting, .running, .paused, .stopping].contains(jobState) else { return [] }
        var lost: [Int32] = []
        for (rank, record) in ranks where record.health == .alive && now - record.lastSeen > config.heartbeatTimeout {
            ranks[rank]?.health = .lost
            lost.append(rank)
        }
        guard !lost.isEmpty else { return [] }
        lost.sort()
        if jobState == .stopping {
            jobState = .stopped
        } else {
            let ck = checkpoints.last.map { "checkpoint step \($0.step) (\($0.path))" } ?? "the start (no checkpoint committed)"
            jobState = .failed
            failureReason = "rank \(lost.map(String.init).joined(separator: ", ")) silent for more than \(config.heartbeatTimeout) s; restart the job to resume from \(ck)"
            let who = lost.map { r in "rank \(r)" + (ranks[r].map { " (\($0.host), at step \($0.step))" } ?? "") }.joined(separator: ", ")
            note(now: now, "lost \(who): silent for more than \(config.heartbeatTimeout) s; the job rolls back to \(ck) when its ranks register again")
        }
        durableVersion &+= 1
        return []
    }

    /// After the coordinator itself restarted from a snapshot: give live ranks a fresh heartbeat
    /// window (the outage was ours, not theirs).
    public mutating func resumeAfterRestart(now: Double) {
        for rank in ranks.keys where ranks[rank]?.health == .alive { ranks[rank]?.lastSeen = now }
    }

    /// Starts the job over from a committed checkpoint (the last one by default): checkpoints after
    /// it are dropped, the ledger is restored to it, every range leased after it goes back to the
    /// plan, ranks must register again.
    public mutating func rollback(toStep step: UInt64? = nil) {
        let keep: Int
        if let step, let i = checkpoints.lastIndex(where: { $0.step == step }) { keep = i + 1 } else if step == 0 { keep = 0 } else { keep = checkpoints.count }
        // Committed and dropped samples after the rollback point go back to their ranks' streams
        // (pieces of an epoch's tail stay out: the epoch's next close drops them again).
        var giveBack: [SampleRange] = checkpoints[keep...].flatMap { $0.ranges + $0.dropped }
        if step == 0, let f = folded {
            // Back to the start: the folded history goes back to the plan too.
            giveBack += f.ranges + f.dropped
            folded = nil
        }
        for record in leases.values { giveBack.append(record.uncommitted) }
        checkpoints.removeSubrange(keep...)
        ledger = SampleRange.merged((folded?.ranges ?? []) + checkpoints.flatMap(\.ranges))
        dropped = SampleRange.merged((folded?.dropped ?? []) + checkpoints.flatMap(\.dropped))
        planner.requeue(giveBack)
        leases = [:]
        ranks = [:]
        pendingCommands = []
        jobState = .waiting
        failureReason = ""
        attempt += 1
        metrics.step = checkpoints.last?.step ?? folded?.throughStep ?? 0
        durableVersion &+= 1
    }

    /// Records an event of the job's history (kept to the newest 100).
    mutating func note(now: Double, _ text: String) {
        events.append(ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: now)) + " " + text)
        if events.count > 100 { events.removeFirst(events.count - 100) }
    }

    // MARK: - Registration

    private mutating func handleRegistration(_ r: Registration, _ env: Envelope, _ peer: Peer, _ now: Double) -> [Outgoing] {
        guard env.rank >= 0, config.worldSize == 0 || UInt32(env.rank) < config.worldSize else {
            return reject(peer, env, .badRequest, "rank \(env.rank) outside world size \(config.worldSize)")
        }
        if config.worldSize != 0 && r.worldSize != config.worldSize {
            // A new world (fewer ranks after a lost node, more after a resubmission) takes over a
            // job that failed, that waits for ranks none of which is alive, or whose ranks are
            // being relaunched: a new attempt from the last committed checkpoint, the unconsumed
            // remainder of the epoch re-planned for the new ranks.
            let idle = ranks.values.allSatisfy { $0.health != .alive }
            guard r.worldSize > 0, jobState == .failed || (jobState == .waiting && idle) || isRelaunch(env.rank, r) else {
                return reject(peer, env, .badRequest, "world size \(r.worldSize) != the job's \(config.worldSize) while its ranks are alive; start the coordinator with --world-size \(r.worldSize) or a new --job-id")
            }
            let from = config.worldSize
            changeWorldSize(to: r.worldSize)
            note(now: now, "world size \(from) → \(r.worldSize): attempt \(attempt) resumes from \(checkpoints.last.map { "checkpoint step \($0.step)" } ?? "the start"), the rest of the epoch re-planned")
        }
        if !r.corpusFingerprint.isEmpty && r.corpusFingerprint != corpusFingerprint {
            return reject(peer, env, .badRequest, "rank \(env.rank)'s corpus index (fingerprint \(r.corpusFingerprint)) is not the coordinator's (fingerprint \(corpusFingerprint): \(shardPaths.count) shards, \(planner.samplesPerEpoch) samples, first shard \(shardPaths.first ?? "-")); start the ranks with --corpus set to the index `albef-coord serve --corpus` reads, or the coordinator with the ranks' index")
        }
        if config.worldSize == 0 && r.worldSize > 0 {
            // "Any number of ranks": the first registration fixes it, so the plan can be dealt.
            config.worldSize = r.worldSize
            planner.changeWorldSize(to: Int(r.worldSize))
            guard UInt32(env.rank) < config.worldSize else {
                return reject(peer, env, .badRequest, "rank \(env.rank) outside world size \(config.worldSize)")
            }
        }
        if jobState == .failed || isRelaunch(env.rank, r) {
            let why = jobState == .failed ? "after the failure" : "rank \(env.rank) relaunched (new process on \(r.host)) before the heartbeat timeout"
            rollback()
            note(now: now, "restart \(attempt - 1) \(why): attempt \(attempt) resumes from \(checkpoints.last.map { "checkpoint step \($0.step)" } ?? "the start") with \(config.worldSize) rank(s)")
        }
        if var existing = ranks[env.rank], Self.sameProcess(existing, r), env.seq <= existing.lastSeq {
            // A duplicate (resent after a reconnect): answer the same, change nothing but the route.
            existing.peer = peer
            ranks[env.rank] = existing
            return [reply(peer, env, .registrationReply(registrationReply()))]
        }
        let previous = ranks[env.rank]
        ranks[env.rank] = RankRecord(
            rank: env.rank, host: r.host, pid: r.pid, buildVersion: r.buildVersion, session: r.session, peer: peer, lastSeen: now,
            lastSeq: env.seq, step: previous?.step ?? metrics.step, health: .alive,
            lastCommandId: previous?.lastCommandId ?? 0, want: previous?.want ?? config.maxOutstanding,
            takenThrough: previous?.session == r.session ? previous?.takenThrough ?? 0 : 0, timings: [])
        if jobState == .waiting {
            let alive = ranks.values.filter { $0.health == .alive }.count
            if config.worldSize == 0 || alive >= Int(config.worldSize) { jobState = .running }
        }
        durableVersion &+= 1
        return [reply(peer, env, .registrationReply(registrationReply()))]
    }

    /// True when registration `r` for `rank` comes from a new process while the coordinator
    /// believes the rank's previous process alive in a job still in progress: the job's ranks were
    /// killed and relaunched (e.g. SIGKILL of mpirun, a lost node) before the heartbeat timeout
    /// noticed. The new processes resume from the last committed checkpoint, so the job must too:
    /// the dead processes' leases hold samples they returned or read since that checkpoint, which
    /// the resumed model never trained on; a new process inheriting them would silently skip the
    /// returned ones (they would count as trained at its next checkpoint) and re-read the committed
    /// prefix of the ones still held.
    ///
    /// A new process is a new client session (or pid or host); the same session registering again
    /// (a resend, or after a coordinator restart lost the registration) is the same process. The
    /// first registration of a relaunch rolls back, which forgets every rank, so the relaunched
    /// ranks registering after it are not relaunches again: one rollback per restart. (After the
    /// timeout, the failed job rolls back on the first registration anyway.) Commands of the dead
    /// attempt (a pause, a pending stop) go with it. Stopped and finished jobs are left alone:
    /// nothing runs in them (and their coordinator exits).
    private func isRelaunch(_ rank: Int32, _ r: Registration) -> Bool {
        guard [.waiting, .running, .paused, .stopping].contains(jobState), let existing = ranks[rank], existing.health == .alive else { return false }
        return !Self.sameProcess(existing, r)
    }

    /// A registration from the process the rank record describes (same client session, pid, host).
    private static func sameProcess(_ existing: RankRecord, _ r: Registration) -> Bool {
        existing.session == r.session && existing.pid == r.pid && existing.host == r.host
    }

    private func registrationReply() -> RegistrationReply {
        RegistrationReply(jobState: jobState, resumeStep: checkpoints.last?.step ?? 0,
                          resumeCheckpoint: checkpoints.last?.path ?? "", epoch: UInt32(epochsDone),
                          maxOutstanding: config.maxOutstanding, leaseSize: UInt32(clamping: config.leaseSize),
                          epochs: config.epochs)
    }

    // MARK: - Rank messages

    private mutating func handleRankMessage(_ body: Body, _ env: Envelope, _ peer: Peer, _ now: Double) -> [Outgoing] {
        guard var record = ranks[env.rank] else {
            return reject(peer, env, .notRegistered, "rank \(env.rank) is not registered (send a registration first)")
        }
        let idempotent: Bool
        if case .leaseRequest = body { idempotent = true } else { idempotent = false }
        if !idempotent && env.seq <= record.lastSeq {
            return reject(peer, env, .outOfOrder, "seq \(env.seq) <= last seen \(record.lastSeq) from rank \(env.rank)")
        }
        if jobState == .failed {
            return reject(peer, env, .jobFailed, failureReason)
        }
        if record.health == .lost { return reject(peer, env, .notRegistered, "rank \(env.rank) was marked lost; register again") }
        record.peer = peer
        record.lastSeen = now
        record.lastSeq = max(record.lastSeq, env.seq)
        ranks[env.rank] = record
        softVersion &+= 1

        switch body {
        case .heartbeat(let h): return handleHeartbeat(h, env, peer)
        case .leaseRequest(let r): return handleLeaseRequest(r, env, peer)
        case .leaseReturn(let r): return handleLeaseReturn(r, env, peer)
        case .progress(let p): return handleProgress(p, env)
        case .checkpointCommitted(let c): return handleCheckpoint(c, env, peer)
        case .badSample(let b):
            if badSamplesReported.insert("\(b.shard)/\(b.key)").inserted {
                badByKind[b.kind, default: 0] += 1
                quarantine.append(b)
                durableVersion &+= 1
            }
            return []
        default: return reject(peer, env, .badRequest, "unexpected \(body.name)")
        }
    }

    private mutating func handleHeartbeat(_ h: Heartbeat, _ env: Envelope, _ peer: Peer) -> [Outgoing] {
        let heartbeatStep = max(ranks[env.rank]?.step ?? 0, h.step)
        ranks[env.rank]?.step = heartbeatStep
        ranks[env.rank]?.timings = h.timings
        ranks[env.rank]?.stepSeconds = h.stepSeconds
        if env.rank == 0 && h.lastCommandId > 0 {
            let acked = pendingCommands.filter { $0.id <= h.lastCommandId }
            if !acked.isEmpty {
                pendingCommands.removeAll { $0.id <= h.lastCommandId }
                ranks[0]?.lastCommandId = h.lastCommandId
                if jobState == .stopping && acked.contains(where: { $0.kind == .stop }) { jobState = .stopped }
                durableVersion &+= 1
            }
        }
        let commands = env.rank == 0 ? pendingCommands : []
        return [reply(peer, env, .heartbeatReply(HeartbeatReply(jobState: jobState, commands: commands)))]
    }

    private mutating func handleLeaseRequest(_ r: LeaseRequest, _ env: Envelope, _ peer: Peer) -> [Outgoing] {
        let want = min(max(r.want, 1), config.maxOutstanding)
        if ranks[env.rank]?.want != want { ranks[env.rank]?.want = want }
        let taken = max(ranks[env.rank]?.takenThrough ?? 0, min(r.takenThrough, nextLeaseId - 1))
        if ranks[env.rank]?.takenThrough != taken { ranks[env.rank]?.takenThrough = taken }
        topUp(rank: env.rank, want: want)
        return [reply(peer, env, .leaseGrant(grant(for: env.rank)))]
    }

    private mutating func handleLeaseReturn(_ r: LeaseReturn, _ env: Envelope, _ peer: Peer) -> [Outgoing] {
        if let record = leases[r.leaseId] {
            guard record.rank == env.rank else {
                return reject(peer, env, .badRequest, "lease \(r.leaseId) belongs to rank \(record.rank)")
            }
            if record.isOutstanding {
                guard r.consumed <= record.lease.count, r.consumed >= record.committedOffset else {
                    return reject(peer, env, .badRequest, "lease \(r.leaseId): consumed \(r.consumed) outside [\(record.committedOffset), \(record.lease.count)]")
                }
                planner.requeue([record.lease.range(from: r.consumed)])
                if r.consumed == record.committedOffset {
                    leases[r.leaseId] = nil
                } else {
                    leases[r.leaseId]?.returnedConsumed = r.consumed
                }
                durableVersion &+= 1
            }
        } else if r.leaseId >= nextLeaseId {
            return reject(peer, env, .badRequest, "lease \(r.leaseId) was never granted")
        }
        // Unknown-but-granted ids were committed already: a duplicate, answered the same way.
        topUp(rank: env.rank, want: ranks[env.rank]?.want ?? config.maxOutstanding)
        return [reply(peer, env, .leaseGrant(grant(for: env.rank)))]
    }

    private mutating func handleProgress(_ p: ProgressReport, _ env: Envelope) -> [Outgoing] {
        let progressStep = max(ranks[env.rank]?.step ?? 0, p.step)
        ranks[env.rank]?.step = progressStep
        if env.rank == 0 {
            metrics = Metrics(step: p.step, samples: p.samples, losses: p.losses, samplesPerSecond: p.samplesPerSecond,
                              phases: p.phases, epoch: p.epoch)
        }
        return []
    }

    private mutating func handleCheckpoint(_ c: CheckpointCommitted, _ env: Envelope, _ peer: Peer) -> [Outgoing] {
        guard env.rank == 0 else { return reject(peer, env, .badRequest, "only rank 0 commits checkpoints") }
        if let last = checkpoints.last, c.step <= last.step {
            if c.step == last.step && c.path == last.path {
                // The same checkpoint again (a resend), or rewritten at the same step as an epoch's
                // end (the data ended right after it was written): that closes the epochs.
                if Int(c.epochsDone) > last.epochsDone && c.epochsDone <= config.epochs {
                    let more = closeEpochs(through: Int(c.epochsDone))
                    checkpoints[checkpoints.count - 1].dropped = SampleRange.merged(last.dropped + more)
                    checkpoints[checkpoints.count - 1].epochsDone = Int(c.epochsDone)
                    dropped = SampleRange.merged(dropped + more)
                    if epochsDone >= Int(config.epochs) && [.running, .paused, .waiting].contains(jobState) { jobState = .done }
                    durableVersion &+= 1
                }
                return [reply(peer, env, .ack(Ack()))]
            }
            return reject(peer, env, .outOfOrder, "checkpoint step \(c.step) <= last committed step \(last.step)")
        }
        var positions: [Int32: DataPosition] = [:]
        for p in c.positions {
            if positions[p.rank] != nil { return reject(peer, env, .badRequest, "two positions for rank \(p.rank)") }
            positions[p.rank] = p
            if p.leaseId >= nextLeaseId {
                return reject(peer, env, .badRequest, "position of rank \(p.rank) names lease \(p.leaseId), which was never granted")
            }
            if let l = leases[p.leaseId] {
                guard l.rank == p.rank else {
                    return reject(peer, env, .badRequest, "position of rank \(p.rank) names lease \(p.leaseId) of rank \(l.rank)")
                }
                guard p.offset <= (l.returnedConsumed ?? l.lease.count), p.offset >= l.committedOffset else {
                    return reject(peer, env, .badRequest, "position offset \(p.offset) outside lease \(p.leaseId)")
                }
            }
        }
        let missing = Set(leases.values.map(\.rank)).subtracting(positions.keys).sorted()
        if !missing.isEmpty {
            return reject(peer, env, .badRequest, "checkpoint lacks data positions for ranks \(missing.map(String.init).joined(separator: ","))")
        }
        guard c.epochsDone >= UInt32(epochsDone), c.epochsDone <= config.epochs else {
            return reject(peer, env, .badRequest, "checkpoint step \(c.step) says \(c.epochsDone) epochs done; the job has \(epochsDone) of \(config.epochs) done")
        }
        var committed: [SampleRange] = []
        for (id, record) in leases {
            guard let p = positions[record.rank] else { continue }
            let l = record.lease
            let usedEnd: UInt64
            if id < p.leaseId { usedEnd = record.returnedConsumed ?? l.count } else if id == p.leaseId { usedEnd = p.offset } else { continue }
            if usedEnd > record.committedOffset { committed.append(l.range(from: record.committedOffset, to: usedEnd)) }
            let finished = id < p.leaseId || (record.returnedConsumed.map { usedEnd >= $0 } ?? (usedEnd >= l.count))
            if finished { leases[id] = nil } else { leases[id]?.committedOffset = usedEnd }
        }
        committed = SampleRange.merged(committed)
        // Epochs finished here: what their leases hold beyond the positions (read past the agreed
        // last step, or never read), what the planner had not leased yet, and their tails.
        let done = Int(c.epochsDone)
        let droppedNow = done > epochsDone ? closeEpochs(through: done) : []
        let total = (checkpoints.last?.committedSamples ?? 0) + UInt64(SampleRange.total(committed))
        checkpoints.append(CheckpointRecord(step: c.step, path: c.path, positions: c.positions.sorted { $0.rank < $1.rank },
                                            ranges: committed, committedSamples: total, dropped: droppedNow,
                                            epochsDone: max(done, epochsDone)))
        ledger = SampleRange.merged(ledger + committed)
        dropped = SampleRange.merged(dropped + droppedNow)
        if checkpoints.count > detailedCheckpointLimit {
            let old = checkpoints.prefix(checkpoints.count - detailedCheckpointLimit)
            folded = FoldedCheckpoints(count: (folded?.count ?? 0) + old.count, throughStep: old.last!.step,
                                       ranges: SampleRange.merged((folded?.ranges ?? []) + old.flatMap(\.ranges)),
                                       dropped: SampleRange.merged((folded?.dropped ?? []) + old.flatMap(\.dropped)),
                                       epochsDone: old.last!.epochsDone)
            checkpoints.removeFirst(old.count)
        }
        let finishedEpochs = epochsDone >= Int(config.epochs)
        if (finishedEpochs || (planner.isExhausted && leases.isEmpty)) && [.running, .paused, .waiting].contains(jobState) { jobState = .done }
        durableVersion &+= 1
        return [reply(peer, env, .ack(Ack()))]
    }

    /// Finishes the epochs before `done`: what their leases hold beyond the committed prefixes
    /// (read past the agreed last step, or never read), what the planner had not leased yet, and
    /// their tails; returned as the samples dropped (the leases go).
    private mutating func closeEpochs(through done: Int) -> [SampleRange] {
        var out: [SampleRange] = []
        for (id, record) in leases where Int(record.lease.epoch) < done {
            out.append(record.uncommitted)
            leases[id] = nil
        }
        return SampleRange.merged(out + planner.close(epochsBefore: done, alreadyDone: epochsDone))
    }

    // MARK: - Leases

    /// Leases a rank may have taken and not yet returned on top of its queue (they are settled by
    /// returns or checkpoint positions); bounds what a misbehaving client can hoard.
    public static let maxTakenPerRank = 256

    /// Grants new leases until `want` are queued beyond the ones the rank has taken.
    private mutating func topUp(rank: Int32, want: UInt32) {
        guard [.waiting, .running, .paused].contains(jobState) else { return }
        let taken = ranks[rank]?.takenThrough ?? 0
        var held = 0, queued = 0
        for l in leases.values where l.rank == rank && l.isOutstanding {
            held += 1
            if l.lease.id > taken { queued += 1 }
        }
        let cap = Int(want) + CoordinatorState.maxTakenPerRank
        while queued < Int(want) && held < cap, let range = planner.next(rank: Int(rank)) {
            let lease = Lease(id: nextLeaseId, epoch: UInt32(range.epoch), shard: UInt32(range.shard),
                              shardPath: shardPaths[range.shard], start: UInt64(range.start), end: UInt64(range.end))
            nextLeaseId += 1
            leases[lease.id] = LeaseRecord(lease: lease, rank: rank, returnedConsumed: nil, committedOffset: 0)
            queued += 1
            held += 1
            durableVersion &+= 1
        }
    }

    /// Every lease this rank holds, in grant order.
    public func outstandingLeases(of rank: Int32) -> [Lease] {
        leases.values.filter { $0.rank == rank && $0.isOutstanding }.map(\.lease).sorted { $0.id < $1.id }
    }

    private func grant(for rank: Int32) -> LeaseGrant {
        // Exhausted: nothing more will be granted to this rank (its streams are all leased).
        let held = outstandingLeases(of: rank)
        return LeaseGrant(leases: held, exhausted: planner.isExhausted(rank: Int(rank)), epoch: UInt32(planner.epoch(of: Int(rank))))
    }

    // MARK: - Commands

    private mutating func handleCommandRequest(_ c: Command, _ env: Envelope, _ peer: Peer, _ now: Double) -> [Outgoing] {
        guard c.kind != .unspecified else { return reject(peer, env, .badRequest, "command kind not set") }
        let hasRanks = ranks.values.contains { $0.health == .alive }
        let finished = [.failed, .stopped, .done].contains(jobState) || (jobState == .waiting && !hasRanks)
        if finished {
            guard c.kind == .stop else {
                return reject(peer, env, .badRequest, "the job is \(jobState.name)\(hasRanks ? "" : " with no live ranks"); only stop applies")
            }
            if jobState != .stopped && jobState != .done { jobState = .stopped; durableVersion &+= 1 }
            return [reply(peer, env, .ack(Ack()))]
        }
        let command = Command(id: nextCommandId, kind: c.kind, reason: c.reason)
        nextCommandId += 1
        pendingCommands.append(command)
        switch c.kind {
        case .stop: jobState = .stopping
        case .pause: if jobState == .running { jobState = .paused }
        case .resume: if jobState == .paused { jobState = .running }
        default: break
        }
        durableVersion &+= 1
        var out = [reply(peer, env, .ack(Ack(commandId: command.id)))]
        if let rank0 = ranks[0], rank0.health == .alive {
            out.append(Outgoing(peer: rank0.peer, envelope: makeEnvelope(replyTo: 0, .command(command))))
        }
        return out
    }

    // MARK: - Status

    /// The job's status as `albef-coord status` shows it.
    public func status(now: Double) -> StatusReply {
        var s = StatusReply()
        s.jobId = config.jobId
        s.jobState = jobState
        // The epoch being trained (rank 0's report) lags the one being planned (leases prefetched).
        // The epoch being trained: rank 0's report, never behind the epochs committed as done.
        s.epoch = min(max(metrics.epoch, UInt32(epochsDone)), max(config.epochs, 1) - 1)
        s.epochs = config.epochs
        s.epochsDone = UInt32(epochsDone)
        s.step = metrics.step
        s.samples = metrics.samples
        s.totalSamples = UInt64(planner.samplesPerEpoch)
        s.losses = metrics.losses
        s.samplesPerSecond = metrics.samplesPerSecond
        s.droppedSamples = UInt64(SampleRange.total(dropped))
        s.badByKind = badByKind.sorted { $0.key < $1.key }.map { BadSampleCount(kind: $0.key, count: $0.value) }
        let remaining = Double(planner.samplesPerEpoch) * Double(config.epochs) - Double(metrics.samples)
        s.etaSeconds = metrics.samplesPerSecond > 0 ? max(0, remaining) / metrics.samplesPerSecond : -1
        s.lastCheckpoint = checkpoints.last.map { CheckpointInfo(step: $0.step, path: $0.path, committedSamples: $0.committedSamples) }
        let maxStep = ranks.values.map(\.step).max() ?? 0
        var held: [Int32: UInt32] = [:]
        for l in leases.values where l.isOutstanding { held[l.rank, default: 0] += 1 }
        s.ranks = ranks.values.sorted { $0.rank < $1.rank }.map {
            RankStatus(rank: $0.rank, health: $0.health, host: $0.host, pid: $0.pid, step: $0.step, lag: maxStep - $0.step,
                       heartbeatAgeSeconds: max(0, now - $0.lastSeen), outstandingLeases: held[$0.rank] ?? 0,
                       stepSeconds: $0.stepSeconds)
        }
        s.badSamplesIndexed = badSamplesIndexed
        s.badSamplesReported = UInt64(badSamplesReported.count)
        s.droppedMessages = droppedMessages
        s.failureReason = failureReason
        s.attempt = attempt
        s.events = events
        s.worldSize = config.worldSize
        s.grantedSamples = UInt64(max(0, planner.issued[Int(s.epoch)] ?? 0))
        s.phases = metrics.phases.isEmpty ? meanTimings() : metrics.phases
        return s
    }

    // MARK: - Helpers

    /// Mean per-phase time over the live ranks' last heartbeats, in first-seen phase order.
    private func meanTimings() -> [PhaseTime] {
        var order: [String] = []
        var sums: [String: (Double, Int)] = [:]
        for r in ranks.values.sorted(by: { $0.rank < $1.rank }) where r.health == .alive {
            for t in r.timings {
                if sums[t.name] == nil { order.append(t.name) }
                let (sum, n) = sums[t.name] ?? (0, 0)
                sums[t.name] = (sum + t.seconds, n + 1)
            }
        }
        return order.compactMap { name in sums[name].map { PhaseTime(name: name, seconds: $0.0 / Double($0.1)) } }
    }

    private mutating func makeEnvelope(replyTo: UInt64, _ body: Body) -> Envelope {
        outSeq &+= 1
        return Envelope(jobId: config.jobId, seq: outSeq, rank: -1, replyTo: replyTo, body: body)
    }

    private mutating func reply(_ peer: Peer, _ env: Envelope, _ body: Body) -> Outgoing {
        Outgoing(peer: peer, envelope: makeEnvelope(replyTo: env.seq, body))
    }

    private mutating func reject(_ peer: Peer, _ env: Envelope, _ code: ErrorCode, _ message: String) -> [Outgoing] {
        droppedMessages &+= 1
        return [reply(peer, env, .error(ControlError(code: code, message: message)))]
    }
}
