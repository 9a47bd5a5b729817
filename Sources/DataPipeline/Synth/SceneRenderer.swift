import Foundation
import Tensor

/// Rasterises a `Scene` into an RGB8 image with 4×4 supersampled (anti-aliased) shape edges.
///
/// Shapes, for a point (u, v) relative to the centre in units of the radius r: circle u²+v² ≤ 1;
/// square max(|u|, |v|) ≤ 0.85; diamond |u| + |v| ≤ 1; cross (|u| ≤ 0.33 ∧ |v| ≤ 1) ∨ (|v| ≤ 0.33 ∧ |u| ≤ 1);
/// triangle: upward, apex (0, −1), base v = 0.75, |u| ≤ (v + 1)/1.75·0.95; star: 5-point polygon
/// with inner radius 0.45.
public enum SceneRenderer {
    static let starPolygon: [(Double, Double)] = (0..<10).map { k in
        let a = -Double.pi / 2 + Double(k) * Double.pi / 5
        let r = k % 2 == 0 ? 1.0 : 0.45
        return (r * cos(a), r * sin(a))
    }

    static func inside(_ shape: SceneVocabulary.Shape, _ u: Double, _ v: Double) -> Bool {
        switch shape {
        case .circle: return u * u + v * v <= 1
        case .square: return max(abs(u), abs(v)) <= 0.85
        case .diamond: return abs(u) + abs(v) <= 1
        case .cross: return (abs(u) <= 0.33 && abs(v) <= 1) || (abs(v) <= 0.33 && abs(u) <= 1)
        case .triangle: return v >= -1 && v <= 0.75 && abs(u) <= (v + 1) / 1.75 * 0.95
        case .star:
            var c = false
            var j = starPolygon.count - 1
            for i in 0..<starPolygon.count {
                let (xi, yi) = starPolygon[i], (xj, yj) = starPolygon[j]
                if (yi > v) != (yj > v) && u < (xj - xi) * (v - yi) / (yj - yi) + xi { c.toggle() }
                j = i
            }
            return c
        }
    }

    /// Renders `scene` at `size`×`size`; `rng` drives the background noise and clutter.
    public static func render(_ scene: Scene, size: Int, rng: inout RandomGenerator) -> RGBImage {
        var img = RGBImage(width: size, height: size)
        let bg = [Int(scene.background.0), Int(scene.background.1), Int(scene.background.2)]
        let amp = scene.noiseAmplitude
        // Smooth-ish noise: a coarse 8×8 grid of offsets plus fine per-pixel noise.
        let grid = (0..<81).map { _ in rng.int(below: 2 * amp + 1) - amp }
        for y in 0..<size {
            for x in 0..<size {
                let gx = x * 8 / size, gy = y * 8 / size
                let coarse = grid[gy * 9 + gx]
                let fine = rng.int(below: amp + 1) - amp / 2
                for c in 0..<3 {
                    img.pixels[(y * size + x) * 3 + c] = UInt8(max(0, min(255, bg[c] + coarse + fine)))
                }
            }
        }
        if scene.clutter {
            for _ in 0..<(3 + rng.int(below: 5)) {
                // Thin random lines of a random grey/colour.
                let x0 = rng.uniform(0.0, Double(size)), y0 = rng.uniform(0.0, Double(size))
                let ang = rng.uniform(0.0, Double.pi), len = rng.uniform(0.2, 0.8) * Double(size)
                let col = (0..<3).map { _ in UInt8(rng.int(below: 256)) }
                let steps = Int(len * 2)
                for s in 0..<steps {
                    let t = Double(s) / 2
                    let x = Int(x0 + t * cos(ang)), y = Int(y0 + t * sin(ang))
                    if x >= 0 && y >= 0 && x < size && y < size {
                        for c in 0..<3 { img.pixels[(y * size + x) * 3 + c] = col[c] }
                    }
                }
            }
        }
        let ss = 4
        for o in scene.objects {
            let rgb = SceneVocabulary.colors[o.color].rgb
            let col = [Double(rgb.0), Double(rgb.1), Double(rgb.2)]
            let r = o.radius * Double(size), cx = o.cx * Double(size), cy = o.cy * Double(size)
            let x0 = max(0, Int(cx - r) - 1), x1 = min(size - 1, Int(cx + r) + 1)
            let y0 = max(0, Int(cy - r) - 1), y1 = min(size - 1, Int(cy + r) + 1)
            guard x0 <= x1, y0 <= y1 else { continue }
            for y in y0...y1 {
                for x in x0...x1 {
                    var hits = 0
                    for sy in 0..<ss {
                        for sx in 0..<ss {
                            let u = (Double(x) + (Double(sx) + 0.5) / Double(ss) - cx) / r
                            let v = (Double(y) + (Double(sy) + 0.5) / Double(ss) - cy) / r
                            if inside(o.shape, u, v) { hits += 1 }
                        }
                    }
                    guard hits > 0 else { continue }
                    let a = Double(hits) / Double(ss * ss)
                    for c in 0..<3 {
                        let i = (y * size + x) * 3 + c
                        img.pixels[i] = UInt8((Double(img.pixels[i]) * (1 - a) + col[c] * a).rounded())
                    }
                }
            }
        }
        return img
    }
}
