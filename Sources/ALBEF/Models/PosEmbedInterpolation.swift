import NN
import Tensor

/// ALBEF's `interpolate_pos_embed`: resizes a ViT position embedding `[1, 1 + g_old², C]` to
/// `[1, 1 + g_new², C]`. The CLS entry is kept; the grid (row-major, channels first) is resized
/// with PyTorch's bicubic (`F.interpolate(mode='bicubic', align_corners=False)`):
/// source coordinate (o + ½)·(g_old/g_new) − ½ (not clamped), i0 = ⌊src⌋, t = src − i0, taps
/// i0−1 … i0+2 clamped to [0, g_old−1], cubic convolution with A = −0.75, separable in H and W.
/// Equal grids return the input unchanged.
public func interpolatePosEmbed(_ pos: [Float], channels c: Int, oldGrid gOld: Int, newGrid gNew: Int) -> [Float] {
    precondition(pos.count == (1 + gOld * gOld) * c, "interpolatePosEmbed: \(pos.count) values ≠ (1 + \(gOld)²)·\(c)")
    if gOld == gNew { return pos }
    func weights(_ t: Float) -> [Float] {
        let a: Float = -0.75
        func near(_ x: Float) -> Float { ((a + 2) * x - (a + 3)) * x * x + 1 }          // |x| ≤ 1
        func far(_ x: Float) -> Float { ((a * x - 5 * a) * x + 8 * a) * x - 4 * a }      // 1 < |x| < 2
        return [far(t + 1), near(t), near(1 - t), far(2 - t)]
    }
    let scale = Float(gOld) / Float(gNew)
    var taps: [(idx: [Int], w: [Float])] = []
    for o in 0..<gNew {
        let src = (Float(o) + 0.5) * scale - 0.5
        let i0 = Int(src.rounded(.down))
        let t = src - Float(i0)
        taps.append(((i0 - 1...i0 + 2).map { min(max($0, 0), gOld - 1) }, weights(t)))
    }
    var out = [Float](repeating: 0, count: (1 + gNew * gNew) * c)
    for j in 0..<c { out[j] = pos[j] }
    // Rows first (H), then columns (W), as PyTorch's separable upsample_bicubic2d.
    var tmp = [Float](repeating: 0, count: gNew * gOld * c)  // [gNew rows][gOld cols][c]
    for oy in 0..<gNew {
        for x in 0..<gOld {
            for k in 0..<4 {
                let w = taps[oy].w[k], y = taps[oy].idx[k]
                let src = (1 + y * gOld + x) * c, dst = (oy * gOld + x) * c
                for j in 0..<c { tmp[dst + j] += w * pos[src + j] }
            }
        }
    }
    for oy in 0..<gNew {
        for ox in 0..<gNew {
            let dst = (1 + oy * gNew + ox) * c
            for k in 0..<4 {
                let w = taps[ox].w[k], x = taps[ox].idx[k]
                let src = (oy * gOld + x) * c
                for j in 0..<c { out[dst + j] += w * tmp[src + j] }
            }
        }
    }
    return out
}

extension ALBEFEncoders {
    /// Loads a checkpoint whose ViT grid may differ from this model's (e.g. 224 → 256 px, or
    /// 256 → 384 px for fine-tuning), resizing `visual_encoder(_m).pos_embed` with
    /// `interpolatePosEmbed` as ALBEF does for non-resume loads. Other keys load as usual,
    /// through `keyMap` (model key → file key; nil skips it).
    @discardableResult
    public func loadInterpolatingPosEmbed(_ file: WeightFile, strict: Bool = false,
                                          keyMap: (String) -> String? = { $0 }) throws -> LoadReport {
        let keys = ["visual_encoder.pos_embed", "visual_encoder_m.pos_embed"]
        var r = try load(from: file, keyMap: { keys.contains($0) ? nil : keyMap($0) }, strict: false)
        r.unexpected.removeAll { keys.contains($0) }
        for (k, t) in [(keys[0], visualEncoder.posEmbed), (keys[1], visualEncoderM.posEmbed)] {
            guard let eShape = file.shape(of: k) else { continue }
            let c = t.shape[2]
            let nOld = eShape.reduce(1, *) / c - 1
            let gOld = Int(Float(nOld).squareRoot().rounded()), gNew = Int(Float(t.shape[1] - 1).squareRoot().rounded())
            guard gOld * gOld == nOld, eShape.last == c else {
                throw CheckpointError.shapeMismatch(key: k, expected: t.shape, got: eShape, path: file.path)
            }
            let v = interpolatePosEmbed(try file.floats(k), channels: c, oldGrid: gOld, newGrid: gNew)
            v.withUnsafeBufferPointer { t.data.update(from: $0.baseAddress!, count: t.count) }
            r.loaded.append(k)
        }
        r.missing += keys.filter { file.shape(of: $0) == nil }
        if strict && !r.isClean { throw CheckpointError.keyMismatch(report: r, path: file.path) }
        return r
    }
}
