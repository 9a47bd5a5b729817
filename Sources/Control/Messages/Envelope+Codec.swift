import CControlProto
import Foundation

// Wire codec: Swift ``Envelope`` <-> protobuf-c `Albef__Control__V1__Envelope` <-> bytes.
// Encoding builds C structs in a ``CArena`` (freed when done); decoding copies everything out of
// the unpacked C tree before `free_unpacked`.

typealias PBEnvelope = Albef__Control__V1__Envelope
typealias PBLease = Albef__Control__V1__Lease
typealias PBPhase = Albef__Control__V1__PhaseTime
typealias PBCommand = Albef__Control__V1__Command
typealias PBLosses = Albef__Control__V1__Losses
typealias PBPosition = Albef__Control__V1__DataPosition
typealias PBRankStatus = Albef__Control__V1__RankStatus

/// Owns the C memory of one encoding pass.
final class CArena {
    private var blocks: [UnsafeMutableRawPointer] = []

    deinit { for block in blocks { free(block) } }

    /// A zeroed C struct initialised by its protobuf-c `__init` function.
    func make<T>(_ initialise: (UnsafeMutablePointer<T>) -> Void) -> UnsafeMutablePointer<T> {
        guard let raw = calloc(1, MemoryLayout<T>.stride) else { preconditionFailure("CArena: out of memory") }
        blocks.append(raw)
        let p = raw.bindMemory(to: T.self, capacity: 1)
        initialise(p)
        return p
    }

    /// A NUL-terminated copy of `s`.
    func string(_ s: String) -> UnsafeMutablePointer<CChar> {
        guard let p = strdup(s) else { preconditionFailure("CArena: out of memory") }
        blocks.append(UnsafeMutableRawPointer(p))
        return p
    }

    /// A C array of pointers (`T **`) for a repeated message field.
    func array<T>(_ items: [UnsafeMutablePointer<T>]) -> UnsafeMutablePointer<UnsafeMutablePointer<T>?>? {
        if items.isEmpty { return nil }
        guard let raw = calloc(items.count, MemoryLayout<UnsafeMutablePointer<T>?>.stride) else {
            preconditionFailure("CArena: out of memory")
        }
        blocks.append(raw)
        let p = raw.bindMemory(to: UnsafeMutablePointer<T>?.self, capacity: items.count)
        for (i, item) in items.enumerated() { p[i] = item }
        return p
    }
}

private func str(_ p: UnsafeMutablePointer<CChar>?) -> String {
    guard let p else { return "" }
    return String(cString: p)
}

private func list<T, R>(_ p: UnsafeMutablePointer<UnsafeMutablePointer<T>?>?, _ n: Int, _ f: (T) -> R) -> [R] {
    guard let p else { return [] }
    return (0..<n).compactMap { i in p[i].map { f($0.pointee) } }
}

// MARK: - Small messages

extension PhaseTime {
    init(c: PBPhase) { self.init(name: str(c.name), seconds: c.seconds) }
    func c(_ a: CArena) -> UnsafeMutablePointer<PBPhase> {
        let p: UnsafeMutablePointer<PBPhase> = a.make { albef__control__v1__phase_time__init($0) }
        p.pointee.name = a.string(name)
        p.pointee.seconds = seconds
        return p
    }
}

extension Lease {
    init(c: PBLease) {
        self.init(id: c.id, epoch: c.epoch, shard: c.shard, shardPath: str(c.shard_path), start: c.start, end: c.end)
    }
    func c(_ a: CArena) -> UnsafeMutablePointer<PBLease> {
        let p: UnsafeMutablePointer<PBLease> = a.make { albef__control__v1__lease__init($0) }
        p.pointee.id = id
        p.pointee.epoch = epoch
        p.pointee.shard = shard
        p.pointee.shard_path = a.string(shardPath)
        p.pointee.start = start
        p.pointee.end = end
        return p
    }
}

extension Losses {
    init(c: UnsafeMutablePointer<PBLosses>?) {
        guard let l = c?.pointee else { self.init(); return }
        self.init(ita: l.ita, itm: l.itm, mlm: l.mlm, total: l.total)
    }
    func c(_ a: CArena) -> UnsafeMutablePointer<PBLosses> {
        let p: UnsafeMutablePointer<PBLosses> = a.make { albef__control__v1__losses__init($0) }
        p.pointee.ita = ita
        p.pointee.itm = itm
        p.pointee.mlm = mlm
        p.pointee.total = total
        return p
    }
}

extension Command {
    init(c: PBCommand) {
        self.init(id: c.id, kind: CommandKind(rawValue: Int(c.kind.rawValue)) ?? .unspecified, reason: str(c.reason))
    }
    func c(_ a: CArena) -> UnsafeMutablePointer<PBCommand> {
        let p: UnsafeMutablePointer<PBCommand> = a.make { albef__control__v1__command__init($0) }
        p.pointee.id = id
        p.pointee.kind = .init(rawValue: numericCast(kind.rawValue))
        p.pointee.reason = a.string(reason)
        return p
    }
}

extension DataPosition {
    init(c: PBPosition) { self.init(rank: c.rank, leaseId: c.lease_id, offset: c.offset) }
    func c(_ a: CArena) -> UnsafeMutablePointer<PBPosition> {
        let p: UnsafeMutablePointer<PBPosition> = a.make { albef__control__v1__data_position__init($0) }
        p.pointee.rank = rank
        p.pointee.lease_id = leaseId
        p.pointee.offset = offset
        return p
    }
}

extension RankStatus {
    init(c: PBRankStatus) {
        self.init(rank: c.rank, health: RankHealth(rawValue: Int(c.health.rawValue)) ?? .unspecified,
                  host: str(c.host), pid: c.pid, step: c.step, lag: c.lag,
                  heartbeatAgeSeconds: c.heartbeat_age_seconds, outstandingLeases: c.outstanding_leases,
                  stepSeconds: c.step_seconds)
    }
    func c(_ a: CArena) -> UnsafeMutablePointer<PBRankStatus> {
        let p: UnsafeMutablePointer<PBRankStatus> = a.make { albef__control__v1__rank_status__init($0) }
        p.pointee.rank = rank
        p.pointee.health = .init(rawValue: numericCast(health.rawValue))
        p.pointee.host = a.string(host)
        p.pointee.pid = pid
        p.pointee.step = step
        p.pointee.lag = lag
        p.pointee.heartbeat_age_seconds = heartbeatAgeSeconds
        p.pointee.outstanding_leases = outstandingLeases
        p.pointee.step_seconds = stepSeconds
        return p
    }
}

private func jobState(_ raw: UInt32) -> JobState { JobState(rawValue: Int(raw)) ?? .unspecified }

// MARK: - Envelope

extension Envelope {
    /// Serialises to protobuf wire bytes (`albef.control.v1.Envelope`).
    public func encoded() -> [UInt8] {
        let a = CArena()
        let e: UnsafeMutablePointer<PBEnvelope> = a.make { albef__control__v1__envelope__init($0) }
        e.pointee.protocol_version = protocolVersion
        e.pointee.job_id = a.string(jobId)
        e.pointee.auth_token = a.string(authToken)
        e.pointee.seq = seq
        e.pointee.rank = rank
        e.pointee.reply_to = replyTo
        if let body { encodeBody(body, into: e, a) }
        let size = albef__control__v1__envelope__get_packed_size(e)
        var out = [UInt8](repeating: 0, count: size)
        let written = out.withUnsafeMutableBufferPointer { albef__control__v1__envelope__pack(e, $0.baseAddress) }
        precondition(written == size, "Envelope.encoded: protobuf-c packed \(written) of \(size) bytes")
        return out
    }

    /// Parses protobuf wire bytes; throws ``CodecError`` for empty, oversized or undecodable input.
    public init(decoding bytes: [UInt8]) throws {
        if bytes.isEmpty { throw CodecError.empty }
        if bytes.count > Envelope.maxWireSize {
            throw CodecError.oversized(byteCount: bytes.count, limit: Envelope.maxWireSize)
        }
        let unpacked = bytes.withUnsafeBufferPointer {
            albef__control__v1__envelope__unpack(nil, $0.count, $0.baseAddress)
        }
        guard let e = unpacked else { throw CodecError.malformed(byteCount: bytes.count) }
        defer { albef__control__v1__envelope__free_unpacked(e, nil) }
        self.init(jobId: str(e.pointee.job_id), authToken: str(e.pointee.auth_token), seq: e.pointee.seq,
                  rank: e.pointee.rank, replyTo: e.pointee.reply_to, body: Envelope.decodeBody(e.pointee),
                  protocolVersion: e.pointee.protocol_version)
    }

    private func encodeBody(_ body: Body, into e: UnsafeMutablePointer<PBEnvelope>, _ a: CArena) {
        switch body {
        case .registration(let r):
            let p: UnsafeMutablePointer<Albef__Control__V1__Registration> = a.make { albef__control__v1__registration__init($0) }
            p.pointee.world_size = r.worldSize
            p.pointee.host = a.string(r.host)
            p.pointee.pid = r.pid
            p.pointee.build_version = a.string(r.buildVersion)
            p.pointee.session = r.session
            p.pointee.corpus_fingerprint = a.string(r.corpusFingerprint)
            e.pointee.body_case = ALBEF__CONTROL__V1__ENVELOPE__BODY_REGISTRATION
            e.pointee.registration = p
        case .registrationReply(let r):
            let p: UnsafeMutablePointer<Albef__Control__V1__RegistrationReply> = a.make { albef__control__v1__registration_reply__init($0) }
            p.pointee.job_state = .init(rawValue: numericCast(r.jobState.rawValue))
            p.pointee.resume_step = r.resumeStep
            p.pointee.resume_checkpoint = a.string(r.resumeCheckpoint)
            p.pointee.epoch = r.epoch
            p.pointee.max_outstanding = r.maxOutstanding
            p.pointee.lease_size = r.leaseSize
            p.pointee.epochs = r.epochs
            e.pointee.body_case = ALBEF__CONTROL__V1__ENVELOPE__BODY_REGISTRATION_REPLY
            e.pointee.registration_reply = p
        case .heartbeat(let h):
            let p: UnsafeMutablePointer<Albef__Control__V1__Heartbeat> = a.make { albef__control__v1__heartbeat__init($0) }
            p.pointee.step = h.step
            p.pointee.step_seconds = h.stepSeconds
            p.pointee.n_timings = h.timings.count
            p.pointee.timings = a.array(h.timings.map { $0.c(a) })
            p.pointee.last_command_id = h.lastCommandId
            e.pointee.body_case = ALBEF__CONTROL__V1__ENVELOPE__BODY_HEARTBEAT
            e.pointee.heartbeat = p
        case .heartbeatReply(let h):
            let p: UnsafeMutablePointer<Albef__Control__V1__HeartbeatReply> = a.make { albef__control__v1__heartbeat_reply__init($0) }
            p.pointee.job_state = .init(rawValue: numericCast(h.jobState.rawValue))
            p.pointee.n_commands = h.commands.count
            p.pointee.commands = a.array(h.commands.map { $0.c(a) })
            e.pointee.body_case = ALBEF__CONTROL__V1__ENVELOPE__BODY_HEARTBEAT_REPLY
            e.pointee.heartbeat_reply = p
        case .leaseRequest(let r):
            let p: UnsafeMutablePointer<Albef__Control__V1__LeaseRequest> = a.make { albef__control__v1__lease_request__init($0) }
            p.pointee.want = r.want
            p.pointee.taken_through = r.takenThrough
            e.pointee.body_case = ALBEF__CONTROL__V1__ENVELOPE__BODY_LEASE_REQUEST
            e.pointee.lease_request = p
        case .leaseGrant(let g):
            let p: UnsafeMutablePointer<Albef__Control__V1__LeaseGrant> = a.make { albef__control__v1__lease_grant__init($0) }
            p.pointee.n_leases = g.leases.count
            p.pointee.leases = a.array(g.leases.map { $0.c(a) })
            p.pointee.exhausted = g.exhausted ? 1 : 0
            p.pointee.epoch = g.epoch
            e.pointee.body_case = ALBEF__CONTROL__V1__ENVELOPE__BODY_LEASE_GRANT
            e.pointee.lease_grant = p
        case .leaseReturn(let r):
            let p: UnsafeMutablePointer<Albef__Control__V1__LeaseReturn> = a.make { albef__control__v1__lease_return__init($0) }
            p.pointee.lease_id = r.leaseId
            p.pointee.consumed = r.consumed
            e.pointee.body_case = ALBEF__CONTROL__V1__ENVELOPE__BODY_LEASE_RETURN
            e.pointee.lease_return = p
        case .progress(let r):
            let p: UnsafeMutablePointer<Albef__Control__V1__ProgressReport> = a.make { albef__control__v1__progress_report__init($0) }
            p.pointee.step = r.step
            p.pointee.samples = r.samples
            p.pointee.losses = r.losses.c(a)
            p.pointee.samples_per_second = r.samplesPerSecond
            p.pointee.n_phases = r.phases.count
            p.pointee.phases = a.array(r.phases.map { $0.c(a) })
            p.pointee.epoch = r.epoch
            e.pointee.body_case = ALBEF__CONTROL__V1__ENVELOPE__BODY_PROGRESS
            e.pointee.progress = p
        case .checkpointCommitted(let c):
            let p: UnsafeMutablePointer<Albef__Control__V1__CheckpointCommitted> = a.make { albef__control__v1__checkpoint_committed__init($0) }
            p.pointee.step = c.step
            p.pointee.path = a.string(c.path)
            p.pointee.n_positions = c.positions.count
            p.pointee.positions = a.array(c.positions.map { $0.c(a) })
            p.pointee.epochs_done = c.epochsDone
            e.pointee.body_case = ALBEF__CONTROL__V1__ENVELOPE__BODY_CHECKPOINT_COMMITTED
            e.pointee.checkpoint_committed = p
        case .command(let c):
            e.pointee.body_case = ALBEF__CONTROL__V1__ENVELOPE__BODY_COMMAND
            e.pointee.command = c.c(a)
        case .statusRequest:
            let p: UnsafeMutablePointer<Albef__Control__V1__StatusRequest> = a.make { albef__control__v1__status_request__init($0) }
            e.pointee.body_case = ALBEF__CONTROL__V1__ENVELOPE__BODY_STATUS_REQUEST
            e.pointee.status_request = p
        case .statusReply(let s):
            let p: UnsafeMutablePointer<Albef__Control__V1__StatusReply> = a.make { albef__control__v1__status_reply__init($0) }
            p.pointee.job_id = a.string(s.jobId)
            p.pointee.job_state = .init(rawValue: numericCast(s.jobState.rawValue))
            p.pointee.epoch = s.epoch
            p.pointee.epochs = s.epochs
            p.pointee.step = s.step
            p.pointee.samples = s.samples
            p.pointee.total_samples = s.totalSamples
            p.pointee.losses = s.losses.c(a)
            p.pointee.samples_per_second = s.samplesPerSecond
            p.pointee.eta_seconds = s.etaSeconds
            if let ck = s.lastCheckpoint {
                let cp: UnsafeMutablePointer<Albef__Control__V1__CheckpointInfo> = a.make { albef__control__v1__checkpoint_info__init($0) }
                cp.pointee.step = ck.step
                cp.pointee.path = a.string(ck.path)
                cp.pointee.committed_samples = ck.committedSamples
                p.pointee.last_checkpoint = cp
            }
            p.pointee.n_ranks = s.ranks.count
            p.pointee.ranks = a.array(s.ranks.map { $0.c(a) })
            p.pointee.bad_samples_indexed = s.badSamplesIndexed
            p.pointee.bad_samples_reported = s.badSamplesReported
            p.pointee.dropped_messages = s.droppedMessages
            p.pointee.failure_reason = a.string(s.failureReason)
            p.pointee.world_size = s.worldSize
            p.pointee.granted_samples = s.grantedSamples
            p.pointee.n_phases = s.phases.count
            p.pointee.phases = a.array(s.phases.map { $0.c(a) })
            p.pointee.n_bad_by_kind = s.badByKind.count
            p.pointee.bad_by_kind = a.array(s.badByKind.map { b -> UnsafeMutablePointer<Albef__Control__V1__BadSampleCount> in
                let q: UnsafeMutablePointer<Albef__Control__V1__BadSampleCount> = a.make { albef__control__v1__bad_sample_count__init($0) }
                q.pointee.kind = a.string(b.kind)
                q.pointee.count = b.count
                return q
            })
            p.pointee.dropped_samples = s.droppedSamples
            p.pointee.epochs_done = s.epochsDone
            p.pointee.attempt = s.attempt
            p.pointee.n_events = s.events.count
            p.pointee.events = a.array(s.events.map { a.string($0) })
            e.pointee.body_case = ALBEF__CONTROL__V1__ENVELOPE__BODY_STATUS_REPLY
            e.pointee.status_reply = p
        case .error(let err):
            let p: UnsafeMutablePointer<Albef__Control__V1__Error> = a.make { albef__control__v1__error__init($0) }
            p.pointee.code = .init(rawValue: numericCast(err.code.rawValue))
            p.pointee.message = a.string(err.message)
            e.pointee.body_case = ALBEF__CONTROL__V1__ENVELOPE__BODY_ERROR
            e.pointee.error = p
        case .ack(let ack):
            let p: UnsafeMutablePointer<Albef__Control__V1__Ack> = a.make { albef__control__v1__ack__init($0) }
            p.pointee.command_id = ack.commandId
            e.pointee.body_case = ALBEF__CONTROL__V1__ENVELOPE__BODY_ACK
            e.pointee.ack = p
        case .badSample(let b):
            let p: UnsafeMutablePointer<Albef__Control__V1__BadSampleReport> = a.make { albef__control__v1__bad_sample_report__init($0) }
            p.pointee.shard = b.shard
            p.pointee.key = a.string(b.key)
            p.pointee.kind = a.string(b.kind)
            e.pointee.body_case = ALBEF__CONTROL__V1__ENVELOPE__BODY_BAD_SAMPLE
            e.pointee.bad_sample = p
        }
    }

    private static func decodeBody(_ e: PBEnvelope) -> Body? {
        switch e.body_case {
        case ALBEF__CONTROL__V1__ENVELOPE__BODY_REGISTRATION:
            guard let r = e.registration?.pointee else { return nil }
            return .registration(Registration(worldSize: r.world_size, host: str(r.host), pid: r.pid,
                                              buildVersion: str(r.build_version), session: r.session,
                                              corpusFingerprint: str(r.corpus_fingerprint)))
        case ALBEF__CONTROL__V1__ENVELOPE__BODY_REGISTRATION_REPLY:
            guard let r = e.registration_reply?.pointee else { return nil }
            return .registrationReply(RegistrationReply(
                jobState: jobState(numericCast(r.job_state.rawValue)), resumeStep: r.resume_step,
                resumeCheckpoint: str(r.resume_checkpoint), epoch: r.epoch, maxOutstanding: r.max_outstanding,
                leaseSize: r.lease_size, epochs: r.epochs))
        case ALBEF__CONTROL__V1__ENVELOPE__BODY_HEARTBEAT:
            guard let h = e.heartbeat?.pointee else { return nil }
            return .heartbeat(Heartbeat(step: h.step, stepSeconds: h.step_seconds,
                                        timings: list(h.timings, h.n_timings, PhaseTime.init(c:)),
                                        lastCommandId: h.last_command_id))
        case ALBEF__CONTROL__V1__ENVELOPE__BODY_HEARTBEAT_REPLY:
            guard let h = e.heartbeat_reply?.pointee else { return nil }
            return .heartbeatReply(HeartbeatReply(jobState: jobState(numericCast(h.job_state.rawValue)),
                                                  commands: list(h.commands, h.n_commands, Command.init(c:))))
        case ALBEF__CONTROL__V1__ENVELOPE__BODY_LEASE_REQUEST:
            guard let r = e.lease_request?.pointee else { return nil }
            return .leaseRequest(LeaseRequest(want: r.want, takenThrough: r.taken_through))
        case ALBEF__CONTROL__V1__ENVELOPE__BODY_LEASE_GRANT:
            guard let g = e.lease_grant?.pointee else { return nil }
            return .leaseGrant(LeaseGrant(leases: list(g.leases, g.n_leases, Lease.init(c:)),
                                          exhausted: g.exhausted != 0, epoch: g.epoch))
        case ALBEF__CONTROL__V1__ENVELOPE__BODY_LEASE_RETURN:
            guard let r = e.lease_return?.pointee else { return nil }
            return .leaseReturn(LeaseReturn(leaseId: r.lease_id, consumed: r.consumed))
        case ALBEF__CONTROL__V1__ENVELOPE__BODY_PROGRESS:
            guard let r = e.progress?.pointee else { return nil }
            return .progress(ProgressReport(step: r.step, samples: r.samples, losses: Losses(c: r.losses),
                                            samplesPerSecond: r.samples_per_second,
                                            phases: list(r.phases, r.n_phases, PhaseTime.init(c:)), epoch: r.epoch))
        case ALBEF__CONTROL__V1__ENVELOPE__BODY_CHECKPOINT_COMMITTED:
            guard let c = e.checkpoint_committed?.pointee else { return nil }
            return .checkpointCommitted(CheckpointCommitted(
                step: c.step, path: str(c.path), positions: list(c.positions, c.n_positions, DataPosition.init(c:)),
                epochsDone: c.epochs_done))
        case ALBEF__CONTROL__V1__ENVELOPE__BODY_COMMAND:
            guard let c = e.command?.pointee else { return nil }
            return .command(Command(c: c))
        case ALBEF__CONTROL__V1__ENVELOPE__BODY_STATUS_REQUEST:
            return .statusRequest
        case ALBEF__CONTROL__V1__ENVELOPE__BODY_STATUS_REPLY:
            guard let s = e.status_reply?.pointee else { return nil }
            var r = StatusReply()
            r.jobId = str(s.job_id)
            r.jobState = jobState(numericCast(s.job_state.rawValue))
            r.epoch = s.epoch
            r.epochs = s.epochs
            r.step = s.step
            r.samples = s.samples
            r.totalSamples = s.total_samples
            r.losses = Losses(c: s.losses)
            r.samplesPerSecond = s.samples_per_second
            r.etaSeconds = s.eta_seconds
            if let ck = s.last_checkpoint?.pointee {
                r.lastCheckpoint = CheckpointInfo(step: ck.step, path: str(ck.path), committedSamples: ck.committed_samples)
            }
            r.ranks = list(s.ranks, s.n_ranks, RankStatus.init(c:))
            r.badSamplesIndexed = s.bad_samples_indexed
            r.badSamplesReported = s.bad_samples_reported
            r.droppedMessages = s.dropped_messages
            r.failureReason = str(s.failure_reason)
            r.worldSize = s.world_size
            r.grantedSamples = s.granted_samples
            r.phases = list(s.phases, s.n_phases, PhaseTime.init(c:))
            r.badByKind = list(s.bad_by_kind, s.n_bad_by_kind) { BadSampleCount(kind: str($0.kind), count: $0.count) }
            r.droppedSamples = s.dropped_samples
            r.epochsDone = s.epochs_done
            r.attempt = s.attempt
            r.events = (0..<s.n_events).map { str(s.events[$0]) }
            return .statusReply(r)
        case ALBEF__CONTROL__V1__ENVELOPE__BODY_ERROR:
            guard let err = e.error?.pointee else { return nil }
            return .error(ControlError(code: ErrorCode(rawValue: Int(err.code.rawValue)) ?? .unspecified,
                                       message: str(err.message)))
        case ALBEF__CONTROL__V1__ENVELOPE__BODY_ACK:
            guard let ack = e.ack?.pointee else { return nil }
            return .ack(Ack(commandId: ack.command_id))
        case ALBEF__CONTROL__V1__ENVELOPE__BODY_BAD_SAMPLE:
            guard let b = e.bad_sample?.pointee else { return nil }
            return .badSample(BadSampleReport(shard: b.shard, key: str(b.key), kind: str(b.kind)))
        default:
            return nil
        }
    }
}
