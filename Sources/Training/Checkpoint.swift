import Corpus
import ALBEF
import Distributed
import Foundation
import NN
import Tensor

/// What a checkpoint's `state.json` holds besides the tensors.
public struct CheckpointState: Codable, Sendable {
    public struct Rank: Codable, Sendable {
        public var rank: Int
        public var rng: RandomGenerator
        public var dropoutRng: RandomGenerator
        /// The data source's position (its own JSON), sample-exact.
        public var dataPosition: String?
        /// With a coordinator: this rank's lease position as committed to it, and the lease
        /// samples it trained on since the previous checkpoint (absent in older checkpoints).
        public var leases: LeaseAccount? = nil
        /// The random streams of each of this rank's slots (see ``StepLayout``); absent in older
        /// checkpoints, whose `rng`/`dropoutRng` are the rank's one slot.
        public var slots: [SlotStreams]? = nil
    }
    /// A slot's ITM/MLM and dropout streams after the checkpoint's step.
    public struct SlotStreams: Codable, Sendable {
        public var slot: Int
        public var rng: RandomGenerator
        public var dropoutRng: RandomGenerator
    }
    public var format = "albef-swift-checkpoint-v1"
    public var step: Int
    public var epoch: Int
    /// Iterations already done in `epoch` (the next iteration to run).
    public var iteration: Int
    public var adamStep: Int
    public var lr: Double
    public var worldSize: Int
    public var seed: UInt64
    public var config: String
    public var ranks: [Rank]
    public var created: String
    /// The step's split (ranks × micro-steps × batch) and the per-rank batch; absent in older checkpoints.
    public var layout: StepLayout? = nil
    public var batchSize: Int? = nil
    /// The config this was trained with; absent in older checkpoints.
    public var trainConfig: ConfigRecord? = nil
}

/// What one rank read from coordinator leases up to a checkpoint: the audit trail that lets the
/// coordinator's ledger be checked against what was actually trained on.
public struct LeaseAccount: Codable, Equatable, Sendable {
    /// Samples `[start, end)` of lease `leaseId` (shard `shard`, epoch `epoch`).
    public struct Use: Codable, Equatable, Sendable {
        public var leaseId: UInt64
        public var epoch: UInt32
        public var shard: UInt32
        public var start: UInt64
        public var end: UInt64
        /// The samples as the shared range type.
        public var range: SampleRange { SampleRange(epoch: Int(epoch), shard: Int(shard), start: Int(start), end: Int(end)) }
        public init(leaseId: UInt64, epoch: UInt32, shard: UInt32, start: UInt64, end: UInt64) {
            self.leaseId = leaseId
            self.epoch = epoch
            self.shard = shard
            self.start = start
            self.end = end
        }
    }
    /// The position committed to the coordinator: lease id and samples used of it.
    public var leaseId: UInt64
    public var offset: UInt64
    /// Lease samples trained on since the previous checkpoint of this process, in reading order.
    public var consumed: [Use]
    public init(leaseId: UInt64, offset: UInt64, consumed: [Use]) {
        self.leaseId = leaseId
        self.offset = offset
        self.consumed = consumed
    }
}

/// Atomic checkpoints: `DIR/checkpoints/step_%08d/` with `model.safetensors` (the full ALBEF
/// state dict, PyTorch names), `optimizer.safetensors` (AdamW moments `exp_avg.<key>`,
/// `exp_avg_sq.<key>`), `state.json`; written under a temporary name, fsynced, renamed, then the
/// `latest` pointer is replaced atomically. Resume only ever sees complete checkpoints.
public enum Checkpointer {
    public static func directory(_ output: String) -> URL { URL(fileURLWithPath: output).appendingPathComponent("checkpoints") }

    /// Collective: every rank calls it; rank 0 writes the tensors, each rank its own state line.
    @discardableResult
    public static func save<Model>(trainer: ModelTrainer<Model>, output: String, epoch: Int, iteration: Int, dataPosition: String?,
                            leases: LeaseAccount? = nil) throws -> URL {
        let comm = trainer.comm
        let root = directory(output)
        let name = String(format: "step_%08d", trainer.globalStep)
        let tmp = root.appendingPathComponent(".tmp-" + name)
        let final = root.appendingPathComponent(name)
        let fm = FileManager.default
        if comm.rank == 0 {
            try? fm.removeItem(at: tmp)
            try fm.createDirectory(at: tmp, withIntermediateDirectories: true)
        }
        comm.barrier()
        let streams = trainer.slots.enumerated().map { m, slot in
            CheckpointState.SlotStreams(slot: slot, rng: trainer.slotRngs[m], dropoutRng: trainer.slotDropout[m])
        }
        let mine = CheckpointState.Rank(rank: comm.rank, rng: trainer.rng, dropoutRng: trainer.slotDropout[0],
                                        dataPosition: dataPosition, leases: leases, slots: streams)
        try atomicWrite(JSONEncoder().encode(mine), to: tmp.appendingPathComponent(String(format: "rank_%05d.json", comm.rank)).path)
        comm.barrier()
        var failure: Error?
        if comm.rank == 0 {
            do {
                try trainer.model.save(to: tmp.appendingPathComponent("model.safetensors").path,
                                       metadata: ["step": String(trainer.globalStep), "format": Model.checkpointFormat])
                try saveOptimizer(trainer.optimizer, to: tmp.appendingPathComponent("optimizer.safetensors").path)
                var ranks: [CheckpointState.Rank] = []
                for r in 0..<comm.size {
                    let d = try Data(contentsOf: tmp.appendingPathComponent(String(format: "rank_%05d.json", r)))
                    ranks.append(try JSONDecoder().decode(CheckpointState.Rank.self, from: d))
                }
                let state = CheckpointState(step: trainer.globalStep, epoch: epoch, iteration: iteration, adamStep: trainer.optimizer.step,
                                            lr: Double(trainer.optimizer.lr), worldSize: comm.size, seed: trainer.seed,
                                            config: trainer.config.path, ranks: ranks, created: ISO8601DateFormatter().string(from: Date()),
                                            layout: trainer.layout, batchSize: trainer.layout.batchSize,
                                            trainConfig: ConfigRecord(trainer.config))
                let enc = JSONEncoder()
                enc.outputFormatting = [.prettyPrinted, .sortedKeys]
                try atomicWrite(enc.encode(state), to: tmp.appendingPathComponent("state.json").path)
                fsyncDirectory(tmp.path)
                try? fm.removeItem(at: final)
                guard rename(tmp.path, final.path) == 0 else { throw TrainingError.checkpoint("rename \(tmp.path) → \(final.path) failed (errno \(errno))") }
                fsyncDirectory(root.path)
                try atomicWrite(Data((name + "\n").utf8), to: root.appendingPathComponent("latest").path)
                fsyncDirectory(root.path)
            } catch { failure = error }
        }
        var ok: Float = failure == nil ? 0 : 1
        comm.allReduceSum(&ok, count: 1)
        if let failure { throw failure }
        if ok > 0 { throw TrainingError.checkpoint("rank 0 failed to write \(final.path)") }
        return final
    }

    /// Retention: deletes complete checkpoints (`step_*` with a `state.json`) beyond the newest
    /// `keep`, never the one `latest` names and never one at or after `protectFrom` (with a
    /// coordinator: the newest checkpoint its ledger is known to hold — a coordinator-driven
    /// restart resumes from there, so it must stay). Left-over `.tmp-step_*` directories of
    /// interrupted saves older than the newest checkpoint go too. Returns the deleted directory
    /// names, oldest first. Rank 0 only, after a save.
    @discardableResult
    public static func prune(output: String, keep: Int, protectFrom: Int?) -> [String] {
        guard keep > 0 else { return [] }
        let root = directory(output)
        let fm = FileManager.default
        guard let names = try? fm.contentsOfDirectory(atPath: root.path) else { return [] }
        func step(_ name: String, prefix: String) -> Int? {
            name.hasPrefix(prefix) ? Int(name.dropFirst(prefix.count)) : nil
        }
        let complete = names.compactMap { n -> (Int, String)? in
            guard let s = step(n, prefix: "step_"),
                  fm.fileExists(atPath: root.appendingPathComponent(n).appendingPathComponent("state.json").path) else { return nil }
            return (s, n)
        }.sorted { $0.0 < $1.0 }
        let latestName = latest(output)?.lastPathComponent
        var doomed = complete.dropLast(keep).filter { c in c.1 != latestName && (protectFrom.map { c.0 < $0 } ?? true) }
        if let newest = complete.last?.0 {
            doomed += names.compactMap { n in step(n, prefix: ".tmp-step_").flatMap { $0 < newest ? ($0, n) : nil } }
        }
        var deleted: [String] = []
        for (_, name) in doomed.sorted(by: { $0.0 < $1.0 }) where (try? fm.removeItem(at: root.appendingPathComponent(name))) != nil {
            deleted.append(name)
        }
        return deleted
    }

    /// The checkpoint `latest` points at, if any.
    public static func latest(_ output: String) -> URL? {
        let root = directory(output)
        guard let s = try? String(contentsOf: root.appendingPathComponent("latest"), encoding: .utf8) else { return nil }
        let dir = root.appendingPathComponent(s.trimmingCharacters(in: .whitespacesAndNewlines))
        return FileManager.default.fileExists(atPath: dir.appendingPathComponent("state.json").path) ? dir : nil
    }

    /// The checkpoint's `state.json` (step, epoch, world size, per-rank positions), without loading tensors.
    public static func readState(_ dir: URL) throws -> CheckpointState {
        let path = dir.appendingPathComponent("state.json").path
        guard let d = FileManager.default.contents(atPath: path) else { throw TrainingError.checkpoint("\(path): cannot read it") }
        do { return try JSONDecoder().decode(CheckpointState.self, from: d) } catch {
            throw TrainingError.checkpoint("\(path): not a checkpoint state (\(error))")
        }
    }

    /// Loads a checkpoint into `trainer` (every rank reads the shared files). Returns the state;
    /// this rank's RNG streams are restored when the checkpoint has its rank, else derived fresh.
    public static func load<Model>(_ dir: URL, into trainer: ModelTrainer<Model>) throws -> CheckpointState {
        let sd = try Data(contentsOf: dir.appendingPathComponent("state.json"))
        let state = try JSONDecoder().decode(CheckpointState.self, from: sd)
        let file = try SafeTensorsFile(path: dir.appendingPathComponent("model.safetensors").path)
        try trainer.model.load(from: file, strict: true)
        try loadOptimizer(trainer.optimizer, from: dir.appendingPathComponent("optimizer.safetensors").path)
        trainer.optimizer.step = state.adamStep
        trainer.restoreStep(state.step)
        // Each slot's streams continue where they were, whichever rank held the slot; a slot the
        // checkpoint does not have (another slot count, or an older checkpoint of another world
        // size) starts a stream derived from the step.
        var saved: [Int: CheckpointState.SlotStreams] = [:]
        for r in state.ranks {
            if let slots = r.slots { for s in slots { saved[s.slot] = s } }
            else if state.worldSize == trainer.comm.size { saved[r.rank] = .init(slot: r.rank, rng: r.rng, dropoutRng: r.dropoutRng) }
        }
        for (m, slot) in trainer.slots.enumerated() {
            if let s = saved[slot], (state.layout?.slots ?? state.worldSize) == trainer.layout.slots {
                trainer.slotRngs[m] = s.rng
                trainer.slotDropout[m] = s.dropoutRng
            } else {
                trainer.slotRngs[m] = RankStreams.step(seed: trainer.seed, rank: slot).split(UInt64(state.step))
                trainer.slotDropout[m] = RankStreams.dropout(seed: trainer.seed, rank: slot).split(UInt64(state.step))
            }
        }
        trainer.model.dropoutRandom.generator = trainer.slotDropout[0]
        return state
    }

    static func saveOptimizer(_ o: AdamW, to path: String) throws {
        var items: [(String, StateEntry)] = []
        for s in o.params.segments {
            let m = Tensor(shape: s.shape, storage: Storage(borrowing: o.m.pointer + s.offset, count: s.count, owner: o.m))
            let v = Tensor(shape: s.shape, storage: Storage(borrowing: o.v.pointer + s.offset, count: s.count, owner: o.v))
            items.append(("exp_avg." + s.key, .float(m)))
            items.append(("exp_avg_sq." + s.key, .float(v)))
        }
        try SafeTensorsFile.write(items, to: path, metadata: ["step": String(o.step), "optimizer": "AdamW"])
    }

    static func loadOptimizer(_ o: AdamW, from path: String) throws {
        let f = try SafeTensorsFile(path: path)
        for s in o.params.segments {
            for (prefix, buf) in [("exp_avg.", o.m), ("exp_avg_sq.", o.v)] {
                let k = prefix + s.key
                guard let e = f.entries[k] else { throw CheckpointError.missingKey(path: path, key: k) }
                guard e.shape == s.shape else { throw CheckpointError.shapeMismatch(key: k, expected: s.shape, got: e.shape, path: path) }
                let v = try f.floats(k)
                v.withUnsafeBufferPointer { (buf.pointer + s.offset).update(from: $0.baseAddress!, count: s.count) }
            }
        }
    }
}

/// fsync on a directory so a rename inside it is durable.
func fsyncDirectory(_ path: String) {
    let fd = open(path, O_RDONLY)
    if fd >= 0 { fsync(fd); close(fd) }
}
