import Foundation

extension SelfCheckReport {
    /// Compares arrays like `compare(_:_:_:atol:rtol:)`, except that element i may differ by
    /// `allowance[i]` more: passes when max_i (|a_i − b_i| − allowance_i)₊ ≤ atol + rtol·max|ref|.
    /// `max_abs`/`max_rel` report the raw differences.
    @discardableResult
    public func compare(_ name: String, _ got: [Float], _ ref: [Float], allowance: [Double], atol: Double, rtol: Double) -> Comparison {
        guard got.count == ref.count, allowance.count == ref.count else {
            let c = Comparison(name: "\(name) (size \(got.count) vs \(ref.count))", maxAbs: .infinity, maxRel: .infinity, measure: .infinity, tolerance: 0)
            add(c)
            return c
        }
        var maxAbs = 0.0, maxRel = 0.0, refMax = 0.0, excess = 0.0
        for i in 0..<ref.count {
            let d = abs(Double(got[i]) - Double(ref[i]))
            if !d.isFinite { maxAbs = .infinity; excess = .infinity; continue }
            maxAbs = max(maxAbs, d)
            refMax = max(refMax, abs(Double(ref[i])))
            maxRel = max(maxRel, d / max(abs(Double(ref[i])), 1e-12))
            excess = max(excess, d - allowance[i])
        }
        let c = Comparison(name: name, maxAbs: maxAbs, maxRel: maxRel, measure: max(excess, 0), tolerance: atol + rtol * refMax)
        add(c)
        return c
    }
}

/// How far AdamW's first step from a fresh state moves an element for two different gradients.
///
/// At step 1, m̂ = g and √v̂ = |g|, so the update is p ← p·(1 − lr·wd) − lr·u(g) with
/// u(g) = g / (|g| + eps): |u| ≈ 1 once |g| ≫ eps, but an element whose gradient is rounding
/// noise near eps (e.g. attention key biases, whose exact gradient is 0) moves by a noise-driven
/// amount. Two implementations whose gradients agree within their tolerance may therefore end
/// up lr·|u(g) − u(g_ref)| apart on such elements; this is that allowance per element.
public enum AdamWFirstStepAllowance {
    public static func perElement(lr: Double, eps: Double, gradient: [Float], reference: [Float]) -> [Double] {
        precondition(gradient.count == reference.count, "AdamWFirstStepAllowance: \(gradient.count) vs \(reference.count) gradient elements")
        func u(_ g: Float) -> Double { Double(g) / (abs(Double(g)) + eps) }
        return zip(gradient, reference).map { lr * abs(u($0) - u($1)) }
    }
}
