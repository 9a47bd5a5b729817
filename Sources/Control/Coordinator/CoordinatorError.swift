/// Environment and protocol failures of the coordinator and its clients.
public enum CoordinatorError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The corpus index could not be read or is not the format `albef-data index` writes.
    case badCorpusIndex(path: String, reason: String)
    /// The state snapshot exists but cannot be read.
    case badSnapshot(path: String, reason: String)
    /// The snapshot on disk belongs to another job or corpus.
    case snapshotMismatch(path: String, reason: String)
    /// A CURVE key file is missing or malformed.
    case badKeyFile(path: String, reason: String)
    /// No reply from the coordinator in time.
    case unreachable(endpoint: String, timeoutSeconds: Double)
    /// The coordinator answered with an error.
    case rejected(endpoint: String, error: ControlError)
    /// The coordinator answered with an unexpected message.
    case unexpectedReply(endpoint: String, got: String)

    public var description: String {
        switch self {
        case .badCorpusIndex(let path, let reason):
            return "corpus index \(path): \(reason). HINT: write it with `albef-data index` (format: {\"version\": 1, \"shards\": [...]})"
        case .badSnapshot(let path, let reason):
            return "coordinator state \(path): \(reason). HINT: move the state directory aside to start a new job"
        case .snapshotMismatch(let path, let reason):
            return "coordinator state \(path) does not match this job: \(reason). HINT: use another --state-dir or the original --job-id/--corpus"
        case .badKeyFile(let path, let reason):
            return "CURVE key file \(path): \(reason)"
        case .unreachable(let endpoint, let timeout):
            return "no answer from the coordinator at \(endpoint) within \(timeout) s. HINT: start it with `albef-coord serve --bind \(endpoint.replacingOccurrences(of: "127.0.0.1", with: "*")) ...`, or pass the right --endpoint (and the same --token / --curve-keys)"
        case .rejected(let endpoint, let error):
            let hint: String
            switch error.code {
            case .unauthenticated: hint = " HINT: pass the job's --token (or --curve-keys)"
            case .wrongJob: hint = " HINT: this coordinator runs another job; check --endpoint"
            case .unsupportedVersion: hint = " HINT: albef-coord and the client were built from different schema versions"
            default: hint = ""
            }
            return "the coordinator at \(endpoint) rejected the request: \(error.code): \(error.message)\(hint)"
        case .unexpectedReply(let endpoint, let got):
            return "unexpected reply from the coordinator at \(endpoint): \(got)"
        }
    }
}
