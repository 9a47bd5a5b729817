import XCTest
@testable import Control

/// Spawns the built `albef-coord` binary: `serve`, `status --json`, `status`, `stop`, with
/// simulated ranks (``CoordinatorClient``) in this process.
final class EndToEndCLITests: XCTestCase {
    /// The built executable next to the test bundle (on Linux `bundleURL` is already the build
    /// folder; on macOS it is the .xctest inside it).
    var binary: String {
        let bundle = Bundle(for: Self.self).bundleURL
        let candidates = [bundle.deletingLastPathComponent(), bundle].map { $0.appendingPathComponent("albef-coord").path }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[0]
    }

    /// Reads the child's stdout until a line contains `marker` (or `timeout`).
    func readLine(containing marker: String, from pipe: Pipe, timeout: Double) -> String? {
        var text = ""
        let deadline = Date().addingTimeInterval(timeout)
        let fd = pipe.fileHandleForReading.fileDescriptor
        while Date() < deadline {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&pfd, 1, 50) > 0 {
                var buf = [UInt8](repeating: 0, count: 4096)
                let n = read(fd, &buf, buf.count)
                if n <= 0 { break }
                text += String(decoding: buf[0..<n], as: UTF8.self)
                if let line = text.split(separator: "\n").first(where: { $0.contains(marker) }) { return String(line) }
            }
        }
        return nil
    }

    func testServeStatusStopWithSimulatedRanks() throws {
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: binary), "build albef-coord first: \(binary)")
        let dir = Fixtures.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let indexURL = dir.appendingPathComponent("index.json")
        let index = Fixtures.index([500, 300])
        let data = try JSONEncoder().encode(index)
        try data.write(to: indexURL)

        let serve = Process()
        serve.executableURL = URL(fileURLWithPath: binary)
        serve.arguments = ["serve", "--corpus", indexURL.path, "--bind", "tcp://127.0.0.1:*", "--state-dir", dir.appendingPathComponent("state").path,
                           "--world-size", "2", "--job-id", "e2e", "--token", "tok", "--lease-size", "50", "--linger", "0.3"]
        let out = Pipe()
        serve.standardOutput = out
        serve.standardError = FileHandle.standardError
        try serve.run()
        defer { if serve.isRunning { serve.terminate() } }
        let banner = try XCTUnwrap(readLine(containing: "albef-coord: listening ", from: out, timeout: 10), "serve printed no endpoint")
        let ep = String(banner.dropFirst("albef-coord: listening ".count))
        XCTAssertTrue(ep.hasPrefix("tcp://127.0.0.1:"), ep)

        let ranks = try (0..<2).map { try CoordinatorClient(endpoint: ep, auth: .token("tok"), rank: Int32($0), worldSize: 2, jobId: "e2e", prefetch: 2) }
        defer { ranks.forEach { $0.close() } }
        ranks.forEach { $0.register() }
        for (r, c) in ranks.enumerated() {
            XCTAssertNotNil(c.waitForLease(timeout: 5), "rank \(r) got no lease")
            c.sendHeartbeat(step: UInt64(10 + r))
        }
        ranks[0].reportProgress(ProgressReport(step: 10, samples: 200, losses: Losses(ita: 1.25, itm: 0.5, mlm: 2, total: 3.75), samplesPerSecond: 20))
        let probe = ControlRequester(endpoint: ep, auth: .token("tok"), timeout: 3)
        XCTAssertTrue(LiveCoordinatorTests.eventually(10) {
            (try? probe.status()).map { $0.step == 10 && $0.ranks.map(\.step) == [10, 11] } ?? false
        }, "the simulated ranks' reports arrived")

        let json = try runProcess(binary, ["status", "--endpoint", ep, "--token", "tok", "--json"], timeout: 10)
        XCTAssertEqual(json.status, 0, json.stderr)
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any], json.stdout)
        XCTAssertEqual(object["job_id"] as? String, "e2e")
        XCTAssertEqual(object["job_state"] as? String, "running")
        XCTAssertEqual(object["step"] as? Int, 10)
        XCTAssertEqual(object["total_samples"] as? Int, 800)
        XCTAssertEqual((object["losses"] as? [String: Any])?["total"] as? Double, 3.75)
        let rankList = try XCTUnwrap(object["ranks"] as? [[String: Any]])
        XCTAssertEqual(rankList.map { $0["health"] as? String }, ["alive", "alive"])
        XCTAssertEqual(rankList.map { $0["lag"] as? Int }, [1, 0])

        let table = try runProcess(binary, ["status", "--endpoint", ep, "--token", "tok"], timeout: 10)
        XCTAssertEqual(table.status, 0, table.stderr)
        XCTAssertTrue(table.stdout.contains("job e2e  state running"), table.stdout)
        XCTAssertTrue(table.stdout.contains("ETA"), table.stdout)
        let rankLines = table.stdout.split(separator: "\n").filter { $0.contains("alive") }
        XCTAssertEqual(rankLines.count, 2, table.stdout)
        XCTAssertTrue(rankLines.first?.contains(":\(getpid())") == true, "host:pid column: \(table.stdout)")

        let stop = try runProcess(binary, ["stop", "--endpoint", ep, "--token", "tok"], timeout: 10)
        XCTAssertEqual(stop.status, 0, stop.stderr)
        XCTAssertTrue(LiveCoordinatorTests.eventually { ranks[0].pollCommand()?.kind == .stop }, "stop reached rank 0")
        ranks[0].sendHeartbeat(step: 11)  // acknowledges the stop
        let deadline = Date().addingTimeInterval(10)
        while serve.isRunning && Date() < deadline { usleep(10_000) }
        XCTAssertFalse(serve.isRunning, "serve exits once the job is stopped")
        XCTAssertEqual(serve.terminationStatus, 0)
        let state = try XCTUnwrap(try SnapshotStore(directory: dir.appendingPathComponent("state")).load())
        XCTAssertEqual(state.jobState, .stopped, "the stopped state is on disk")
    }

    func testUnreachableAndInvalidArgumentsFailClearly() throws {
        let start = Date()
        let r = try runProcess(binary, ["status", "--endpoint", "tcp://127.0.0.1:1", "--timeout", "0.5"], timeout: 10)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("tcp://127.0.0.1:1") && r.stderr.contains("HINT"), r.stderr)
        XCTAssertLessThan(Date().timeIntervalSince(start), 5)
        let bad = try runProcess(binary, ["serve", "--corpus", "x", "--state-dir", "y", "--token", "a", "--curve-keys", "k"], timeout: 10)
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("either --token or --curve-keys"), bad.stderr)
        let missing = try runProcess(binary, ["serve", "--corpus", "/nonexistent/index.json", "--state-dir", "/tmp/x", "--bind", "tcp://127.0.0.1:*"], timeout: 10)
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.stderr.contains("/nonexistent/index.json"), missing.stderr)
    }

    func testKeygenWritesUsableKeys() throws {
        let dir = Fixtures.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try runProcess(binary, ["keygen", "--out", dir.path], timeout: 10)
        XCTAssertEqual(r.status, 0, r.stderr)
        let keys = try CurveKeyFiles.load(from: dir)
        XCTAssertNotEqual(keys.server.publicKey, keys.client.publicKey)
        XCTAssertEqual(try CurveKeyFiles.loadClient(from: dir).serverKey, keys.server.publicKey)
        let attributes = try FileManager.default.attributesOfItem(atPath: dir.appendingPathComponent("server.key").path)
        XCTAssertEqual((attributes[.posixPermissions] as? NSNumber)?.intValue, 0o600)
    }

    func testCurveServeStatusStopViaCLI() throws {
        let dir = Fixtures.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let keys = dir.appendingPathComponent("keys").path
        XCTAssertEqual(try runProcess(binary, ["keygen", "--out", keys]).status, 0)
        let indexURL = dir.appendingPathComponent("index.json")
        try JSONEncoder().encode(Fixtures.index([40])).write(to: indexURL)
        let serve = Process()
        serve.executableURL = URL(fileURLWithPath: binary)
        serve.arguments = ["serve", "--corpus", indexURL.path, "--bind", "tcp://127.0.0.1:*", "--state-dir", dir.appendingPathComponent("state").path,
                           "--job-id", "curve-e2e", "--curve-keys", keys, "--linger", "0"]
        let out = Pipe()
        serve.standardOutput = out
        try serve.run()
        defer { if serve.isRunning { serve.terminate() } }
        let banner = try XCTUnwrap(readLine(containing: "albef-coord: listening ", from: out, timeout: 10))
        let ep = String(banner.dropFirst("albef-coord: listening ".count))
        let ok = try runProcess(binary, ["status", "--endpoint", ep, "--curve-keys", keys, "--json"], timeout: 10)
        XCTAssertEqual(ok.status, 0, ok.stderr)
        XCTAssertTrue(ok.stdout.contains("\"job_id\" : \"curve-e2e\""), ok.stdout)
        let plain = try runProcess(binary, ["status", "--endpoint", ep, "--timeout", "0.5"], timeout: 10)
        XCTAssertNotEqual(plain.status, 0, "a client without the keys gets no answer")
        let stop = try runProcess(binary, ["stop", "--endpoint", ep, "--curve-keys", keys], timeout: 10)
        XCTAssertEqual(stop.status, 0, stop.stderr)
        XCTAssertTrue(stop.stdout.contains("job stopped"), stop.stdout)
        let deadline = Date().addingTimeInterval(10)
        while serve.isRunning && Date() < deadline { usleep(10_000) }
        XCTAssertFalse(serve.isRunning)
    }
}
