/// The static data layout of one epoch, independent of the world size.
///
/// The epoch's permutation `S` of the usable samples is dealt to `slots` streams: slot `j` holds
/// `S[j], S[j + P], S[j + 2P], …` (`⌊|S|/P⌋` entries each, P = `slots`; the `|S| mod P` left over
/// are the epoch's dropped tail, as `drop_last` does). Optimizer step `k` (counted from this
/// layout's start) takes entries `[origin_j + k·b, origin_j + (k+1)·b)` of every slot `j`
/// (b = `batchSize`, the per-rank micro-batch). With `ranks` ranks and `accum` micro-steps per
/// step (P = ranks × accum), micro-step `m` of rank `r` reads slot `m·ranks + r`.
///
/// So the global batch of a step is one fixed set of samples whatever the world size: P slots of
/// b samples, and a checkpoint's data position is one number per slot. Resuming on another world
/// size with the same slot count re-deals the slots to the new ranks and continues every slot
/// where it stopped (`origins`), so every remaining sample of the epoch is read exactly once.
/// With one micro-step per rank and zero origins, rank `r` reads `S[r], S[r + W], …`: the layout
/// of PyTorch's `DistributedSampler` (without padding).
public struct SlotPlan: Codable, Equatable, Sendable {
    /// P: ranks × micro-steps per optimizer step.
    public var slots: Int
    /// b: samples per slot per step (the per-rank micro-batch).
    public var batchSize: Int
    /// Entries of each slot consumed before this layout started (all zero at an epoch's start).
    public var origins: [Int]

    public init(slots: Int, batchSize: Int, origins: [Int]? = nil) {
        precondition(slots > 0 && batchSize > 0, "SlotPlan: slots and batchSize must be positive")
        self.slots = slots
        self.batchSize = batchSize
        self.origins = origins ?? Array(repeating: 0, count: slots)
        precondition(self.origins.count == slots, "SlotPlan: \(self.origins.count) origins for \(slots) slots")
    }

    /// Entries per slot for an epoch of `samples` usable samples.
    public func slotLength(samples: Int) -> Int { samples / slots }

    /// Full optimizer steps left in this layout: every slot must still have b entries.
    public func steps(samples: Int) -> Int {
        let l = slotLength(samples: samples)
        return origins.map { max(0, l - $0) / batchSize }.min() ?? 0
    }

    /// The slots rank `rank` of `ranks` reads, in micro-step order.
    public func slots(rank: Int, ranks: Int) -> [Int] {
        precondition(ranks > 0 && slots % ranks == 0 && rank >= 0 && rank < ranks, "SlotPlan: \(slots) slots cannot be dealt to \(ranks) ranks")
        return stride(from: rank, to: slots, by: ranks).map { $0 }
    }

    /// Rank `rank`'s reading order, as indices into the epoch order `S` (`count` = |S|): the
    /// blocks of every step (its slots' b entries, micro-step by micro-step), then the remaining
    /// entries of its slots, which the loader reads only to replace samples it had to skip.
    public func sequence(count: Int, rank: Int, ranks: Int) -> [Int] {
        let mine = slots(rank: rank, ranks: ranks)
        let steps = self.steps(samples: count), l = slotLength(samples: count), b = batchSize
        var out: [Int] = []
        out.reserveCapacity(mine.count * max(0, l))
        for k in 0..<steps {
            for j in mine { for t in (origins[j] + k * b)..<(origins[j] + (k + 1) * b) { out.append(j + slots * t) } }
        }
        for j in mine where origins[j] + steps * b < l {
            for t in (origins[j] + steps * b)..<l { out.append(j + slots * t) }
        }
        return out
    }

    /// Entries of each of rank `rank`'s slots consumed once the first `cursor` positions of its
    /// ``sequence(count:rank:ranks:)`` are: (slot, entries consumed including the origin).
    public func consumed(count: Int, rank: Int, ranks: Int, cursor: Int) -> [(slot: Int, consumed: Int)] {
        let mine = slots(rank: rank, ranks: ranks)
        let steps = self.steps(samples: count), l = slotLength(samples: count), b = batchSize, a = mine.count
        let block = a * b
        var used = [Int](repeating: 0, count: a)
        let inBlocks = min(cursor, steps * block)
        for m in 0..<a { used[m] = (inBlocks / block) * b + min(max(inBlocks % block - m * b, 0), b) }
        var rest = cursor - inBlocks
        for m in 0..<a where rest > 0 {
            let tail = max(0, l - origins[mine[m]] - steps * b)
            let take = min(rest, tail)
            used[m] += take
            rest -= take
        }
        return (0..<a).map { (mine[$0], origins[mine[$0]] + used[$0]) }
    }

    /// The layout that continues this one after each rank `r` of `ranks` read `cursors[r]`
    /// positions of its sequence: every slot's origin moves past what was consumed.
    public func advanced(count: Int, ranks: Int, cursors: [Int]) -> SlotPlan {
        precondition(cursors.count == ranks, "SlotPlan: \(cursors.count) cursors for \(ranks) ranks")
        var next = self
        for r in 0..<ranks {
            for (j, c) in consumed(count: count, rank: r, ranks: ranks, cursor: cursors[r]) { next.origins[j] = c }
        }
        return next
    }
}
