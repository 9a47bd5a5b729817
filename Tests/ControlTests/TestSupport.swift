import Foundation
import XCTest
@testable import Control

/// Shared fixtures for the control-plane tests.
enum Fixtures {
    /// A small synthetic corpus: shard i has `sizes[i]` samples.
    static func index(_ sizes: [Int]) -> CorpusIndex {
        CorpusIndex(root: "/corpus", shards: sizes.enumerated().map {
            CorpusIndex.Shard(path: String(format: "%05d.tar", $0.offset), samples: $0.element, bytes: $0.element * 100,
                              bad: $0.offset == 0 ? [.init(key: "000000003", kind: "truncated_jpeg")] : [])
        })
    }

    /// Every sample of `epochs` epochs of a corpus with shard sizes `sizes`, merged.
    static func everySample(_ sizes: [Int], epochs: Int) -> [SampleRange] {
        (0..<epochs).flatMap { e in sizes.enumerated().filter { $0.element > 0 }.map { SampleRange(epoch: e, shard: $0.offset, start: 0, end: $0.element) } }
    }

    static func tempDir(_ name: String = #function) -> URL {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("albef-control-tests-\(getpid())-\(name.filter { $0.isLetter || $0.isNumber })-\(UInt32.random(in: 0...UInt32.max))")
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// Root of the package (…/Tests/ControlTests/TestSupport.swift → …).
    static var packageRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }
}

/// Runs a program and returns (exit status, stdout, stderr); kills it after `timeout` seconds.
@discardableResult
func runProcess(_ executable: String, _ arguments: [String], timeout: Double = 30, environment: [String: String]? = nil,
                currentDirectory: URL? = nil) throws -> (status: Int32, stdout: String, stderr: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = arguments
    if let environment { p.environment = environment }
    if let currentDirectory { p.currentDirectoryURL = currentDirectory }
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let deadline = Date().addingTimeInterval(timeout)
    final class Box: @unchecked Sendable { var data = Data() }
    let outData = Box(), errData = Box()
    let group = DispatchGroup()
    group.enter()
    DispatchQueue.global().async { outData.data = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
    group.enter()
    DispatchQueue.global().async { errData.data = err.fileHandleForReading.readDataToEndOfFile(); group.leave() }
    while p.isRunning && Date() < deadline { usleep(10_000) }
    if p.isRunning { p.terminate(); usleep(200_000); if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
    p.waitUntilExit()
    group.wait()
    return (p.terminationStatus, String(decoding: outData.data, as: UTF8.self), String(decoding: errData.data, as: UTF8.self))
}

/// Finds an executable on PATH.
func which(_ name: String) -> String? {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let path = "\(dir)/\(name)"
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return nil
}

/// The ledger invariant: for every epoch, the committed ranges, the dropped ranges, the live
/// leases beyond their committed prefix (up to what a returned lease used; the rest is back in
/// its owner's queue), the planner's per-rank queues, the streams of epochs a rank has not
/// started and the tails of epochs not closed yet partition the epoch's samples.
func ledgerPartition(_ state: CoordinatorState, _ what: String, sizes: [Int], file: StaticString = #filePath, line: UInt = #line) {
    var pieces = state.ledger + state.dropped
    for record in state.leases.values { pieces.append(record.lease.range(from: record.committedOffset, to: record.returnedConsumed ?? record.lease.count)) }
    let p = state.planner
    pieces += p.queues.flatMap { $0 }
    let epochs = Int(state.config.epochs)
    for r in 0..<p.worldSize {
        for e in (p.rankEpoch[r] + 1)..<max(p.rankEpoch[r] + 1, epochs) {
            let b = p.streamBoundaries(epoch: e)
            pieces += p.ranges(epoch: e, from: b[r], to: b[r + 1])
        }
    }
    for e in state.epochsDone..<max(state.epochsDone, epochs) { pieces += p.tail(epoch: e) }
    XCTAssertEqual(SampleRange.total(pieces), sizes.reduce(0, +) * epochs, "\(what): overlap or loss", file: file, line: line)
    XCTAssertEqual(SampleRange.merged(pieces), Fixtures.everySample(sizes, epochs: epochs), "\(what): coverage", file: file, line: line)
}

