import ALBEF
import Distributed
import Foundation

/// `--record-samples FILE`: the audit trail of what was trained. Rank 0 appends, per optimizer
/// step, one JSON line `{"step": s, "epoch": e, "global_batch": G, "samples": [...]}` naming every
/// sample of the step's global batch in slot order (slot `m·ranks + r`: micro-step m of rank r),
/// each as `shard-path#index` (index in file order in the corpus index). A resumed run first
/// drops the lines after the step it resumes from — those steps were rolled back and are trained
/// again — and keeps them in `FILE.rolled-back`, so the file always describes the weights of the
/// latest checkpoint's history: anyone can check that no sample appears twice in an epoch.
public final class SampleRecord {
    let url: URL
    let name: (Int64) -> String
    var handle: FileHandle?

    /// Every rank creates one (the gather is collective); only rank 0 writes.
    public init(path: String, rank: Int, resumedStep: Int?, name: @escaping (Int64) -> String) throws {
        url = URL(fileURLWithPath: path)
        self.name = name
        guard rank == 0 else { return }
        let fm = FileManager.default
        try fm.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        if let text = try? String(contentsOf: url, encoding: .utf8) {
            let keepUpTo = resumedStep ?? 0
            var kept: [Substring] = [], dropped: [Substring] = []
            for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
                let step = (try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["step"] as? Int
                if let step, step <= keepUpTo { kept.append(line) } else { dropped.append(line) }
            }
            if !dropped.isEmpty {
                let side = URL(fileURLWithPath: path + ".rolled-back")
                let h = try openAppend(side)
                h.write(Data((dropped.joined(separator: "\n") + "\n").utf8))
                try h.close()
                print("record-samples: \(dropped.count) step(s) after step \(keepUpTo) were rolled back (kept in \(side.path))")
            }
            try Data((kept.isEmpty ? "" : kept.joined(separator: "\n") + "\n").utf8).write(to: url, options: .atomic)
        }
        handle = try openAppend(url)
    }

    /// Collective: gathers the sample numbers of every rank's micro-batches and writes the line.
    func record(step: Int, epoch: Int, micro: [PretrainBatch], layout: StepLayout, comm: Communicator) throws {
        let perRank = micro.reduce(0) { $0 + $1.batchSize }
        var all = [Double](repeating: 0, count: perRank * comm.size)
        var k = comm.rank * perRank
        for b in micro {
            guard b.sampleIDs.count == b.batchSize else {
                throw TrainingError.data("--record-samples needs corpus batches (this source gives no sample numbers)")
            }
            for id in b.sampleIDs { all[k] = Double(id); k += 1 }
        }
        all.withUnsafeMutableBufferPointer { comm.allReduceSum($0.baseAddress!, count: $0.count) }
        guard let handle else { return }
        // Slot order: micro-step m of every rank, then m + 1.
        var names: [String] = []
        names.reserveCapacity(all.count)
        let b = layout.batchSize
        for m in 0..<layout.accumSteps {
            for r in 0..<comm.size {
                let base = r * perRank + m * b
                for i in 0..<b { names.append(name(Int64(all[base + i]))) }
            }
        }
        let obj: [String: Any] = ["step": step, "epoch": epoch, "global_batch": names.count, "samples": names]
        let d = try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys])
        handle.write(d + Data("\n".utf8))
    }

    public func close() { try? handle?.close() }
}
