import CKernels

/// GELU, erf form: y = ½·x·(1 + erf(x/√2)). PyTorch: `nn.GELU()` (approximate='none').
///
/// The C core (`ck_gelu_forward`; AVX-512 or AVX2+FMA when the CPU has it) evaluates erf with a rational
/// fit z·P(z²)/Q(z²) (|error| ≤ 3.6e-7 in float32, no exp; `scripts/fit-gelu-rational`); the
/// last `count mod 8` elements use libm's erff. Elements are split across threads in
/// blocks of 8, so the result does not depend on the thread count.
public func geluForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, count: Int) {
    Threading.parallelFor(count / 8 + 1, grain: 2048) { range in
        let lo = range.lowerBound * 8, hi = min(count, range.upperBound * 8)
        if lo < hi { ck_gelu_forward(out, inp, lo, hi) }
    }
}

/// GELU backward: dx += dy · (Φ(x) + x·φ(x)), Φ(x) = ½(1 + erf(x/√2)), φ the standard normal
/// density; the C core evaluates GELU' = ½ + x·P(x²)/Q(x²) directly (a rational fit, |error| ≤
/// 2.9e-7 in float32, no exp).
public func geluBackward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                         inp: UnsafePointer<Float>, count: Int) {
    Threading.parallelFor(count / 8 + 1, grain: 2048) { range in
        let lo = range.lowerBound * 8, hi = min(count, range.upperBound * 8)
        if lo < hi { ck_gelu_backward(dinp, dout, inp, lo, hi) }
    }
}
