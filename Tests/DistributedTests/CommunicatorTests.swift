import Foundation
import XCTest
@testable import Distributed

/// Locates an executable built next to the test bundle.
func builtExecutable(_ name: String) -> URL {
    let b = Bundle(for: CommunicatorTests.self).bundleURL
    let dir = b.pathExtension == "xctest" ? b.deletingLastPathComponent() : b
    return dir.appendingPathComponent(name)
}

/// Runs a command with a timeout; returns (status, stdout+stderr).
func runProcess(_ exe: String, _ args: [String], timeout: TimeInterval = 120, env: [String: String] = [:]) throws -> (Int32, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: exe)
    p.arguments = args
    var e = ProcessInfo.processInfo.environment
    for (k, v) in env { e[k] = v }
    p.environment = e
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    p.standardInput = FileHandle.nullDevice
    try p.run()
    let deadline = Date().addingTimeInterval(timeout)
    var data = Data()
    let reader = DispatchQueue(label: "reader")
    let done = DispatchSemaphore(value: 0)
    reader.async { data = pipe.fileHandleForReading.readDataToEndOfFile(); done.signal() }
    while p.isRunning && Date() < deadline { usleep(20_000) }
    if p.isRunning { p.terminate(); _ = done.wait(timeout: .now() + 5); return (-1, "timeout after \(timeout)s\n" + String(decoding: data, as: UTF8.self)) }
    _ = done.wait(timeout: .now() + 5)
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

let mpiEnv = ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OMPI_MCA_rmaps_base_oversubscribe": "1",
              "OPENBLAS_NUM_THREADS": "1"]

final class CommunicatorTests: XCTestCase {
    func testLocalCommunicatorCollectives() {
        for size in [1, 2, 3] {
            let world = LocalWorld(size: size)
            let lock = NSLock()
            var failures: [String] = []
            world.run { _, comm in
                let f = collectiveSelfTest(comm)
                lock.lock(); failures += f; lock.unlock()
            }
            XCTAssertEqual(failures, [], "world size \(size)")
        }
    }

    /// A real 2-rank `mpirun`: allreduce, iallreduce, allgather, broadcast checked on every rank.
    func testMPIRunTwoRanks() throws {
        let exe = builtExecutable("albef-worker").path
        XCTAssertTrue(FileManager.default.fileExists(atPath: exe), "\(exe) not built")
        let (status, out) = try runProcess("/usr/bin/mpirun", ["--allow-run-as-root", "--oversubscribe", "-n", "2", exe, "mpi-selftest"],
                                           timeout: 120, env: mpiEnv)
        XCTAssertEqual(status, 0, out)
        XCTAssertTrue(out.contains("mpi-selftest: rank 0/2 ok"), out)
        XCTAssertTrue(out.contains("mpi-selftest: rank 1/2 ok"), out)
    }
}
