import Foundation
import Tensor

/// A crop rectangle in source pixels: columns [x, x + width), rows [y, y + height).
public struct CropBox: Equatable, Sendable {
    public var x: Int
    public var y: Int
    public var width: Int
    public var height: Int
    public init(x: Int, y: Int, width: Int, height: Int) {
        self.x = x
        self.y = y
        self.width = width
        self.height = height
    }
}

/// torchvision `RandomResizedCrop.get_params(img, scale, ratio)`.
///
/// Concretely, for up to 10 attempts: area' = W·H·U(scale), log r ~ U(log ratio.lo, log ratio.hi),
/// w = round(√(area'·r)), h = round(√(area'/r)) (round half to even, as Python); if 0 < w ≤ W and
/// 0 < h ≤ H, y ~ randint(0, H − h + 1), x ~ randint(0, W − w + 1). Otherwise the fallback is a
/// centre crop with the aspect ratio clamped to `ratio` (whole image when W/H is within it).
/// Draws per attempt: 2 uniforms, then (on success) 2 integers.
public enum RandomResizedCrop {
    public static func box(width W: Int, height H: Int, scale: (Double, Double) = (0.2, 1.0),
                           ratio: (Double, Double) = (3.0 / 4.0, 4.0 / 3.0),
                           rng: inout RandomGenerator) -> CropBox {
        let area = Double(W * H)
        let logLo = log(ratio.0), logHi = log(ratio.1)
        for _ in 0..<10 {
            let target = area * rng.uniform(scale.0, scale.1)
            let aspect = exp(rng.uniform(logLo, logHi))
            let w = Int((target * aspect).squareRoot().rounded(.toNearestOrEven))
            let h = Int((target / aspect).squareRoot().rounded(.toNearestOrEven))
            if w > 0 && h > 0 && w <= W && h <= H {
                let y = rng.int(below: H - h + 1)
                let x = rng.int(below: W - w + 1)
                return CropBox(x: x, y: y, width: w, height: h)
            }
        }
        return fallback(width: W, height: H, ratio: ratio)
    }

    /// The centre-crop fallback.
    public static func fallback(width W: Int, height H: Int, ratio: (Double, Double)) -> CropBox {
        let inRatio = Double(W) / Double(H)
        var w = W, h = H
        if inRatio < min(ratio.0, ratio.1) {
            w = W
            h = Int((Double(w) / min(ratio.0, ratio.1)).rounded(.toNearestOrEven))
        } else if inRatio > max(ratio.0, ratio.1) {
            h = H
            w = Int((Double(h) * max(ratio.0, ratio.1)).rounded(.toNearestOrEven))
        }
        return CropBox(x: (W - w) / 2, y: (H - h) / 2, width: w, height: h)
    }

    /// The largest libjpeg scale denominator d ∈ {1, 2, 4, 8} such that the crop, decoded at 1/d,
    /// still has at least `outSize` pixels on both sides (so the resize still shrinks).
    public static func jpegScaleDenominator(crop: CropBox, outSize: Int) -> Int {
        for d in [8, 4, 2] where crop.width / d >= outSize && crop.height / d >= outSize { return d }
        return 1
    }
}
