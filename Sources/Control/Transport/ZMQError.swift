import CZMQ

/// A failed ZeroMQ call: `errno` as reported by `zmq_errno()`, and `zmq_strerror`'s text.
///
/// This file owns the mapping from ZeroMQ return codes to thrown errors; no other file reads
/// `zmq_*` return codes directly (they call ``zmqCheck(_:_:)``).
public struct ZMQError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The `errno` value (`EAGAIN`, `EINVAL`, `ETERM`, `EADDRINUSE`, ...).
    public var errno: Int32
    /// `zmq_strerror(errno)`.
    public var message: String
    /// The ZeroMQ function that failed.
    public var function: String

    public init(errno: Int32, message: String, function: String = "") {
        self.errno = errno
        self.message = message
        self.function = function
    }

    /// The error for the calling thread's current `zmq_errno()`.
    public static func current(_ function: String = #function) -> ZMQError {
        let code = zmq_errno()
        return ZMQError(errno: code, message: String(cString: zmq_strerror(code)), function: function)
    }

    /// True for "try again" (non-blocking operation would block).
    public var isWouldBlock: Bool { errno == EAGAIN }
    /// True when the call was interrupted by a signal and may be retried.
    public var isInterrupted: Bool { errno == EINTR }
    /// True when the context was terminated.
    public var isTerminated: Bool { errno == ETERM }

    public var description: String {
        let hint: String
        switch errno {
        case EADDRINUSE: hint = " HINT: the address is already bound; pick another port or stop the other process"
        case EINVAL: hint = " HINT: check the endpoint syntax (e.g. tcp://127.0.0.1:5555, tcp://*:5555)"
        case EPROTONOSUPPORT: hint = " HINT: the transport is not supported by this libzmq"
        default: hint = ""
        }
        return "ZeroMQ \(function) failed: \(message) (errno \(errno))\(hint)"
    }
}

/// Throws ``ZMQError`` when a ZeroMQ call returned -1; returns the code otherwise.
@discardableResult
@inline(__always)
public func zmqCheck(_ rc: Int32, _ function: String = #function) throws -> Int32 {
    if rc == -1 { throw ZMQError.current(function) }
    return rc
}

/// Like ``zmqCheck(_:_:)`` for calls that return a pointer (`zmq_ctx_new`, `zmq_socket`).
@inline(__always)
public func zmqCheck(_ pointer: UnsafeMutableRawPointer?, _ function: String = #function) throws
    -> UnsafeMutableRawPointer
{
    guard let pointer else { throw ZMQError.current(function) }
    return pointer
}

/// Whether this libzmq was built with a capability ("curve", "ipc", ...).
public func zmqHas(_ capability: String) -> Bool {
    zmq_has(capability) != 0
}
