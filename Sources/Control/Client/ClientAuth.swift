/// How a client proves it belongs to the job.
public enum ClientAuth: Sendable, Equatable {
    /// No credentials (only for coordinators started without --token / --curve-keys).
    case none
    /// The job token, sent in every envelope.
    case token(String)
    /// ZeroMQ CURVE: the server's public key and this client's keypair (optionally a token too).
    case curve(serverKey: String, client: CurveKeyPair, token: String = "")

    /// The token put in envelopes.
    public var token: String {
        switch self {
        case .none: return ""
        case .token(let t): return t
        case .curve(_, _, let t): return t
        }
    }

    /// Applies CURVE client settings to a socket (before `connect`).
    func configure(_ socket: ZMQSocket) throws {
        if case .curve(let serverKey, let client, _) = self {
            try socket.makeCurveClient(serverKey: serverKey, publicKey: client.publicKey, secretKey: client.secretKey)
        }
    }
}
