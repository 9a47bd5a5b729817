@_exported import Corpus
/// Swift mirrors of the messages in `proto/albef_control.proto` (package `albef.control.v1`).
///
/// The coordinator's state machine and the client work with these value types only; the codec
/// in `Envelope+Codec.swift` converts them to and from protobuf-c wire bytes.

/// `JobState` in the schema.
public enum JobState: Int, Codable, Sendable, CaseIterable {
    case unspecified = 0, waiting, running, paused, stopping, stopped, failed, done

    /// Lower-case name used by the CLI and JSON.
    public var name: String {
        switch self {
        case .unspecified: return "unspecified"
        case .waiting: return "waiting"
        case .running: return "running"
        case .paused: return "paused"
        case .stopping: return "stopping"
        case .stopped: return "stopped"
        case .failed: return "failed"
        case .done: return "done"
        }
    }
}

/// `CommandKind` in the schema.
public enum CommandKind: Int, Codable, Sendable, CaseIterable {
    case unspecified = 0, stop, checkpointNow, pause, resume
}

/// `RankHealth` in the schema.
public enum RankHealth: Int, Codable, Sendable {
    case unspecified = 0, alive, lost
}

/// `ErrorCode` in the schema.
public enum ErrorCode: Int, Codable, Sendable {
    case unspecified = 0, unauthenticated, malformed, wrongJob, notRegistered, outOfOrder, badRequest,
        unsupportedVersion, jobFailed
}

/// Time spent in one phase of a step ("data", "forward", "backward", "allreduce", ...).
public struct PhaseTime: Codable, Hashable, Sendable {
    public var name: String
    public var seconds: Double
    public init(name: String, seconds: Double) {
        self.name = name
        self.seconds = seconds
    }
}

/// A range of samples `[start, end)` of one shard, in one epoch's plan.
public struct Lease: Codable, Hashable, Sendable {
    /// Unique per job and increasing in grant order.
    public var id: UInt64
    public var epoch: UInt32
    /// Index into the corpus index's `shards`.
    public var shard: UInt32
    public var shardPath: String
    public var start: UInt64
    public var end: UInt64
    public init(id: UInt64, epoch: UInt32, shard: UInt32, shardPath: String, start: UInt64, end: UInt64) {
        self.id = id
        self.epoch = epoch
        self.shard = shard
        self.shardPath = shardPath
        self.start = start
        self.end = end
    }
    /// Number of samples in the lease.
    public var count: UInt64 { end - start }
    /// The lease's samples as the shared range type (samples [start + from, start + to)).
    public func range(from: UInt64 = 0, to: UInt64? = nil) -> SampleRange {
        SampleRange(epoch: Int(epoch), shard: Int(shard), start: Int(start + from), end: Int(start + (to ?? count)))
    }
}

/// ALBEF's three losses and their sum.
public struct Losses: Codable, Hashable, Sendable {
    public var ita: Double
    public var itm: Double
    public var mlm: Double
    public var total: Double
    public init(ita: Double = 0, itm: Double = 0, mlm: Double = 0, total: Double = 0) {
        self.ita = ita
        self.itm = itm
        self.mlm = mlm
        self.total = total
    }
}

/// A rank's data position at a checkpoint: every sample of its leases with id < `leaseId`, plus
/// the first `offset` samples of lease `leaseId`.
public struct DataPosition: Codable, Hashable, Sendable {
    public var rank: Int32
    public var leaseId: UInt64
    public var offset: UInt64
    public init(rank: Int32, leaseId: UInt64, offset: UInt64) {
        self.rank = rank
        self.leaseId = leaseId
        self.offset = offset
    }
}

/// A command for the job (delivered to rank 0, which broadcasts it over MPI at a step boundary).
public struct Command: Codable, Hashable, Sendable {
    /// Assigned by the coordinator, increasing.
    public var id: UInt64
    public var kind: CommandKind
    public var reason: String
    public init(id: UInt64 = 0, kind: CommandKind, reason: String = "") {
        self.id = id
        self.kind = kind
        self.reason = reason
    }
}

public struct Registration: Codable, Hashable, Sendable {
    public var worldSize: UInt32
    public var host: String
    public var pid: UInt32
    public var buildVersion: String
    /// Random per client instance; a registration with a new session starts a new `seq` run.
    public var session: UInt64
    /// ``CorpusIndex/fingerprint`` of the rank's corpus index ("" from clients that do not check).
    public var corpusFingerprint: String
    public init(worldSize: UInt32, host: String, pid: UInt32, buildVersion: String, session: UInt64 = 0,
                corpusFingerprint: String = "") {
        self.worldSize = worldSize
        self.host = host
        self.pid = pid
        self.buildVersion = buildVersion
        self.session = session
        self.corpusFingerprint = corpusFingerprint
    }
}

public struct RegistrationReply: Codable, Hashable, Sendable {
    public var jobState: JobState
    public var resumeStep: UInt64
    public var resumeCheckpoint: String
    public var epoch: UInt32
    public var maxOutstanding: UInt32
    public var leaseSize: UInt32
    /// Epochs the coordinator plans: the job's length.
    public var epochs: UInt32
    public init(jobState: JobState, resumeStep: UInt64, resumeCheckpoint: String, epoch: UInt32,
                maxOutstanding: UInt32, leaseSize: UInt32, epochs: UInt32 = 0) {
        self.jobState = jobState
        self.resumeStep = resumeStep
        self.resumeCheckpoint = resumeCheckpoint
        self.epoch = epoch
        self.maxOutstanding = maxOutstanding
        self.leaseSize = leaseSize
        self.epochs = epochs
    }
}

public struct Heartbeat: Codable, Hashable, Sendable {
    public var step: UInt64
    public var stepSeconds: Double
    public var timings: [PhaseTime]
    public var lastCommandId: UInt64
    public init(step: UInt64, stepSeconds: Double = 0, timings: [PhaseTime] = [], lastCommandId: UInt64 = 0) {
        self.step = step
        self.stepSeconds = stepSeconds
        self.timings = timings
        self.lastCommandId = lastCommandId
    }
}

public struct HeartbeatReply: Codable, Hashable, Sendable {
    public var jobState: JobState
    public var commands: [Command]
    public init(jobState: JobState, commands: [Command]) {
        self.jobState = jobState
        self.commands = commands
    }
}

/// Keep `want` leases queued beyond the ones already taken (ids ≤ `takenThrough`).
public struct LeaseRequest: Codable, Hashable, Sendable {
    public var want: UInt32
    /// Highest lease id the rank has started reading (0: none).
    public var takenThrough: UInt64
    public init(want: UInt32, takenThrough: UInt64 = 0) {
        self.want = want
        self.takenThrough = takenThrough
    }
}

public struct LeaseGrant: Codable, Hashable, Sendable {
    public var leases: [Lease]
    public var exhausted: Bool
    public var epoch: UInt32
    public init(leases: [Lease], exhausted: Bool, epoch: UInt32) {
        self.leases = leases
        self.exhausted = exhausted
        self.epoch = epoch
    }
}

public struct LeaseReturn: Codable, Hashable, Sendable {
    public var leaseId: UInt64
    public var consumed: UInt64
    public init(leaseId: UInt64, consumed: UInt64) {
        self.leaseId = leaseId
        self.consumed = consumed
    }
}

public struct ProgressReport: Codable, Hashable, Sendable {
    public var step: UInt64
    public var samples: UInt64
    public var losses: Losses
    public var samplesPerSecond: Double
    public var phases: [PhaseTime]
    public var epoch: UInt32
    public init(step: UInt64, samples: UInt64, losses: Losses, samplesPerSecond: Double,
                phases: [PhaseTime] = [], epoch: UInt32 = 0) {
        self.step = step
        self.samples = samples
        self.losses = losses
        self.samplesPerSecond = samplesPerSecond
        self.phases = phases
        self.epoch = epoch
    }
}

public struct CheckpointCommitted: Codable, Hashable, Sendable {
    public var step: UInt64
    public var path: String
    public var positions: [DataPosition]
    /// Epochs finished at this checkpoint (e + 1 for the checkpoint at the end of epoch e): the
    /// finished epochs' samples beyond the positions are recorded as dropped, never re-issued.
    public var epochsDone: UInt32
    public init(step: UInt64, path: String, positions: [DataPosition], epochsDone: UInt32 = 0) {
        self.step = step
        self.path = path
        self.positions = positions
        self.epochsDone = epochsDone
    }
}

public struct RankStatus: Codable, Hashable, Sendable {
    public var rank: Int32
    public var health: RankHealth
    public var host: String
    public var pid: UInt32
    public var step: UInt64
    public var lag: UInt64
    public var heartbeatAgeSeconds: Double
    public var outstandingLeases: UInt32
    /// The rank's last reported step time.
    public var stepSeconds: Double
    public init(rank: Int32, health: RankHealth, host: String, pid: UInt32, step: UInt64, lag: UInt64,
                heartbeatAgeSeconds: Double, outstandingLeases: UInt32, stepSeconds: Double = 0) {
        self.rank = rank
        self.health = health
        self.host = host
        self.pid = pid
        self.step = step
        self.lag = lag
        self.heartbeatAgeSeconds = heartbeatAgeSeconds
        self.outstandingLeases = outstandingLeases
        self.stepSeconds = stepSeconds
    }
}

public struct CheckpointInfo: Codable, Hashable, Sendable {
    public var step: UInt64
    public var path: String
    public var committedSamples: UInt64
    public init(step: UInt64, path: String, committedSamples: UInt64) {
        self.step = step
        self.path = path
        self.committedSamples = committedSamples
    }
}

public struct StatusReply: Codable, Hashable, Sendable {
    public var jobId: String = ""
    public var jobState: JobState = .unspecified
    public var epoch: UInt32 = 0
    public var epochs: UInt32 = 0
    public var step: UInt64 = 0
    public var samples: UInt64 = 0
    public var totalSamples: UInt64 = 0
    public var losses: Losses = Losses()
    public var samplesPerSecond: Double = 0
    public var etaSeconds: Double = -1
    public var lastCheckpoint: CheckpointInfo?
    public var ranks: [RankStatus] = []
    public var badSamplesIndexed: UInt64 = 0
    public var badSamplesReported: UInt64 = 0
    public var droppedMessages: UInt64 = 0
    public var failureReason: String = ""
    /// 1 + the restarts from a committed checkpoint; the job's recovery history, oldest first.
    public var attempt: UInt32 = 0
    public var events: [String] = []
    public var worldSize: UInt32 = 0
    public var grantedSamples: UInt64 = 0
    public var phases: [PhaseTime] = []
    /// Bad samples the ranks reported, by kind (sorted by kind).
    public var badByKind: [BadSampleCount] = []
    /// Samples recorded as dropped at epoch ends, all epochs.
    public var droppedSamples: UInt64 = 0
    /// Epochs finished (epoch-end checkpoints committed).
    public var epochsDone: UInt32 = 0
    public init() {}
}

/// Reported bad samples of one kind.
public struct BadSampleCount: Codable, Hashable, Sendable {
    public var kind: String
    public var count: UInt64
    public init(kind: String, count: UInt64) {
        self.kind = kind
        self.count = count
    }
}

/// `Error` in the schema (named so as not to shadow Swift's `Error`).
public struct ControlError: Codable, Hashable, Sendable, Error {
    public var code: ErrorCode
    public var message: String
    public init(code: ErrorCode, message: String) {
        self.code = code
        self.message = message
    }
}

public struct Ack: Codable, Hashable, Sendable {
    public var commandId: UInt64
    public init(commandId: UInt64 = 0) { self.commandId = commandId }
}

public struct BadSampleReport: Codable, Hashable, Sendable {
    public var shard: UInt32
    public var key: String
    public var kind: String
    public init(shard: UInt32, key: String, kind: String) {
        self.shard = shard
        self.key = key
        self.kind = kind
    }
}

/// The envelope's `oneof body`.
public enum Body: Hashable, Sendable {
    case registration(Registration)
    case registrationReply(RegistrationReply)
    case heartbeat(Heartbeat)
    case heartbeatReply(HeartbeatReply)
    case leaseRequest(LeaseRequest)
    case leaseGrant(LeaseGrant)
    case leaseReturn(LeaseReturn)
    case progress(ProgressReport)
    case checkpointCommitted(CheckpointCommitted)
    case command(Command)
    case statusRequest
    case statusReply(StatusReply)
    case error(ControlError)
    case ack(Ack)
    case badSample(BadSampleReport)

    /// Short name for logs and counters.
    public var name: String {
        switch self {
        case .registration: return "registration"
        case .registrationReply: return "registration_reply"
        case .heartbeat: return "heartbeat"
        case .heartbeatReply: return "heartbeat_reply"
        case .leaseRequest: return "lease_request"
        case .leaseGrant: return "lease_grant"
        case .leaseReturn: return "lease_return"
        case .progress: return "progress"
        case .checkpointCommitted: return "checkpoint_committed"
        case .command: return "command"
        case .statusRequest: return "status_request"
        case .statusReply: return "status_reply"
        case .error: return "error"
        case .ack: return "ack"
        case .badSample: return "bad_sample"
        }
    }
}

/// One message on the wire: routing/auth header plus a body.
public struct Envelope: Hashable, Sendable {
    /// The schema version this code speaks (`PROTOCOL_VERSION_CURRENT`).
    public static let currentProtocolVersion: UInt32 = 1
    /// Frames larger than this are rejected before decoding (and by `ZMQ_MAXMSGSIZE`).
    public static let maxWireSize = 1 << 20

    public var protocolVersion: UInt32
    public var jobId: String
    public var authToken: String
    public var seq: UInt64
    /// Sender's rank; -1 for tools.
    public var rank: Int32
    /// For replies: the `seq` of the request answered.
    public var replyTo: UInt64
    /// Nil when the sender set no body (the coordinator answers `malformed`).
    public var body: Body?

    public init(jobId: String = "", authToken: String = "", seq: UInt64 = 0, rank: Int32 = -1,
                replyTo: UInt64 = 0, body: Body?, protocolVersion: UInt32 = Envelope.currentProtocolVersion) {
        self.protocolVersion = protocolVersion
        self.jobId = jobId
        self.authToken = authToken
        self.seq = seq
        self.rank = rank
        self.replyTo = replyTo
        self.body = body
    }
}
