import XCTest
@testable import Control

/// protobuf-c round trips of every message type, and rejection of bad bytes.
final class CodecTests: XCTestCase {
    static let lease = Lease(id: 42, epoch: 3, shard: 7, shardPath: "00007.tar", start: 256, end: 512)
    static let phases = [PhaseTime(name: "forward", seconds: 0.25), PhaseTime(name: "allreduce", seconds: 0.125)]

    /// One envelope per body case, with non-default values in every field.
    static var everyBody: [Body] {
        var status = StatusReply()
        status.jobId = "job-1"
        status.jobState = .running
        status.epoch = 1
        status.epochs = 3
        status.step = 1000
        status.samples = 64000
        status.totalSamples = 100_000
        status.losses = Losses(ita: 1.5, itm: 0.5, mlm: 2.25, total: 4.25)
        status.samplesPerSecond = 123.5
        status.etaSeconds = 3600
        status.lastCheckpoint = CheckpointInfo(step: 900, path: "/ckpt/000900", committedSamples: 57600)
        status.ranks = [RankStatus(rank: 0, health: .alive, host: "node1", pid: 77, step: 1000, lag: 0, heartbeatAgeSeconds: 0.5, outstandingLeases: 4, stepSeconds: 0.8),
                        RankStatus(rank: 1, health: .lost, host: "node2", pid: 78, step: 990, lag: 10, heartbeatAgeSeconds: 31, outstandingLeases: 2)]
        status.badSamplesIndexed = 5
        status.badSamplesReported = 2
        status.droppedMessages = 9
        status.failureReason = "rank 1 silent"
        status.worldSize = 2
        status.grantedSamples = 70000
        status.phases = phases
        return [
            .registration(Registration(worldSize: 16, host: "node-ü", pid: 1234, buildVersion: "1.2.3", session: 0xDEAD_BEEF_0000_0001)),
            .registrationReply(RegistrationReply(jobState: .paused, resumeStep: 500, resumeCheckpoint: "/c/500", epoch: 2, maxOutstanding: 4, leaseSize: 256)),
            .heartbeat(Heartbeat(step: 17, stepSeconds: 0.75, timings: phases, lastCommandId: 3)),
            .heartbeatReply(HeartbeatReply(jobState: .stopping, commands: [Command(id: 4, kind: .stop, reason: "user"), Command(id: 5, kind: .checkpointNow)])),
            .leaseRequest(LeaseRequest(want: 4)),
            .leaseGrant(LeaseGrant(leases: [lease, Lease(id: 43, epoch: 3, shard: 8, shardPath: "x", start: 0, end: 10)], exhausted: true, epoch: 3)),
            .leaseReturn(LeaseReturn(leaseId: 42, consumed: 100)),
            .progress(ProgressReport(step: 99, samples: 6336, losses: Losses(ita: 1, itm: 2, mlm: 3, total: 6), samplesPerSecond: 50.5, phases: phases, epoch: 1)),
            .checkpointCommitted(CheckpointCommitted(step: 100, path: "/ckpt/100", positions: [DataPosition(rank: 0, leaseId: 42, offset: 17), DataPosition(rank: 1, leaseId: 44, offset: 0)])),
            .command(Command(id: 9, kind: .pause, reason: "maintenance")),
            .statusRequest,
            .statusReply(status),
            .error(ControlError(code: .outOfOrder, message: "seq 3 <= 5")),
            .ack(Ack(commandId: 11)),
            .badSample(BadSampleReport(shard: 3, key: "000000042", kind: "truncated_jpeg")),
        ]
    }

    func testEveryMessageTypeRoundTrips() throws {
        let bodies = Self.everyBody
        XCTAssertEqual(Set(bodies.map(\.name)).count, 15, "one case per oneof member")
        for (i, body) in bodies.enumerated() {
            let env = Envelope(jobId: "job-1", authToken: "secret", seq: UInt64(1000 + i), rank: Int32(i) - 1, replyTo: 7, body: body)
            let bytes = env.encoded()
            XCTAssertFalse(bytes.isEmpty)
            let back = try Envelope(decoding: bytes)
            XCTAssertEqual(back, env, "round trip of \(body.name)")
        }
    }

    /// What the server's cached status replies rely on: an envelope's encoding with zero
    /// `seq`/`reply_to`, followed by a body-less envelope's with them, decodes as the whole reply.
    func testConcatenatedEncodingsMergeIntoOneEnvelope() throws {
        guard case .statusReply(let status)? = Self.everyBody.first(where: { $0.name == Body.statusReply(StatusReply()).name }) else {
            return XCTFail("no status body")
        }
        let whole = Envelope(jobId: "job-1", seq: 31, rank: -1, replyTo: 1_700_000_000_123_456_789, body: .statusReply(status))
        var constant = whole
        constant.seq = 0
        constant.replyTo = 0
        var header = whole
        header.body = nil
        header.jobId = ""
        XCTAssertEqual(try Envelope(decoding: constant.encoded() + header.encoded()), whole)
    }

    func testStatusWithoutCheckpointStaysNil() throws {
        let env = Envelope(jobId: "j", seq: 1, body: .statusReply(StatusReply()))
        guard case .statusReply(let s)? = try Envelope(decoding: env.encoded()).body else { return XCTFail("not a status reply") }
        XCTAssertNil(s.lastCheckpoint)
    }

    func testTruncatedBuffersAreRejectedNotCrashing() throws {
        let bytes = Envelope(jobId: "job-1", authToken: "secret", seq: 5, rank: 0, body: Self.everyBody[11]).encoded()
        var rejected = 0
        for cut in 1..<bytes.count {
            do { _ = try Envelope(decoding: Array(bytes.prefix(cut))) } catch let e as CodecError {
                if case .malformed = e { rejected += 1 }
            }
        }
        // Protobuf prefixes can be valid messages only at field boundaries; most cuts must fail.
        XCTAssertGreaterThan(rejected, bytes.count / 2)
    }

    func testGarbageAndEmptyAndOversizedAreErrors() {
        XCTAssertThrowsError(try Envelope(decoding: [])) { XCTAssertEqual($0 as? CodecError, .empty) }
        XCTAssertThrowsError(try Envelope(decoding: [0xFF, 0xFF, 0xFF, 0xFF, 0xFF])) {
            XCTAssertEqual($0 as? CodecError, .malformed(byteCount: 5))
        }
        // Field 10 (registration) declared 100 bytes long but only 2 present.
        XCTAssertThrowsError(try Envelope(decoding: [0x52, 100, 1, 2]))
        let big = [UInt8](repeating: 0, count: Envelope.maxWireSize + 1)
        XCTAssertThrowsError(try Envelope(decoding: big)) {
            XCTAssertEqual($0 as? CodecError, .oversized(byteCount: Envelope.maxWireSize + 1, limit: Envelope.maxWireSize))
        }
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            let n = Int.random(in: 1...64, using: &rng)
            let junk = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            _ = try? Envelope(decoding: junk)  // must not crash
        }
    }

    func testEnvelopeWithoutBodyDecodesToNilBody() throws {
        let env = Envelope(jobId: "j", seq: 1, rank: 2, body: nil)
        XCTAssertNil(try Envelope(decoding: env.encoded()).body)
    }

    /// The committed generated C code matches proto/albef_control.proto.
    func testGeneratedCodeIsFresh() throws {
        let root = Fixtures.packageRoot
        let proto = root.appendingPathComponent("proto/albef_control.proto")
        let header = try String(contentsOf: root.appendingPathComponent("Sources/CControlProto/include/albef_control.pb-c.h"), encoding: .utf8)
        let sum = try runProcess("/usr/bin/sha256sum", [proto.path])
        XCTAssertEqual(sum.status, 0)
        let digest = String(sum.stdout.prefix(64))
        XCTAssertTrue(header.contains("proto-sha256: \(digest)"),
                      "Sources/CControlProto is stale for proto/albef_control.proto: run scripts/gen-proto and commit")
        if which("protoc-c") != nil {
            let check = try runProcess("/bin/bash", [root.appendingPathComponent("scripts/gen-proto").path, "--check"])
            XCTAssertEqual(check.status, 0, "scripts/gen-proto --check: \(check.stderr)")
        }
    }
}
