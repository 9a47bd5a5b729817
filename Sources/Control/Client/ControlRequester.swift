import CZMQ
import Foundation

/// One-shot request/reply with the coordinator, bounded by a timeout (used by the CLI's `status`,
/// `stop` and `checkpoint`, and by tests). Never hangs: no answer in time throws
/// ``CoordinatorError/unreachable(endpoint:timeoutSeconds:)``.
public struct ControlRequester: Sendable {
    public var endpoint: String
    public var auth: ClientAuth
    public var jobId: String
    public var timeout: Double

    public init(endpoint: String, auth: ClientAuth = .none, jobId: String = "", timeout: Double = 3) {
        self.endpoint = endpoint
        self.auth = auth
        self.jobId = jobId
        self.timeout = timeout
    }

    /// Sends `body` as a tool (rank -1) and returns the reply's body; error replies are thrown as
    /// ``CoordinatorError/rejected(endpoint:error:)``.
    public func request(_ body: Body, context: ZMQContext? = nil) throws -> Body {
        let ctx = try context ?? ZMQContext()
        let socket = try ZMQSocket(context: ctx, kind: .dealer)
        defer { socket.close() }
        try auth.configure(socket)
        try socket.connect(endpoint)
        let seq = UInt64(Date().timeIntervalSince1970 * 1000)
        let env = Envelope(jobId: jobId, authToken: auth.token, seq: seq, rank: -1, body: body)
        try socket.send([env.encoded()], dontWait: true)
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let left = deadline.timeIntervalSinceNow
            guard left > 0, try socket.waitReadable(timeoutMs: Int(left * 1000) + 1),
                  let frames = try socket.receive(dontWait: true)
            else {
                if deadline.timeIntervalSinceNow > 0 { continue }
                throw CoordinatorError.unreachable(endpoint: endpoint, timeoutSeconds: timeout)
            }
            guard let payload = frames.last else { continue }
            let reply = try Envelope(decoding: payload)
            if reply.replyTo != 0 && reply.replyTo != seq { continue }
            switch reply.body {
            case .error(let e): throw CoordinatorError.rejected(endpoint: endpoint, error: e)
            case .some(let b): return b
            case .none: throw CoordinatorError.unexpectedReply(endpoint: endpoint, got: "empty body")
            }
        }
    }

    /// The job's status.
    public func status() throws -> StatusReply {
        let b = try request(.statusRequest)
        guard case .statusReply(let s) = b else { throw CoordinatorError.unexpectedReply(endpoint: endpoint, got: b.name) }
        return s
    }

    /// Issues a command for the job; returns the id the coordinator gave it (0 if it applied
    /// directly, e.g. stopping a job that has no live ranks).
    public func command(_ kind: CommandKind, reason: String = "") throws -> UInt64 {
        let b = try request(.command(Command(kind: kind, reason: reason)))
        guard case .ack(let ack) = b else { throw CoordinatorError.unexpectedReply(endpoint: endpoint, got: b.name) }
        return ack.commandId
    }
}
