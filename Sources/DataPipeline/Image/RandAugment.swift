import Tensor

/// ALBEF's `RandomAugment(N=2, M=7, isPIL=True, augs=[...])` (ALBEF-SPEC §5.3).
///
/// Draw order per image: two op indices uniformly with replacement from `ops`; then for each op one
/// uniform u (skipped when u > 0.5); when applied and geometric, one more uniform for the sign
/// (Rotate negates when < 0.5, shear/translate when > 0.5). Magnitudes at level 7/10: shear 0.21,
/// translate 7 px, rotate 21°, brightness and sharpness factor 1.36; fill 128.
public struct RandAugment {
    public enum Op: String, CaseIterable, Sendable {
        case identity = "Identity", autoContrast = "AutoContrast", equalize = "Equalize"
        case brightness = "Brightness", sharpness = "Sharpness"
        case shearX = "ShearX", shearY = "ShearY", translateX = "TranslateX", translateY = "TranslateY"
        case rotate = "Rotate"
    }

    public var ops: [Op] = Op.allCases
    public var count = 2
    public var level = 7.0
    public var applyProbability = 0.5
    public var fill: UInt8 = 128
    var scratch = RGBImage()
    var sharpenScratch: [UInt8] = []

    public init() {}

    /// One op applied with a fixed sign (for tests and the bench).
    public mutating func apply(_ op: Op, negate: Bool, to image: inout RGBImage) {
        let m = level / 10
        switch op {
        case .identity: break
        case .autoContrast: AugmentOps.autoContrast(&image)
        case .equalize: AugmentOps.equalize(&image)
        case .brightness: AugmentOps.brightness(&image, factor: m * 1.8 + 0.1)
        case .sharpness: AugmentOps.sharpness(&image, factor: Float(m * 1.8 + 0.1), scratch: &sharpenScratch)
        case .shearX, .shearY, .translateX, .translateY, .rotate:
            let sign = negate ? -1.0 : 1.0
            let affine: AugmentOps.Affine
            switch op {
            case .shearX: affine = .shearX(sign * m * 0.3)
            case .shearY: affine = .shearY(sign * m * 0.3)
            case .translateX: affine = .translateX(sign * m * 10)
            case .translateY: affine = .translateY(sign * m * 10)
            default: affine = .rotation(degrees: sign * m * 30, cx: Double(image.width) / 2, cy: Double(image.height) / 2)
            }
            AugmentOps.warpAffine(image, affine, fill: fill, into: &scratch)
            swap(&image, &scratch)
        }
    }

    static func isGeometric(_ op: Op) -> Bool {
        switch op {
        case .shearX, .shearY, .translateX, .translateY, .rotate: return true
        default: return false
        }
    }

    /// Draws the ops and applies them; returns what was applied (op, negated) for logging/tests.
    @discardableResult
    public mutating func callAsFunction(_ image: inout RGBImage, rng: inout RandomGenerator) -> [(Op, Bool)] {
        var chosen: [Op] = []
        for _ in 0..<count { chosen.append(ops[rng.int(below: ops.count)]) }
        var applied: [(Op, Bool)] = []
        for op in chosen {
            if rng.nextDouble() > applyProbability { continue }
            var negate = false
            if RandAugment.isGeometric(op) {
                let u = rng.nextDouble()
                negate = op == .rotate ? u < 0.5 : u > 0.5
            }
            apply(op, negate: negate, to: &image)
            applied.append((op, negate))
        }
        return applied
    }
}
