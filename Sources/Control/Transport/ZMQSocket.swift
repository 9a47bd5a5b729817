import CZMQ

/// A ZeroMQ socket (`zmq_socket`), closed in `deinit`.
///
/// Not thread-safe (neither is a ZeroMQ socket): use one socket from one thread at a time.
/// Linger is 0, so closing never blocks on undelivered messages.
public final class ZMQSocket {
    /// The socket types this package uses.
    public enum Kind: Int32 {
        case router, dealer, rep, req
        var raw: Int32 {
            switch self {
            case .router: return ZMQ_ROUTER
            case .dealer: return ZMQ_DEALER
            case .rep: return ZMQ_REP
            case .req: return ZMQ_REQ
            }
        }
    }

    /// The raw `void *` socket; nil once closed.
    public private(set) var handle: UnsafeMutableRawPointer?
    /// Keeps the context alive as long as the socket.
    public let context: ZMQContext

    public init(context: ZMQContext, kind: Kind) throws {
        self.context = context
        handle = try zmqCheck(zmq_socket(context.handle, kind.raw), "zmq_socket")
        try setOption(ZMQ_LINGER, 0)
    }

    deinit { close() }

    /// Closes the socket now (idempotent).
    public func close() {
        if let handle { zmq_close(handle) }
        handle = nil
    }

    private func live(_ function: String = #function) throws -> UnsafeMutableRawPointer {
        guard let handle else { throw ZMQError(errno: ENOTSOCK, message: "socket is closed", function: function) }
        return handle
    }

    // MARK: Options

    /// Sets an integer option (`ZMQ_LINGER`, `ZMQ_SNDHWM`, `ZMQ_CURVE_SERVER`, ...).
    public func setOption(_ option: Int32, _ value: Int32) throws {
        var v = value
        try zmqCheck(zmq_setsockopt(try live(), option, &v, MemoryLayout<Int32>.size), "zmq_setsockopt")
    }

    /// Sets a 64-bit integer option (`ZMQ_MAXMSGSIZE`).
    public func setOption(_ option: Int32, int64 value: Int64) throws {
        var v = value
        try zmqCheck(zmq_setsockopt(try live(), option, &v, MemoryLayout<Int64>.size), "zmq_setsockopt")
    }

    /// Sets a binary/string option (`ZMQ_ROUTING_ID`, `ZMQ_CURVE_*KEY` as 40-char Z85 text).
    public func setOption(_ option: Int32, bytes: [UInt8]) throws {
        let h = try live()
        _ = try bytes.withUnsafeBytes { buf in
            try zmqCheck(zmq_setsockopt(h, option, buf.baseAddress, buf.count), "zmq_setsockopt")
        }
    }

    /// Reads a string option (`ZMQ_LAST_ENDPOINT`).
    public func stringOption(_ option: Int32) throws -> String {
        var buffer = [CChar](repeating: 0, count: 1024)
        var size = buffer.count
        try zmqCheck(zmq_getsockopt(try live(), option, &buffer, &size), "zmq_getsockopt")
        let bytes = buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Configures this socket as a CURVE server with its secret key (Z85).
    public func makeCurveServer(secretKey: String) throws {
        try setOption(ZMQ_CURVE_SERVER, 1)
        try setOption(ZMQ_CURVE_SECRETKEY, bytes: Array(secretKey.utf8))
    }

    /// Configures this socket as a CURVE client of a server with public key `serverKey` (Z85).
    public func makeCurveClient(serverKey: String, publicKey: String, secretKey: String) throws {
        try setOption(ZMQ_CURVE_SERVERKEY, bytes: Array(serverKey.utf8))
        try setOption(ZMQ_CURVE_PUBLICKEY, bytes: Array(publicKey.utf8))
        try setOption(ZMQ_CURVE_SECRETKEY, bytes: Array(secretKey.utf8))
    }

    // MARK: Endpoints

    /// Binds to an endpoint (`tcp://*:5555`, `tcp://127.0.0.1:*` for an ephemeral port, `inproc://x`).
    public func bind(_ endpoint: String) throws {
        try zmqCheck(zmq_bind(try live(), endpoint), "zmq_bind(\(endpoint))")
    }

    /// Connects to an endpoint; ZeroMQ reconnects automatically if the peer goes away.
    public func connect(_ endpoint: String) throws {
        try zmqCheck(zmq_connect(try live(), endpoint), "zmq_connect(\(endpoint))")
    }

    /// The endpoint actually bound last (resolves `*` ports): `ZMQ_LAST_ENDPOINT`.
    public var lastEndpoint: String {
        get throws { try stringOption(ZMQ_LAST_ENDPOINT) }
    }

    // MARK: Messages

    /// Sends a multipart message. Returns false (nothing sent) when `dontWait` and the send would
    /// block (high-water mark reached or no peer).
    @discardableResult
    public func send(_ frames: [[UInt8]], dontWait: Bool = false) throws -> Bool {
        let h = try live()
        for (i, frame) in frames.enumerated() {
            var flags: Int32 = dontWait ? ZMQ_DONTWAIT : 0
            if i < frames.count - 1 { flags |= ZMQ_SNDMORE }
            while true {
                let rc = frame.withUnsafeBytes { zmq_send(h, $0.baseAddress, $0.count, flags) }
                if rc >= 0 { break }
                let error = ZMQError.current("zmq_send")
                if error.isInterrupted { continue }
                if error.isWouldBlock && i == 0 { return false }
                throw error
            }
        }
        return true
    }

    /// Receives one multipart message; nil when `dontWait` and nothing is queued.
    public func receive(dontWait: Bool = false) throws -> [[UInt8]]? {
        let h = try live()
        var frames: [[UInt8]] = []
        var msg = zmq_msg_t()
        try zmqCheck(zmq_msg_init(&msg), "zmq_msg_init")
        defer { zmq_msg_close(&msg) }
        while true {
            let flags: Int32 = (dontWait && frames.isEmpty) ? ZMQ_DONTWAIT : 0
            let rc = zmq_msg_recv(&msg, h, flags)
            if rc < 0 {
                let error = ZMQError.current("zmq_msg_recv")
                if error.isInterrupted { continue }
                if error.isWouldBlock && frames.isEmpty { return nil }
                throw error
            }
            let size = zmq_msg_size(&msg)
            if let data = zmq_msg_data(&msg), size > 0 {
                frames.append(Array(UnsafeRawBufferPointer(start: data, count: size)))
            } else {
                frames.append([])
            }
            if zmq_msg_more(&msg) == 0 { return frames }
        }
    }

    /// Waits up to `timeoutMs` (-1: forever, 0: just check) until a message can be received.
    public func waitReadable(timeoutMs: Int) throws -> Bool {
        var item = zmq_pollitem_t(socket: try live(), fd: 0, events: Int16(ZMQ_POLLIN), revents: 0)
        while true {
            let rc = zmq_poll(&item, 1, timeoutMs)
            if rc >= 0 { return rc > 0 && (item.revents & Int16(ZMQ_POLLIN)) != 0 }
            let error = ZMQError.current("zmq_poll")
            if error.isInterrupted { continue }
            throw error
        }
    }

    /// Waits up to `timeoutMs` until any of `sockets` can receive, or any of the plain file
    /// descriptors `fds` is readable; returns which are (sockets first, then `fds`).
    public static func waitReadable(_ sockets: [ZMQSocket], fds: [Int32] = [], timeoutMs: Int) throws -> [Bool] {
        var items = try sockets.map { zmq_pollitem_t(socket: try $0.live(), fd: 0, events: Int16(ZMQ_POLLIN), revents: 0) }
        items += fds.map { zmq_pollitem_t(socket: nil, fd: $0, events: Int16(ZMQ_POLLIN), revents: 0) }
        while true {
            let rc = zmq_poll(&items, Int32(items.count), timeoutMs)
            if rc >= 0 { return items.map { ($0.revents & Int16(ZMQ_POLLIN)) != 0 } }
            let error = ZMQError.current("zmq_poll")
            if error.isInterrupted { continue }
            throw error
        }
    }
}
