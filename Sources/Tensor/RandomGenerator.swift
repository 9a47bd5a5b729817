/// A seeded, splittable, counter-based pseudo-random generator.
///
/// Concretely: output `k` of a stream is `mix64(key &+ (counter_k + 1) &* γ)`, the SplitMix64
/// finalizer over a Weyl sequence (γ = 0x9E3779B97F4A7C15). The whole state is two words
/// (`key`, `counter`), so it is saved and restored exactly (`Codable`) for sample-exact resume.
/// `split(_:)` derives an independent child stream from a 64-bit stream id (per rank, per worker
/// thread, per epoch) without touching the parent.
///
/// PyTorch counterpart: `torch.Generator` (different bits: we do not reproduce torch's streams;
/// parity tests inject the random draws instead).
public struct RandomGenerator: Codable, Hashable, Sendable {
    /// Stream key (derived from the seed and the split path).
    public var key: UInt64
    /// Number of 64-bit outputs drawn so far.
    public var counter: UInt64

    static let gamma: UInt64 = 0x9E37_79B9_7F4A_7C15

    /// A generator for `seed`; equal seeds give equal streams.
    public init(seed: UInt64) {
        key = RandomGenerator.mix64(seed &+ 0x5851_F42D_4C95_7F2D)
        counter = 0
    }

    /// Restores a generator from a saved `(key, counter)` pair.
    public init(key: UInt64, counter: UInt64) {
        self.key = key
        self.counter = counter
    }

    @inline(__always)
    static func mix64(_ z0: UInt64) -> UInt64 {
        var z = z0
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// An independent child stream, e.g. `rng.split(UInt64(rank))`.
    public func split(_ stream: UInt64) -> RandomGenerator {
        RandomGenerator(key: RandomGenerator.mix64(key ^ RandomGenerator.mix64(stream &+ 0x2545_F491_4F6C_DD1D)),
                        counter: 0)
    }

    /// The next 64 random bits.
    @inline(__always)
    public mutating func nextUInt64() -> UInt64 {
        counter &+= 1
        return RandomGenerator.mix64(key &+ counter &* RandomGenerator.gamma)
    }

    /// Uniform in [0, 1) with 24 random bits (every Float32 value of that grid is reachable).
    @inline(__always)
    public mutating func nextFloat() -> Float {
        Float(nextUInt64() >> 40) * (1.0 / 16_777_216.0)
    }

    /// Uniform in [0, 1) with 53 random bits.
    @inline(__always)
    public mutating func nextDouble() -> Double {
        Double(nextUInt64() >> 11) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// Uniform in [low, high).
    public mutating func uniform(_ low: Float, _ high: Float) -> Float {
        low + (high - low) * nextFloat()
    }

    /// Uniform in [low, high) in double precision.
    public mutating func uniform(_ low: Double, _ high: Double) -> Double {
        low + (high - low) * nextDouble()
    }

    /// Standard normal N(0, 1) by Box–Muller (two uniform draws per value; no cached spare, so
    /// the state stays two words).
    public mutating func normal() -> Float {
        var u1 = nextDouble()
        if u1 < 1e-300 { u1 = 1e-300 }
        let u2 = nextDouble()
        return Float((-2.0 * _log(u1)).squareRoot() * _cos(2.0 * Double.pi * u2))
    }

    /// Normal N(mean, std²).
    public mutating func normal(mean: Float, std: Float) -> Float {
        mean + std * normal()
    }

    /// True with probability `p`.
    public mutating func bernoulli(_ p: Double) -> Bool {
        nextDouble() < p
    }

    /// Uniform integer in [0, n), unbiased (Lemire's multiply-shift with rejection).
    public mutating func int(below n: Int) -> Int {
        precondition(n > 0, "RandomGenerator.int(below:): n must be positive, got \(n)")
        let bound = UInt64(n)
        var x = nextUInt64()
        var m = x.multipliedFullWidth(by: bound)
        if m.low < bound {
            let threshold = (0 &- bound) % bound
            while m.low < threshold {
                x = nextUInt64()
                m = x.multipliedFullWidth(by: bound)
            }
        }
        return Int(m.high)
    }

    /// Uniform integer in [low, high).
    public mutating func int(_ low: Int, _ high: Int) -> Int {
        low + int(below: high - low)
    }

    /// One index drawn with probability proportional to the non-negative `weights` (unnormalised,
    /// like `torch.multinomial(w, 1)`). Returns nil when every weight is zero or one is not finite.
    public mutating func categorical<C: Collection>(weights: C) -> Int? where C.Element == Float {
        var total = 0.0
        for w in weights {
            guard w.isFinite, w >= 0 else { return nil }
            total += Double(w)
        }
        guard total > 0 else { return nil }
        let target = nextDouble() * total
        var acc = 0.0
        var last = -1
        for (i, w) in weights.enumerated() {
            if w > 0 { last = i }
            acc += Double(w)
            if target < acc, w > 0 { return i }
        }
        return last
    }

    /// Fisher–Yates shuffle in place.
    public mutating func shuffle<T>(_ a: inout [T]) {
        guard a.count > 1 else { return }
        for i in stride(from: a.count - 1, to: 0, by: -1) {
            let j = int(below: i + 1)
            if i != j { a.swapAt(i, j) }
        }
    }

    /// A random permutation of 0..<n.
    public mutating func permutation(_ n: Int) -> [Int] {
        var p = Array(0..<n)
        shuffle(&p)
        return p
    }
}

#if canImport(Glibc)
import Glibc
@inline(__always) func _log(_ x: Double) -> Double { Glibc.log(x) }
@inline(__always) func _cos(_ x: Double) -> Double { Glibc.cos(x) }
#else
import Foundation
@inline(__always) func _log(_ x: Double) -> Double { Foundation.log(x) }
@inline(__always) func _cos(_ x: Double) -> Double { Foundation.cos(x) }
#endif
