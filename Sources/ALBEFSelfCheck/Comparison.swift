import Foundation
import Tensor

/// One compared quantity of a selfcheck: max absolute and relative error and the verdict.
public struct Comparison: Sendable {
    public var name: String
    public var maxAbs: Double
    public var maxRel: Double
    /// The error that the tolerance applies to (see `SelfCheckReport.compare`).
    public var measure: Double
    public var tolerance: Double
    public var passed: Bool { measure <= tolerance && measure.isFinite }

    public var line: String {
        String(format: "%@ %@ max_abs=%.3e max_rel=%.3e (check %.3e <= %.1e)", passed ? "ok  " : "FAIL", name, maxAbs, maxRel, measure, tolerance)
    }
}

/// Collects comparisons and prints them; `passed` only when every one passed.
public final class SelfCheckReport {
    public private(set) var comparisons: [Comparison] = []
    public private(set) var notes: [String] = []
    let echo: Bool

    public init(echo: Bool = true) { self.echo = echo }

    public var passed: Bool { !comparisons.isEmpty && comparisons.allSatisfy(\.passed) }
    public var failures: [Comparison] { comparisons.filter { !$0.passed } }

    public func note(_ s: String) {
        notes.append(s)
        if echo { print(s) }
    }

    /// Compares arrays: `measure` = max |a − b| / (atol + rtol·max|ref|) style, i.e. the max
    /// absolute error scaled by the reference's magnitude: passes when
    /// max|a − b| ≤ atol + rtol · max|ref|.
    @discardableResult
    public func compare(_ name: String, _ got: [Float], _ ref: [Float], atol: Double, rtol: Double) -> Comparison {
        var maxAbs = 0.0, maxRel = 0.0, refMax = 0.0
        if got.count != ref.count {
            let c = Comparison(name: "\(name) (size \(got.count) vs \(ref.count))", maxAbs: .infinity, maxRel: .infinity, measure: .infinity, tolerance: 0)
            add(c)
            return c
        }
        for i in 0..<ref.count {
            let d = abs(Double(got[i]) - Double(ref[i]))
            if !d.isFinite { maxAbs = .infinity; continue }
            maxAbs = max(maxAbs, d)
            refMax = max(refMax, abs(Double(ref[i])))
            maxRel = max(maxRel, d / max(abs(Double(ref[i])), 1e-12))
        }
        let tol = atol + rtol * refMax
        let c = Comparison(name: name, maxAbs: maxAbs, maxRel: maxRel, measure: maxAbs, tolerance: tol)
        add(c)
        return c
    }

    /// Compares two scalars by relative error.
    @discardableResult
    public func compareScalar(_ name: String, _ got: Double, _ ref: Double, rtol: Double, atol: Double = 0) -> Comparison {
        let d = abs(got - ref)
        let rel = d / max(abs(ref), 1e-30)
        let c = Comparison(name: name + String(format: " (%.8g vs %.8g)", got, ref), maxAbs: d, maxRel: rel,
                           measure: d, tolerance: atol + rtol * abs(ref))
        add(c)
        return c
    }

    /// Compares integer arrays exactly.
    @discardableResult
    public func compareExact<T: Equatable>(_ name: String, _ got: [T], _ ref: [T]) -> Comparison {
        var bad = got.count == ref.count ? 0 : max(got.count, ref.count)
        if got.count == ref.count { for i in 0..<got.count where got[i] != ref[i] { bad += 1 } }
        let c = Comparison(name: name + " (exact)", maxAbs: Double(bad), maxRel: Double(bad), measure: Double(bad), tolerance: 0)
        add(c)
        return c
    }

    /// Records a pass/fail verdict computed elsewhere (exact comparisons).
    public func record(name: String, passed: Bool) {
        add(Comparison(name: name, maxAbs: passed ? 0 : 1, maxRel: passed ? 0 : 1, measure: passed ? 0 : 1, tolerance: 0))
    }

    func add(_ c: Comparison) {
        comparisons.append(c)
        if echo { print(c.line) }
    }

    /// The last line: `selfcheck: PASS` or `selfcheck: FAIL <n> of <m> (first: name)`.
    public var verdict: String {
        if passed { return "selfcheck: PASS (\(comparisons.count) quantities)" }
        if comparisons.isEmpty { return "selfcheck: FAIL nothing was compared" }
        let f = failures
        return "selfcheck: FAIL \(f.count) of \(comparisons.count) quantities (first: \(f[0].name))"
    }
}

/// Reads a fixture's `fixture.json`.
public func readFixtureJSON(_ dir: URL) throws -> [String: Any] {
    let url = dir.appendingPathComponent("fixture.json")
    guard let data = FileManager.default.contents(atPath: url.path) else {
        throw SelfCheckError.missing("\(url.path) not found: a fixture directory holds fixture.json (+ fixture.safetensors)")
    }
    guard let obj = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
        throw SelfCheckError.invalid("\(url.path): not a JSON object")
    }
    return obj
}

public enum SelfCheckError: Error, CustomStringConvertible {
    case missing(String)
    case invalid(String)
    public var description: String {
        switch self { case .missing(let s), .invalid(let s): return s }
    }
}

/// JSON helpers tolerant of Int/Double spelling.
func num(_ v: Any?) -> Double? {
    if let d = v as? Double { return d }
    if let i = v as? Int { return Double(i) }
    if let n = v as? NSNumber { return n.doubleValue }
    return nil
}
