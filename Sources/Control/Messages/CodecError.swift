/// Failure to turn wire bytes into an ``Envelope`` (the protobuf-c side of error mapping).
public enum CodecError: Error, Equatable, CustomStringConvertible, Sendable {
    /// protobuf-c's `unpack` rejected the bytes (truncated, garbage, wrong wire types).
    case malformed(byteCount: Int)
    /// The frame is larger than ``Envelope/maxWireSize``.
    case oversized(byteCount: Int, limit: Int)
    /// An empty frame.
    case empty

    public var description: String {
        switch self {
        case .malformed(let n): return "protobuf-c could not decode a \(n)-byte frame as albef.control.v1.Envelope"
        case .oversized(let n, let limit): return "frame of \(n) bytes exceeds the \(limit)-byte limit"
        case .empty: return "empty frame"
        }
    }
}
