import Foundation

/// Saves and loads the coordinator's state as `state.json` in a directory, atomically:
/// write `state.json.tmp`, fsync it, rename over `state.json`, fsync the directory.
/// A crash at any point leaves either the old or the new snapshot, never a torn one.
public struct SnapshotStore: Sendable {
    public let directory: URL
    public var url: URL { directory.appendingPathComponent("state.json") }

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
        let dfd = open(directory.path, O_RDONLY)
        if dfd >= 0 { fsync(dfd); close(dfd) }
    }

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
