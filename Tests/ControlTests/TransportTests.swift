import CZMQ
import XCTest
@testable import Control

/// ZeroMQ wrapper: ROUTER/DEALER on loopback, error mapping.
final class TransportTests: XCTestCase {
    func testRouterDealerRequestReplyOnEphemeralPort() throws {
        let ctx = try ZMQContext()
        let router = try ZMQSocket(context: ctx, kind: .router)
        try router.bind("tcp://127.0.0.1:*")
        let endpoint = try router.lastEndpoint
        XCTAssertTrue(endpoint.hasPrefix("tcp://127.0.0.1:"), endpoint)
        XCTAssertNotEqual(endpoint, "tcp://127.0.0.1:*")
        let dealer = try ZMQSocket(context: ctx, kind: .dealer)
        try dealer.connect(endpoint)
        let request = Envelope(jobId: "j", seq: 1, rank: 0, body: .leaseRequest(LeaseRequest(want: 2)))
        XCTAssertTrue(try dealer.send([request.encoded()]))
        XCTAssertTrue(try router.waitReadable(timeoutMs: 3000), "router got nothing within 3 s")
        let frames = try XCTUnwrap(try router.receive(dontWait: true))
        XCTAssertEqual(frames.count, 2)
        XCTAssertEqual(try Envelope(decoding: frames[1]), request)
        let reply = Envelope(jobId: "j", seq: 1, replyTo: 1, body: .ack(Ack(commandId: 5)))
        try router.send([frames[0], reply.encoded()])
        XCTAssertTrue(try dealer.waitReadable(timeoutMs: 3000), "dealer got nothing within 3 s")
        let back = try XCTUnwrap(try dealer.receive(dontWait: true))
        XCTAssertEqual(try Envelope(decoding: back[0]), reply)
        XCTAssertNil(try dealer.receive(dontWait: true), "nothing else queued")
    }

    func testErrorsAreTypedWithErrnoAndMessage() throws {
        let ctx = try ZMQContext()
        let a = try ZMQSocket(context: ctx, kind: .router)
        try a.bind("tcp://127.0.0.1:*")
        let b = try ZMQSocket(context: ctx, kind: .router)
        XCTAssertThrowsError(try b.bind(try a.lastEndpoint)) { error in
            let z = error as? ZMQError
            XCTAssertEqual(z?.errno, EADDRINUSE)
            XCTAssertFalse(z?.message.isEmpty ?? true)
        }
        XCTAssertThrowsError(try b.bind("nonsense://x")) { XCTAssertNotNil($0 as? ZMQError) }
        b.close()
        XCTAssertThrowsError(try b.bind("tcp://127.0.0.1:*")) { XCTAssertEqual(($0 as? ZMQError)?.errno, ENOTSOCK) }
    }

    func testCurveHandshakeWithGeneratedKeys() throws {
        XCTAssertTrue(zmqHas("curve"), "this libzmq lacks CURVE (libzmq3-dev with libsodium has it)")
        let dir = Fixtures.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let keys = try CurveKeyFiles.generate(into: dir)
        XCTAssertEqual(try CurveKeyFiles.load(from: dir).client, keys.client)
        let ctx = try ZMQContext()
        let router = try ZMQSocket(context: ctx, kind: .router)
        try router.makeCurveServer(secretKey: keys.server.secretKey)
        try router.bind("tcp://127.0.0.1:*")
        let good = try ZMQSocket(context: ctx, kind: .dealer)
        try good.makeCurveClient(serverKey: keys.server.publicKey, publicKey: keys.client.publicKey, secretKey: keys.client.secretKey)
        try good.connect(try router.lastEndpoint)
        let bad = try ZMQSocket(context: ctx, kind: .dealer)  // plain TCP: the handshake fails
        try bad.connect(try router.lastEndpoint)
        try bad.send([[1, 2, 3]])
        try good.send([[4, 5, 6]])
        XCTAssertTrue(try router.waitReadable(timeoutMs: 3000))
        let frames = try XCTUnwrap(try router.receive(dontWait: true))
        XCTAssertEqual(frames.last, [4, 5, 6])
        XCTAssertFalse(try router.waitReadable(timeoutMs: 200), "the unauthenticated peer's frame must not arrive")
    }
}
