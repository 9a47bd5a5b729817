import Foundation
import XCTest

/// Two real hosts (network namespaces on a private bridge, `scripts/netns-cluster`): `mpirun` puts one
/// rank on each, the gradients cross the hosts' interfaces over TCP, the coordinator on host 1 is
/// reached over the bridge address, the ranks stay bit-identical, and everything is torn down.
final class MultiHostTests: XCTestCase {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardized

    /// Skips (with the reason) when this machine cannot make network namespaces.
    func requireNamespaces() throws {
        if getuid() != 0 { throw XCTSkip("MultiHostTests: network namespaces need root (uid \(getuid()))") }
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/ip") || FileManager.default.isExecutableFile(atPath: "/sbin/ip") else {
            throw XCTSkip("MultiHostTests: no `ip` (iproute2) on this machine")
        }
        let probe = "ncprobe\(getpid())"
        let (s, o) = try runCommand("/bin/sh", ["-c", "ip netns add \(probe) && ip netns del \(probe)"], timeout: 20)
        if s != 0 { throw XCTSkip("MultiHostTests: this machine cannot create network namespaces (`ip netns add` failed: \(o))") }
    }

    /// `NAME=value` from the `export ...` line `netns-cluster start` prints.
    func exported(_ name: String, in text: String) -> String? {
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("export NETNS_CLUSTER_DIR=") }) else { return nil }
        guard let r = line.range(of: " \(name)=") ?? line.range(of: "export \(name)=") else { return nil }
        let rest = line[r.upperBound...]
        if rest.hasPrefix("'") { return String(rest.dropFirst().prefix { $0 != "'" }) }
        return String(rest.prefix { $0 != " " })
    }

    func counter(_ script: String, _ env: [String: String], host: Int, _ name: String) throws -> Int {
        let (s, o) = try runCommand(script, ["exec", String(host), "cat", "/sys/class/net/eth0/statistics/\(name)"], timeout: 20, env: env)
        XCTAssertEqual(s, 0, o)
        return Int(o.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    }

    func testTwoHostsTrainOverTCPWithCoordinator() throws {
        try requireNamespaces()
        let script = root.path + "/scripts/netns-cluster"
        let bin = productsDirectory()
        let (s0, o0) = try runCommand(script, ["start", "2"], timeout: 60, env: ["NETNS_CLUSTER_WATCH_PID": String(getpid())])
        XCTAssertEqual(s0, 0, o0)
        let dirOpt = exported("NETNS_CLUSTER_DIR", in: o0), tagOpt = exported("NETNS_CLUSTER_TAG", in: o0)
        let cdir = try XCTUnwrap(dirOpt, o0), tag = try XCTUnwrap(tagOpt, o0)
        defer {
            let (s, o) = (try? runCommand(script, ["stop", cdir], timeout: 60)) ?? (-1, "stop did not run")
            XCTAssertEqual(s, 0, o)
            let (_, ns) = (try? runCommand("/bin/sh", ["-c", "ip netns list; ip link"], timeout: 20)) ?? (-1, "")
            XCTAssertFalse(ns.contains(tag), "namespaces or links of cluster \(tag) left after stop:\n\(ns)")
        }
        let addrs = try XCTUnwrap(exported("NETNS_CLUSTER_ADDRS", in: o0), o0).split(separator: " ").map(String.init)
        XCTAssertEqual(addrs.count, 2, o0)
        let env = ["NETNS_CLUSTER_DIR": cdir].merging(mpiEnvironment) { a, _ in a }

        // A small corpus and a micro model, as in CoordinatorIntegrationTests.
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("multihost-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let (s1, o1) = try runCommand(bin.appendingPathComponent("albef-data").path,
                                      ["synth", "--out", dir.path + "/corpus", "--samples", "200", "--heldout", "10",
                                       "--image-size", "32", "--shard-size", "100"])
        XCTAssertEqual(s1, 0, o1)
        let cfg = try writeMicroConfig(in: dir)

        // The coordinator on host 1, bound to host 1's bridge address (not loopback).
        let endpoint = "tcp://\(addrs[0]):\(Int.random(in: 20000...30000))"
        let coordLog = dir.appendingPathComponent("coord.log")
        FileManager.default.createFile(atPath: coordLog.path, contents: nil)
        let coord = Process()
        coord.executableURL = URL(fileURLWithPath: script)
        coord.arguments = ["exec", "1", bin.appendingPathComponent("albef-coord").path, "serve", "--corpus", dir.path + "/corpus/index.json",
                           "--bind", endpoint, "--state-dir", dir.path + "/coord", "--world-size", "2", "--epochs", "50"]
        coord.environment = ProcessInfo.processInfo.environment.merging(env) { _, b in b }
        coord.standardOutput = try FileHandle(forWritingTo: coordLog)
        coord.standardError = coord.standardOutput
        coord.standardInput = FileHandle.nullDevice
        try coord.run()
        defer { if coord.isRunning { coord.terminate(); coord.waitUntilExit() } }

        let before = try [1, 2].map { h in try ["tx_bytes", "rx_bytes"].map { try counter(script, env, host: h, $0) } }
        let steps = 6
        let (s2, o2) = try runCommand(script, ["mpirun", "-n", "2", "--map-by", "node", "-x", "OPENBLAS_NUM_THREADS",
                                               bin.appendingPathComponent("albef-worker").path, "train", "--config", cfg.path,
                                               "--corpus", dir.path + "/corpus/index.json", "--coordinator", endpoint,
                                               "--output-dir", dir.path + "/run", "--log-every", "1", "--max-steps", String(steps),
                                               "--divergence-check-every", "1", "--no-tensorboard"],
                                      timeout: 120, env: env)
        let after = try [1, 2].map { h in try ["tx_bytes", "rx_bytes"].map { try counter(script, env, host: h, $0) } }
        let coordText = (try? String(contentsOf: coordLog, encoding: .utf8)) ?? ""
        XCTAssertEqual(s2, 0, o2 + "\ncoordinator:\n" + coordText)
        XCTAssertTrue(o2.contains("albef-worker: 2 rank(s)"), o2)
        XCTAssertTrue(o2.contains("epoch 0 step \(steps) |"), o2)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir.path + String(format: "/run/checkpoints/step_%08d/model.safetensors", steps)), o2)

        // The gradients crossed the interfaces: each host sent and received at least one gradient
        // (parameters × 4 bytes) per step (the divergence check's checksums come on top).
        let params = try XCTUnwrap(o2.components(separatedBy: " trainable parameters").first?.split(separator: " ").last.flatMap { Int($0) }, o2)
        let gradientBytes = params * 4 * steps
        for h in 0..<2 {
            let tx = after[h][0] - before[h][0], rx = after[h][1] - before[h][1]
            print("MultiHostTests: host \(h + 1) eth0 tx +\(tx) B, rx +\(rx) B; gradient bytes \(params) × 4 × \(steps) = \(gradientBytes)")
            XCTAssertGreaterThanOrEqual(tx, gradientBytes, "host \(h + 1) sent less than the gradients")
            XCTAssertGreaterThanOrEqual(rx, gradientBytes, "host \(h + 1) received less than the gradients")
        }

        // The ranks, one per host, hold bit-identical weights: the divergence check (checksums of every
        // parameter, momentum parameter and queue, compared across ranks) passed after every step.
        XCTAssertFalse(o2.contains("diverge"), o2)
    }

    /// `cluster/slurm/pretrain.sbatch`, unchanged, on a 2-host Slurm cluster whose `slurmd`s run in
    /// the hosts' namespaces (`slurm-local` with `SLURM_LOCAL_NETNS`): `srun --mpi=pmix` puts a rank
    /// on each host, `COORDINATOR=1` starts albef-coord on node1 reached at its bridge address, the
    /// gradients cross both interfaces, the ranks stay bit-identical (divergence check every step),
    /// and the Slurm daemons and namespaces are gone afterwards.
    func testPretrainSbatchAcrossTwoNetnsHosts() throws {
        try requireNamespaces()
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/sbatch") else {
            return XCTFail("sbatch not installed: run scripts/setup (slurmctld slurmd slurm-client libpmix-dev)")
        }
        let script = root.path + "/scripts/netns-cluster"
        let bin = productsDirectory()
        let (s0, o0) = try runCommand(script, ["start", "2", "--bridge-addr"], timeout: 60, env: ["NETNS_CLUSTER_WATCH_PID": String(getpid())])
        XCTAssertEqual(s0, 0, o0)
        let cdir = try XCTUnwrap(exported("NETNS_CLUSTER_DIR", in: o0), o0), tag = try XCTUnwrap(exported("NETNS_CLUSTER_TAG", in: o0), o0)
        let addrs = try XCTUnwrap(exported("NETNS_CLUSTER_ADDRS", in: o0), o0).split(separator: " ").map(String.init)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("slurmnetns-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let slurm = dir.path + "/slurm"
        defer {
            let (s1, o1) = (try? runCommand(root.path + "/scripts/slurm-local", ["stop", slurm], timeout: 60)) ?? (-1, "slurm-local stop did not run")
            XCTAssertEqual(s1, 0, o1)
            let (s2, o2) = (try? runCommand(script, ["stop", cdir], timeout: 60)) ?? (-1, "stop did not run")
            XCTAssertEqual(s2, 0, o2)
            let (_, left) = (try? runCommand("/bin/sh", ["-c", "ip netns list; ip link; pgrep -a slurm"], timeout: 20)) ?? (-1, "")
            XCTAssertFalse(left.contains(tag) || left.contains(slurm), "left after stop:\n\(left)")
            try? FileManager.default.removeItem(at: dir)
        }
        let (s1, o1) = try runCommand(root.path + "/scripts/slurm-local", ["start", slurm], timeout: 90,
                                      env: ["SLURM_LOCAL_NETNS": cdir, "SLURM_LOCAL_CPUS": "2", "SLURM_LOCAL_WATCH_PID": String(getpid())])
        XCTAssertEqual(s1, 0, o1)
        let (s2, o2) = try runCommand(bin.appendingPathComponent("albef-data").path,
                                      ["synth", "--out", dir.path + "/corpus", "--samples", "200", "--heldout", "10", "--shard-size", "100"])
        XCTAssertEqual(s2, 0, o2)
        let env = ["NETNS_CLUSTER_DIR": cdir]
        let before = try [1, 2].map { h in try ["tx_bytes", "rx_bytes"].map { try counter(script, env, host: h, $0) } }
        let steps = 3, out = dir.path + "/run", log = dir.path + "/job.out", port = Int.random(in: 20000...30000)
        let (s3, o3) = try runCommand("/usr/bin/sbatch", ["--wait", "--job-name=netns", "--output=\(log)", "--nodes=2", "--ntasks-per-node=1",
                                                          root.path + "/cluster/slurm/pretrain.sbatch"], timeout: 300,
                                      env: ["SLURM_CONF": slurm + "/slurm.conf", "ROOT": root.path, "BIN": bin.appendingPathComponent("albef-worker").path,
                                            "CONFIG": root.path + "/configs/tiny.yaml", "CORPUS": dir.path + "/corpus/index.json", "CPU_BIND": "",
                                            "OUT": out, "COORDINATOR": "1", "COORD_PORT": String(port), "CHECKPOINT_EVERY": "3",
                                            "EXTRA": "--max-steps \(steps) --log-every 1 --batch-size 4 --divergence-check-every 1"]) { k in
            ["SLURM_", "SBATCH_", "SRUN_", "SALLOC_", "PMIX_"].contains { k.hasPrefix($0) }
        }
        let after = try [1, 2].map { h in try ["tx_bytes", "rx_bytes"].map { try counter(script, env, host: h, $0) } }
        let text = o3 + "\n" + ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "(no job log)")
        XCTAssertEqual(s3, 0, text)
        XCTAssertTrue(text.contains("albef-coord on node1 at tcp://\(addrs[0]):\(port)"), text)
        XCTAssertTrue(text.contains("2 rank(s) on node1,node2") && text.contains("training exited with status 0"), text)
        XCTAssertFalse(text.contains("diverge"), text)
        XCTAssertTrue(FileManager.default.fileExists(atPath: out + String(format: "/checkpoints/step_%08d/model.safetensors", steps)), text)
        let params = try XCTUnwrap(text.components(separatedBy: " trainable parameters").first?.split(separator: " ").last.flatMap { Int($0) }, text)
        for h in 0..<2 {
            let tx = after[h][0] - before[h][0], rx = after[h][1] - before[h][1]
            print("MultiHostTests: slurm host \(h + 1) eth0 tx +\(tx) B, rx +\(rx) B; gradient bytes \(params) × 4 × \(steps) = \(params * 4 * steps)")
            XCTAssertGreaterThanOrEqual(tx, params * 4 * steps, "host \(h + 1) sent less than the gradients")
            XCTAssertGreaterThanOrEqual(rx, params * 4 * steps, "host \(h + 1) received less than the gradients")
        }
    }

    /// Gradient buckets reduced in bf16 between two hosts: the bytes each host sends for the
    /// same steps are about half of float32's (at most 0.6×), and the ranks stay bit-identical
    /// (divergence check after every step).
    func testBF16GradientBucketsHalveTheBytesBetweenHosts() throws {
        try requireNamespaces()
        let script = root.path + "/scripts/netns-cluster"
        let bin = productsDirectory()
        let (s0, o0) = try runCommand(script, ["start", "2"], timeout: 60, env: ["NETNS_CLUSTER_WATCH_PID": String(getpid())])
        XCTAssertEqual(s0, 0, o0)
        let cdir = try XCTUnwrap(exported("NETNS_CLUSTER_DIR", in: o0), o0)
        defer { _ = try? runCommand(script, ["stop", cdir], timeout: 60) }
        let env = ["NETNS_CLUSTER_DIR": cdir].merging(mpiEnvironment) { a, _ in a }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bf16wire-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var sent: [String: Int] = [:]
        for mode in ["fp32", "bf16"] {
            let cfg = try writeMicroConfig(in: dir.appendingPathComponent(mode).creatingDirectory(), extra: "grad_reduce: \(mode)")
            let before = try counter(script, env, host: 2, "tx_bytes")
            let (s, o) = try runCommand(script, ["mpirun", "-n", "2", "--map-by", "node", "-x", "OPENBLAS_NUM_THREADS",
                                                 bin.appendingPathComponent("albef-worker").path, "train", "--config", cfg.path,
                                                 "--synthetic", "20", "--output-dir", dir.path + "/run-" + mode, "--max-steps", "6",
                                                 "--divergence-check-every", "1", "--no-tensorboard", "--log-every", "6"],
                                        timeout: 120, env: env)
            XCTAssertEqual(s, 0, o)
            XCTAssertFalse(o.contains("diverge"), o)
            sent[mode] = try counter(script, env, host: 2, "tx_bytes") - before
        }
        print("MultiHostTests: host 2 sent \(sent["fp32"]!) B with float32 buckets, \(sent["bf16"]!) B with bf16 buckets (6 steps)")
        XCTAssertLessThanOrEqual(Double(sent["bf16"]!), 0.6 * Double(sent["fp32"]!), "\(sent)")
    }

    /// `netns-cluster run`: dist-selftest with one rank per host (ranks bit-identical and equal to the
    /// single-process reference), and the cluster is gone afterwards.
    func testDistSelfTestAcrossTwoHostsWithRun() throws {
        try requireNamespaces()
        let script = root.path + "/scripts/netns-cluster"
        let (s, o) = try runCommand(script, ["run", "2", script, "mpirun", "-n", "2", "--map-by", "node",
                                             productsDirectory().appendingPathComponent("albef-worker").path, "dist-selftest", "--steps", "3"],
                                    timeout: 120, env: mpiEnvironment)
        XCTAssertEqual(s, 0, o)
        XCTAssertTrue(o.contains("dist-selftest: PASS (2 ranks, 3 steps, ranks bit-identical)"), o)
        let tag = try XCTUnwrap(o.components(separatedBy: "host(s) ").dropFirst().first?.prefix { $0 != "-" }, o)
        XCTAssertTrue(tag.hasPrefix("nc") && tag.count == 8, o)
        let (_, left) = try runCommand("/bin/sh", ["-c", "ip netns list; ip link"], timeout: 20)
        XCTAssertFalse(left.contains(String(tag)), "left after run:\n\(left)")
    }
}

extension URL {
    /// Creates this directory (and its parents) and returns it.
    func creatingDirectory() throws -> URL {
        try FileManager.default.createDirectory(at: self, withIntermediateDirectories: true)
        return self
    }
}
