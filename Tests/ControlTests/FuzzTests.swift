import CZMQ
import XCTest
@testable import Control

/// Deterministic generator for the fuzzer (SplitMix64).
struct FuzzRNG: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// ≥ 10 000 random and mutated frames against a live coordinator: it stays up, every bad frame is
/// counted, and nothing it owns changes.
final class FuzzTests: XCTestCase {
    func testTenThousandBadFramesLeaveTheCoordinatorUpAndUnchanged() throws {
        let config = CoordinatorConfig(jobId: "fuzz", worldSize: 1, leaseSize: 32, epochs: 1, maxOutstanding: 2, authToken: "tok")
        let (server, thread) = try LiveCoordinatorTests.start(config, Fixtures.index([400, 400]))
        defer { LiveCoordinatorTests.shutdown(server, thread) }
        let rank0 = try CoordinatorClient(endpoint: server.endpoint, auth: .token("tok"), rank: 0, worldSize: 1, jobId: "fuzz", prefetch: 2)
        defer { rank0.close() }
        rank0.register()
        let first = try XCTUnwrap(rank0.waitForLease(timeout: 5))
        XCTAssertTrue(LiveCoordinatorTests.eventually { server.state.outstandingLeases(of: 0).count == 3 }, "1 taken + 2 queued")
        XCTAssertTrue(LiveCoordinatorTests.eventually { rank0.queuedLeases == 2 })
        let leasesBefore = server.state.leases
        let tool = ControlRequester(endpoint: server.endpoint, auth: .token("tok"), timeout: 3)
        let droppedBefore = try tool.status().droppedMessages

        var rng = FuzzRNG(state: 0xA1BE_F00D)
        let templates: [Envelope] = CodecTests.everyBody.enumerated().map { i, body in
            Envelope(jobId: "fuzz", authToken: i % 2 == 0 ? "" : "wrong", seq: UInt64(i + 1), rank: Int32(i % 3) - 1, body: body)
        }
        let ctx = try ZMQContext()
        let sockets = try (0..<4).map { _ -> ZMQSocket in
            let s = try ZMQSocket(context: ctx, kind: .dealer)
            try s.setOption(ZMQ_SNDHWM, Int32(100_000))
            try s.connect(server.endpoint)
            return s
        }
        func drainReplies() throws {
            for s in sockets { while try s.receive(dontWait: true) != nil {} }
        }
        var sent = 0
        for i in 0..<10_000 {
            var frames: [[UInt8]]
            switch rng.next() % 6 {
            case 0:  // random bytes, sometimes empty
                frames = [(0..<Int(rng.next() % 200)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }]
            case 1, 2:  // a real message (without the token) with bytes flipped
                var b = templates[Int(rng.next() % UInt64(templates.count))].encoded()
                for _ in 0..<(1 + rng.next() % 5) where !b.isEmpty { b[Int(rng.next() % UInt64(b.count))] ^= UInt8(truncatingIfNeeded: rng.next() | 1) }
                frames = [b]
            case 3:  // truncated or extended
                var b = templates[Int(rng.next() % UInt64(templates.count))].encoded()
                if rng.next() % 2 == 0 { b = Array(b.prefix(Int(rng.next() % UInt64(b.count + 1)))) } else {
                    b += (0..<Int(1 + rng.next() % 20)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                }
                frames = [b]
            case 4:  // several frames
                frames = (0..<Int(2 + rng.next() % 3)).map { _ in (0..<Int(1 + rng.next() % 30)).map { _ in UInt8(truncatingIfNeeded: rng.next()) } }
            default:  // well-formed, right token, but wrong job / unknown rank / replayed (out of order)
                let choice = rng.next() % 3
                // (A replayed lease request is idempotent and answered, so replays use the others.)
                let bodies: [Body] = [.leaseReturn(LeaseReturn(leaseId: first.id, consumed: 1)), .heartbeat(Heartbeat(step: 1)),
                                      .leaseGrant(LeaseGrant(leases: [first], exhausted: true, epoch: 0)), .leaseRequest(LeaseRequest(want: 9))]
                let body = bodies[Int(rng.next() % UInt64(choice == 2 ? 3 : 4))]
                let env = Envelope(jobId: choice == 0 ? "other-job" : "fuzz", authToken: "tok", seq: choice == 2 ? 0 : 5,
                                   rank: choice == 1 ? 1 : (choice == 2 ? 0 : 7), body: body)
                frames = [env.encoded()]
            }
            if try sockets[i % sockets.count].send(frames, dontWait: true) { sent += 1 }
            if i % 200 == 0 { try drainReplies() }
        }
        XCTAssertGreaterThanOrEqual(sent, 10_000)
        XCTAssertTrue(LiveCoordinatorTests.eventually(20) {
            (try? drainReplies()) != nil && server.state.droppedMessages >= droppedBefore + UInt64(sent)
        }, "every bad frame is counted: \(server.state.droppedMessages - droppedBefore) of \(sent)")

        // Oversized frames (> ZMQ_MAXMSGSIZE): libzmq drops the offending connection.
        let big = try ZMQSocket(context: ctx, kind: .dealer)
        try big.connect(server.endpoint)
        for _ in 0..<3 { try big.send([[UInt8](repeating: 0x52, count: Envelope.maxWireSize * 2)], dontWait: true) }
        usleep(100_000)

        // Still up, answers status correctly, and nothing it owns changed.
        XCTAssertFalse(thread.isFinished)
        let status = try tool.status()
        XCTAssertEqual(status.jobId, "fuzz")
        XCTAssertEqual(status.jobState, .running)
        XCTAssertEqual(status.ranks.map(\.rank), [0])
        XCTAssertEqual(status.droppedMessages, droppedBefore + UInt64(sent))
        XCTAssertEqual(server.state.leases, leasesBefore)
        XCTAssertEqual(status.ranks.first?.outstandingLeases, 3)
        // And the legitimate rank keeps working.
        rank0.completeLease(first)
        XCTAssertNotNil(rank0.waitForLease(timeout: 5))
    }
}
