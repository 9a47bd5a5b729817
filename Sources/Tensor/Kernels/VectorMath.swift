/// Vectorised elementary functions on 8 Float lanes, used by the bandwidth-bound kernels.
///
/// `vexp`: eˣ by range reduction x = n·ln2 + r (|r| ≤ ln2/2, ln2 split in a high and a low part),
/// a degree-6 Taylor polynomial for eʳ (relative error < 2e-7 on that interval) and 2ⁿ built
/// in the exponent bits. Inputs are clamped to [−87.3, 88.0] (results 0 < eˣ < ∞ as Float).
/// `verf`: Abramowitz & Stegun 7.1.26, erf(x) = 1 − (a₁t + … + a₅t⁵)·e^(−x²), t = 1/(1 + p|x|),
/// odd-extended; absolute error ≤ 1.5e-7 in exact arithmetic, ≤ 5e-7 in Float32 (GELU = ½x(1 + erf(x/√2)) then has relative error
/// ≲ 2e-7, below Float32 rounding of the surrounding ops).
public typealias Float8 = SIMD8<Float>

@inline(__always)
public func vexp(_ x0: Float8) -> Float8 {
    let x = vmin(vmax(x0, Float8(repeating: -87.3)), Float8(repeating: 88.0))
    let log2e: Float = 1.442695040888963
    // n = round(x·log2e) via the 1.5·2²³ shift: the integer lands in the low mantissa bits.
    let shifter: Float = 12_582_912
    let t = x * log2e + shifter
    let n = t - shifter
    let ln2hi: Float = 0.693359375, ln2lo: Float = -2.12194440e-4
    let r = (x - n * ln2hi) - n * ln2lo
    // eʳ ≈ 1 + r + r²/2 + r³/6 + r⁴/24 + r⁵/120 + r⁶/720 (Horner)
    var p = Float8(repeating: 1.0 / 720)
    p = p * r + 1.0 / 120
    p = p * r + 1.0 / 24
    p = p * r + 1.0 / 6
    p = p * r + 0.5
    p = p * r + 1
    p = p * r + 1
    let ni = unsafeBitCast(t, to: SIMD8<Int32>.self) &- unsafeBitCast(Float8(repeating: shifter), to: SIMD8<Int32>.self)
    let bits = (ni &+ 127) &<< 23
    return p * unsafeBitCast(bits, to: Float8.self)
}

@inline(__always)
public func verf(_ x: Float8) -> Float8 {
    let zero = Float8(repeating: 0)
    let ax = x.replacing(with: zero - x, where: x .< zero)
    let t = 1 / (1 + 0.3275911 * ax)
    var y = Float8(repeating: 1.061405429)
    y = y * t - 1.453152027
    y = y * t + 1.421413741
    y = y * t - 0.284496736
    y = y * t + 0.254829592
    y = y * t
    let e = 1 - y * vexp(-(ax * ax))
    return e.replacing(with: zero - e, where: x .< zero)
}

@inline(__always) func load8(_ p: UnsafePointer<Float>) -> Float8 { UnsafeRawPointer(p).loadUnaligned(as: Float8.self) }
@inline(__always) func store8(_ v: Float8, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: Float8.self) }

/// Σ x[0..<n] with 8 partial sums combined in a fixed order (deterministic, vectorised).
@inline(__always)
func vsum(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc = Float8(repeating: 0)
    var i = 0
    while i + 8 <= n { acc += load8(x + i); i += 8 }
    var s = acc.sum()
    while i < n { s += x[i]; i += 1 }
    return s
}

/// Lane-wise max / min (inlined; the generic stdlib versions are out-of-line calls here).
@inline(__always) func vmax(_ a: Float8, _ b: Float8) -> Float8 { a.replacing(with: b, where: b .> a) }
@inline(__always) func vmin(_ a: Float8, _ b: Float8) -> Float8 { a.replacing(with: b, where: b .< a) }
