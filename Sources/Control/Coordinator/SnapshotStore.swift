import Foundation

/// Saves and loads the coordinator's state as `state.json` in a directory, atomically:
/// write `state.json.tmp`, fsync it, rename over `state.json`, fsync the directory.
/// A crash at any point leaves either the old or the new snapshot, never a torn one.
public struct SnapshotStore: Sendable {
    public let directory: URL
    public var url: URL { directory.appendingPathComponent("state.json") }

    /// A mutable cell (the store is a value shared by the writer thread only).
    final class Box: @unchecked Sendable {
        var value: Int
        init(_ v: Int) { value = v }
    }

    public init(directory: URL) {
        self.directory = directory
    }

    /// Writes the state durably.
    public func save(_ state: CoordinatorState) throws {
        do { try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true) } catch {
            throw CoordinatorError.badSnapshot(path: directory.path, reason: "cannot create the state directory (\(error.localizedDescription)); pick a writable --state-dir")
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = try encoder.encode(state)
        let tmp = directory.appendingPathComponent("state.json.tmp")
        try SnapshotStore.writeDurably(data, to: tmp)
        guard rename(tmp.path, url.path) == 0 else {
            throw CoordinatorError.badSnapshot(path: url.path, reason: "rename failed: \(String(cString: strerror(errno)))")
        }
        if state.quarantine.count != lastQuarantineCount.value {
            // The bad samples the ranks reported, one JSON object per line (rewritten atomically).
            var lines = Data()
            for b in state.quarantine {
                let o: [String: Any] = ["shard": b.shard, "shard_path": Int(b.shard) < state.shardPaths.count ? state.shardPaths[Int(b.shard)] : "",
                                        "key": b.key, "kind": b.kind]
                lines += (try JSONSerialization.data(withJSONObject: o, options: [.sortedKeys])) + Data("\n".utf8)
            }
            let qtmp = directory.appendingPathComponent("quarantine.jsonl.tmp")
            try SnapshotStore.writeDurably(lines, to: qtmp)
            _ = rename(qtmp.path, quarantineURL.path)
            lastQuarantineCount.value = state.quarantine.count
        }
        let dfd = open(directory.path, O_RDONLY)
        if dfd >= 0 { fsync(dfd); close(dfd) }
    }

    /// `quarantine.jsonl`: every bad sample the ranks reported (shard, shard_path, key, kind).
    public var quarantineURL: URL { directory.appendingPathComponent("quarantine.jsonl") }
    private let lastQuarantineCount = Box(-1)

    /// The saved state, or nil when there is none.
    public func load() throws -> CoordinatorState? {
        guard FileManager.default.fileExists(atPath: url.path) else { return nil }
        do {
            return try JSONDecoder().decode(CoordinatorState.self, from: Data(contentsOf: url))
        } catch {
            throw CoordinatorError.badSnapshot(path: url.path, reason: "\(error)")
        }
    }

    private static func writeDurably(_ data: Data, to url: URL) throws {
        let fd = open(url.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else {
            throw CoordinatorError.badSnapshot(path: url.path, reason: "cannot create: \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        try data.withUnsafeBytes { (buf: UnsafeRawBufferPointer) in
            guard let base = buf.baseAddress else { return }
            var offset = 0
            while offset < buf.count {
                let n = write(fd, base + offset, buf.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw CoordinatorError.badSnapshot(path: url.path, reason: "write failed: \(String(cString: strerror(errno)))")
                }
                offset += n
            }
        }
        guard fsync(fd) == 0 else {
            throw CoordinatorError.badSnapshot(path: url.path, reason: "fsync failed: \(String(cString: strerror(errno)))")
        }
    }
}
