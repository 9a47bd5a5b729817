/// `ToTensor()` + `Normalize(mean, std)`: RGB8 HWC → Float32 CHW,
/// out[c, y, x] = (pixel[y, x, c] / 255 − mean[c]) / std[c]. Defaults are ALBEF's CLIP statistics.
public struct Normalization: Sendable, Equatable {
    public var mean: (Float, Float, Float)
    public var std: (Float, Float, Float)

    public static let clip = Normalization(mean: (0.48145466, 0.4578275, 0.40821073),
                                           std: (0.26862954, 0.26130258, 0.27577711))

    public static func == (a: Normalization, b: Normalization) -> Bool {
        a.mean == b.mean && a.std == b.std
    }

    /// Writes `image` as (3, H, W) floats at `out[0 ..< 3·H·W]`.
    public func write(_ image: RGBImage, to out: UnsafeMutableBufferPointer<Float>) {
        let n = image.width * image.height
        precondition(out.count >= 3 * n, "Normalization.write: output has \(out.count) floats, need \(3 * n)")
        let scale = (1 / (255 * std.0), 1 / (255 * std.1), 1 / (255 * std.2))
        let bias = (-mean.0 / std.0, -mean.1 / std.1, -mean.2 / std.2)
        image.pixels.withUnsafeBufferPointer { p in
            for i in 0..<n {
                out[i] = Float(p[3 * i]) * scale.0 + bias.0
                out[n + i] = Float(p[3 * i + 1]) * scale.1 + bias.1
                out[2 * n + i] = Float(p[3 * i + 2]) * scale.2 + bias.2
            }
        }
    }
}
