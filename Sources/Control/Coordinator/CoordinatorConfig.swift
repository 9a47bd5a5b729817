/// Settings of one coordinated job (fixed for the job's lifetime; stored in the snapshot).
public struct CoordinatorConfig: Codable, Hashable, Sendable {
    /// The job's identity; every envelope must carry it.
    public var jobId: String
    /// Expected ranks (0: accept any number).
    public var worldSize: UInt32
    /// Seed of the epoch plans.
    public var seed: UInt64
    /// Samples per lease (a shard is cut into ranges of at most this size).
    public var leaseSize: UInt64
    /// Number of epochs to plan.
    public var epochs: UInt32
    /// K: leases kept granted per rank (prefetch depth).
    public var maxOutstanding: UInt32
    /// A rank silent for longer is presumed dead.
    public var heartbeatTimeout: Double
    /// Job token required in every envelope (nil: not checked, e.g. CURVE authenticates peers).
    public var authToken: String?

    public init(jobId: String, worldSize: UInt32 = 0, seed: UInt64 = 0, leaseSize: UInt64 = 256, epochs: UInt32 = 1,
                maxOutstanding: UInt32 = 4, heartbeatTimeout: Double = 30, authToken: String? = nil) {
        self.jobId = jobId
        self.worldSize = worldSize
        self.seed = seed
        self.leaseSize = leaseSize
        self.epochs = epochs
        self.maxOutstanding = maxOutstanding
        self.heartbeatTimeout = heartbeatTimeout
        self.authToken = authToken
    }

    /// The job token is a secret: it is never written into snapshots (it comes from the command
    /// line at every start).
    enum CodingKeys: String, CodingKey {
        case jobId, worldSize, seed, leaseSize, epochs, maxOutstanding, heartbeatTimeout
    }

    /// Differences in the settings that define the plan (seed, lease size, epochs).
    public func planDifferences(from other: CoordinatorConfig) -> [String] {
        var d: [String] = []
        if seed != other.seed { d.append("seed \(seed) vs \(other.seed)") }
        if leaseSize != other.leaseSize { d.append("lease size \(leaseSize) vs \(other.leaseSize)") }
        if epochs != other.epochs { d.append("epochs \(epochs) vs \(other.epochs)") }
        return d
    }
}

/// A ZeroMQ ROUTER peer: the routing id of the connection a message came from.
public struct Peer: Codable, Hashable, Sendable, CustomStringConvertible {
    public var id: [UInt8]
    public init(_ id: [UInt8]) { self.id = id }
    public var description: String { id.map { String(format: "%02x", $0) }.joined() }
}

/// A message the state machine wants sent.
public struct Outgoing: Hashable, Sendable {
    public var peer: Peer
    public var envelope: Envelope
    public init(peer: Peer, envelope: Envelope) {
        self.peer = peer
        self.envelope = envelope
    }
}

import Foundation
