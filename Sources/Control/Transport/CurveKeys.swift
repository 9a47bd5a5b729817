import CZMQ
import Foundation

/// A CURVE keypair in Z85 text (40 characters each), as `zmq_curve_keypair` makes them.
public struct CurveKeyPair: Equatable, Sendable {
    public var publicKey: String
    public var secretKey: String

    public init(publicKey: String, secretKey: String) {
        self.publicKey = publicKey
        self.secretKey = secretKey
    }

    /// A fresh random keypair. Throws when libzmq lacks CURVE (`zmq_has("curve") == 0`).
    public static func generate() throws -> CurveKeyPair {
        var pub = [CChar](repeating: 0, count: 41)
        var sec = [CChar](repeating: 0, count: 41)
        try zmqCheck(zmq_curve_keypair(&pub, &sec), "zmq_curve_keypair")
        return CurveKeyPair(publicKey: String(cString: pub), secretKey: String(cString: sec))
    }
}

/// The key files `albef-coord keygen` writes into a directory:
/// `server.pub`, `server.key` (coordinator) and `client.pub`, `client.key` (ranks and tools).
public struct CurveKeyFiles: Sendable {
    public var server: CurveKeyPair
    public var client: CurveKeyPair

    public init(server: CurveKeyPair, client: CurveKeyPair) {
        self.server = server
        self.client = client
    }

    /// Generates both keypairs and writes the four files (secret files mode 0600).
    public static func generate(into directory: URL) throws -> CurveKeyFiles {
        let files = CurveKeyFiles(server: try .generate(), client: try .generate())
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        for (name, text, secret) in [
            ("server.pub", files.server.publicKey, false), ("server.key", files.server.secretKey, true),
            ("client.pub", files.client.publicKey, false), ("client.key", files.client.secretKey, true),
        ] {
            let url = directory.appendingPathComponent(name)
            try (text + "\n").write(to: url, atomically: true, encoding: .utf8)
            try FileManager.default.setAttributes([.posixPermissions: secret ? 0o600 : 0o644], ofItemAtPath: url.path)
        }
        return files
    }

    /// Reads the four files written by ``generate(into:)``.
    public static func load(from directory: URL) throws -> CurveKeyFiles {
        CurveKeyFiles(server: CurveKeyPair(publicKey: try read("server.pub", in: directory), secretKey: try read("server.key", in: directory)),
                      client: CurveKeyPair(publicKey: try read("client.pub", in: directory), secretKey: try read("client.key", in: directory)))
    }

    /// What the coordinator needs: its keypair, and the client public keys it admits
    /// (`client.pub`, plus every `*.pub` in `clients/` if that folder exists).
    public static func loadServer(from directory: URL) throws -> (server: CurveKeyPair, allowedClients: [String]) {
        let server = CurveKeyPair(publicKey: try read("server.pub", in: directory), secretKey: try read("server.key", in: directory))
        var allowed = [try read("client.pub", in: directory)]
        let extra = directory.appendingPathComponent("clients")
        if let names = try? FileManager.default.contentsOfDirectory(atPath: extra.path) {
            for name in names.sorted() where name.hasSuffix(".pub") { allowed.append(try read(name, in: extra)) }
        }
        return (server, allowed)
    }

    /// What a rank or tool needs: the server's public key and the client keypair.
    public static func loadClient(from directory: URL) throws -> (serverKey: String, client: CurveKeyPair) {
        (try read("server.pub", in: directory),
         CurveKeyPair(publicKey: try read("client.pub", in: directory), secretKey: try read("client.key", in: directory)))
    }

    private static func read(_ name: String, in directory: URL) throws -> String {
        let url = directory.appendingPathComponent(name)
        guard let text = try? String(contentsOf: url, encoding: .utf8) else {
            throw CoordinatorError.badKeyFile(path: url.path, reason: "cannot read it; run `albef-coord keygen --out \(directory.path)`")
        }
        let key = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard key.utf8.count == 40 else {
            throw CoordinatorError.badKeyFile(path: url.path, reason: "expected a 40-character Z85 key")
        }
        return key
    }
}

/// Z85 text of a 32-byte binary CURVE key (as ZAP requests carry them).
public func z85Encode(_ key: [UInt8]) -> String? {
    guard key.count == 32 else { return nil }
    var out = [CChar](repeating: 0, count: 41)
    let ok = key.withUnsafeBufferPointer { zmq_z85_encode(&out, $0.baseAddress, 32) }
    return ok == nil ? nil : String(cString: out)
}
