import ArgumentParser
import Control
import Foundation

/// How a tool reaches the coordinator.
struct ConnectionOptions: ParsableArguments {
    @Option(help: "Coordinator endpoint.")
    var endpoint = "tcp://127.0.0.1:5555"
    @Option(help: "Job token (when the coordinator runs with --token).")
    var token: String?
    @Option(name: .customLong("curve-keys"), help: "Directory of keys from `albef-coord keygen` (server.pub, client.pub, client.key).")
    var curveKeys: String?
    @Option(help: "Seconds to wait for an answer.")
    var timeout: Double = 3

    func validate() throws {
        if token != nil && curveKeys != nil { throw ValidationError("use either --token or --curve-keys") }
        if timeout <= 0 { throw ValidationError("--timeout must be > 0") }
    }

    func auth() throws -> ClientAuth {
        if let dir = curveKeys {
            let keys = try CurveKeyFiles.loadClient(from: URL(fileURLWithPath: dir))
            return .curve(serverKey: keys.serverKey, client: keys.client)
        }
        return token.map { .token($0) } ?? ClientAuth.none
    }

    func requester() throws -> ControlRequester {
        ControlRequester(endpoint: endpoint, auth: try auth(), timeout: timeout)
    }
}

/// Prints an error the way all subcommands do and maps it to an exit code.
func fail(_ error: Error) -> ExitCode {
    FileHandle.standardError.write(Data("albef-coord: error: \(error)\n".utf8))
    return ExitCode.failure
}
