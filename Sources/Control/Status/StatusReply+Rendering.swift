import Foundation

extension StatusReply {
    /// A JSON object with snake_case keys and state names (what `albef-coord status --json` prints).
    public func jsonObject() -> [String: Any] {
        var o: [String: Any] = [
            "job_id": jobId, "job_state": jobState.name, "epoch": epoch, "epochs": epochs, "step": step,
            "samples": samples, "total_samples": totalSamples, "granted_samples": grantedSamples,
            "losses": ["ita": losses.ita, "itm": losses.itm, "mlm": losses.mlm, "total": losses.total],
            "samples_per_second": samplesPerSecond, "eta_seconds": etaSeconds,
            "bad_samples_indexed": badSamplesIndexed, "bad_samples_reported": badSamplesReported,
            "dropped_messages": droppedMessages, "failure_reason": failureReason, "world_size": worldSize,
            "epochs_done": epochsDone, "dropped_samples": droppedSamples, "attempt": attempt, "restarts": max(Int(attempt) - 1, 0),
            "events": events,
            "bad_samples_by_kind": Dictionary(uniqueKeysWithValues: badByKind.map { ($0.kind, $0.count) }),
            "phases": phases.map { ["name": $0.name, "seconds": $0.seconds] },
            "ranks": ranks.map {
                ["rank": $0.rank, "health": $0.health == .alive ? "alive" : $0.health == .lost ? "lost" : "unknown",
                 "host": $0.host, "pid": $0.pid, "step": $0.step, "lag": $0.lag,
                 "heartbeat_age_seconds": $0.heartbeatAgeSeconds, "outstanding_leases": $0.outstandingLeases,
                 "step_seconds": $0.stepSeconds] as [String: Any]
            },
        ]
        if let ck = lastCheckpoint {
            o["last_checkpoint"] = ["step": ck.step, "path": ck.path, "committed_samples": ck.committedSamples]
        } else {
            o["last_checkpoint"] = NSNull()
        }
        return o
    }

    /// Pretty-printed, key-sorted JSON.
    public func jsonText() -> String {
        guard let data = try? JSONSerialization.data(withJSONObject: jsonObject(), options: [.prettyPrinted, .sortedKeys]) else {
            return "{}"
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// The human table of `albef-coord status`.
    public func table() -> String {
        func eta(_ s: Double) -> String {
            guard s >= 0 else { return "unknown" }
            let t = Int(s)
            return String(format: "%dh%02dm%02ds", t / 3600, (t / 60) % 60, t % 60)
        }
        var lines: [String] = []
        lines.append("job \(jobId)  state \(jobState.name)\(failureReason.isEmpty ? "" : "  (\(failureReason))")")
        if jobState == .done {
            lines.append("finished: \(epochsDone)/\(epochs) epochs  step \(step)  samples \(samples)  dropped at epoch ends \(droppedSamples)")
        } else {
            lines.append("epoch \(epoch + 1)/\(epochs) (\(epochsDone) done)  step \(step)  samples \(samples)  granted this epoch \(grantedSamples)/\(totalSamples)  dropped at epoch ends \(droppedSamples)")
        }
        lines.append(String(format: "loss total %.4f  ita %.4f  itm %.4f  mlm %.4f", losses.total, losses.ita, losses.itm, losses.mlm))
        lines.append(String(format: "throughput %.1f samples/s  ETA %@", samplesPerSecond, eta(etaSeconds)))
        if !phases.isEmpty {
            lines.append("phases: " + phases.map { String(format: "%@ %.3fs", $0.name, $0.seconds) }.joined(separator: "  "))
        }
        if let ck = lastCheckpoint {
            lines.append("last checkpoint: step \(ck.step)  \(ck.path)  (\(ck.committedSamples) samples committed)")
        } else {
            lines.append("last checkpoint: none")
        }
        let kinds = badByKind.map { "\($0.kind) \($0.count)" }.joined(separator: ", ")
        lines.append("bad samples: \(badSamplesIndexed) indexed, \(badSamplesReported) reported\(kinds.isEmpty ? "" : " (\(kinds))")   dropped messages: \(droppedMessages)")
        lines.append("ranks: \(ranks.count)\(worldSize > 0 ? "/\(worldSize)" : "")")
        if !ranks.isEmpty {
            lines.append("  rank  health  step        lag   step_s   heartbeat  leases  host:pid")
            for r in ranks {
                let health = r.health == .alive ? "alive" : r.health == .lost ? "LOST" : "?"
                lines.append(String(format: "  %4d  %-6@  %-10llu  %-4llu  %6.3f  %7.1fs   %-6u  %@:%u", r.rank, health, r.step, r.lag,
                                    r.stepSeconds, r.heartbeatAgeSeconds, r.outstandingLeases, r.host, r.pid))
            }
        }
        if !events.isEmpty {
            lines.append("history (attempt \(attempt), \(max(Int(attempt) - 1, 0)) restart(s)):")
            for e in events.suffix(10) { lines.append("  " + e) }
        }
        return lines.joined(separator: "\n")
    }
}
