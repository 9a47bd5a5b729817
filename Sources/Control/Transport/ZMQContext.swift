import CZMQ

/// Owns a ZeroMQ context (`zmq_ctx_new`), terminated in `deinit`.
///
/// Sockets keep their context alive, so the context is terminated only after every socket made
/// from it has been closed (sockets use linger 0, so termination never blocks).
public final class ZMQContext: @unchecked Sendable {
    /// The raw `void *` context.
    public let handle: UnsafeMutableRawPointer

    public init(ioThreads: Int32 = 1) throws {
        handle = try zmqCheck(zmq_ctx_new(), "zmq_ctx_new")
        try zmqCheck(zmq_ctx_set(handle, ZMQ_IO_THREADS, ioThreads), "zmq_ctx_set")
    }

    deinit {
        var rc: Int32
        repeat { rc = zmq_ctx_term(handle) } while rc == -1 && zmq_errno() == EINTR
    }
}
