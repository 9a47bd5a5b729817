/// Vectorised elementary functions on 8 Float lanes, used by the bandwidth-bound kernels.
///
/// `vexp`: eˣ by range reduction x = n·ln2 + r (|r| ≤ ln2/2, ln2 split in a high and a low part),
/// a degree-6 Taylor polynomial for eʳ (relative error < 2e-7 on that interval) and 2ⁿ built
/// in the exponent bits. Inputs are clamped to [−87.3, 88.0] (results 0 < eˣ < ∞ as Float).
/// (GELU, layer norm and softmax run in the C core, `Sources/CKernels`.)
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

@inline(__always) func load8(_ p: UnsafePointer<Float>) -> Float8 { UnsafeRawPointer(p).loadUnaligned(as: Float8.self) }
@inline(__always) func store8(_ v: Float8, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: Float8.self) }

/// Lane-wise max / min (inlined; the generic stdlib versions are out-of-line calls here).
@inline(__always) func vmax(_ a: Float8, _ b: Float8) -> Float8 { a.replacing(with: b, where: b .> a) }
@inline(__always) func vmin(_ a: Float8, _ b: Float8) -> Float8 { a.replacing(with: b, where: b .< a) }
