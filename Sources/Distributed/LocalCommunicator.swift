import Tensor
import Foundation

/// The shared state of `size` in-process ranks (threads).
public final class LocalWorld: @unchecked Sendable {
    public let size: Int
    var slots: [UnsafeMutableRawPointer?]
    var words: [UInt64]
    let cond = NSCondition()
    var arrived = 0
    var generation = 0

    public init(size: Int) {
        self.size = size
        slots = Array(repeating: nil, count: size)
        words = Array(repeating: 0, count: size)
    }

    /// A communicator for each rank.
    public func communicators() -> [LocalCommunicator] { (0..<size).map { LocalCommunicator(world: self, rank: $0) } }

    func barrier() {
        cond.lock()
        let gen = generation
        arrived += 1
        if arrived == size {
            arrived = 0
            generation += 1
            cond.broadcast()
        } else {
            while gen == generation { cond.wait() }
        }
        cond.unlock()
    }

    /// Runs `body(rank, communicator)` on `size` threads and waits for all of them.
    public func run(_ body: @escaping @Sendable (Int, LocalCommunicator) -> Void) {
        let comms = communicators()
        let group = DispatchGroup()
        for r in 0..<size {
            let c = comms[r]
            let t = Thread { body(r, c); group.leave() }
            t.stackSize = 16 << 20
            group.enter()
            t.start()
        }
        group.wait()
    }
}

/// `Communicator` between threads of one process; reductions add ranks in rank order.
public final class LocalCommunicator: Communicator, @unchecked Sendable {
    let world: LocalWorld
    public let rank: Int
    public var size: Int { world.size }

    init(world: LocalWorld, rank: Int) {
        self.world = world
        self.rank = rank
    }

    func exchange<T>(_ p: UnsafeMutablePointer<T>, _ body: ([UnsafeMutablePointer<T>]) -> Void) {
        world.slots[rank] = UnsafeMutableRawPointer(p)
        world.barrier()
        body(world.slots.map { $0!.assumingMemoryBound(to: T.self) })
        world.barrier()
    }

    func reduce<T: FloatingPoint>(_ buffer: UnsafeMutablePointer<T>, count: Int) {
        let tmp = UnsafeMutablePointer<T>.allocate(capacity: max(count, 1))
        defer { tmp.deallocate() }
        exchange(buffer) { all in
            for i in 0..<count {
                var s = all[0][i]
                for r in 1..<all.count { s += all[r][i] }
                tmp[i] = s
            }
        }
        buffer.update(from: tmp, count: count)
        world.barrier()
    }

    public func allReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) { reduce(buffer, count: count) }
    public func allReduceSum(_ buffer: UnsafeMutablePointer<Double>, count: Int) { reduce(buffer, count: count) }

    /// Rank order, each pairwise sum rounded to bf16.
    public func allReduceSumBF16Bits(_ buffer: UnsafeMutablePointer<UInt16>, count: Int) {
        let tmp = UnsafeMutablePointer<UInt16>.allocate(capacity: max(count, 1))
        defer { tmp.deallocate() }
        exchange(buffer) { all in
            for i in 0..<count {
                var s = all[0][i]
                for r in 1..<all.count { s = bf16Bits(floatFromBF16(s) + floatFromBF16(all[r][i])) }
                tmp[i] = s
            }
        }
        buffer.update(from: tmp, count: count)
        world.barrier()
    }

    public func startAllReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) -> CollectiveRequest {
        reduce(buffer, count: count)
        return CompletedRequest()
    }

    public func allGather(_ input: UnsafePointer<Float>, count: Int, into output: UnsafeMutablePointer<Float>) {
        exchange(UnsafeMutablePointer(mutating: input)) { all in
            for r in 0..<all.count { (output + r * count).update(from: all[r], count: count) }
        }
    }

    public func broadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) {
        exchange(buffer) { all in if rank != root { buffer.update(from: all[root], count: count) } }
    }

    public func broadcast(bytes: UnsafeMutableRawPointer, count: Int, root: Int) {
        exchange(bytes.assumingMemoryBound(to: UInt8.self)) { all in
            if rank != root { bytes.copyMemory(from: all[root], byteCount: count) }
        }
    }

    public func allGather(_ value: UInt64) -> [UInt64] {
        world.words[rank] = value
        world.barrier()
        let out = world.words
        world.barrier()
        return out
    }

    public func barrier() { world.barrier() }
}
