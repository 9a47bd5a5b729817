import Foundation

/// The image operations of ALBEF's `RandomAugment` (`dataset/randaugment.py`), on RGB8 HWC images,
/// with the level-7 magnitudes of ALBEF-SPEC §5.3. Geometric ops fill with (128, 128, 128).
public enum AugmentOps {
    /// Applies a 256-entry lookup table per channel.
    static func applyLUT(_ image: inout RGBImage, _ luts: [[UInt8]]) {
        let n = image.width * image.height
        image.pixels.withUnsafeMutableBufferPointer { p in
            for i in 0..<n {
                p[3 * i] = luts[0][Int(p[3 * i])]
                p[3 * i + 1] = luts[1][Int(p[3 * i + 1])]
                p[3 * i + 2] = luts[2][Int(p[3 * i + 2])]
            }
        }
    }

    static func histograms(_ image: RGBImage) -> [[Int]] {
        var flat = [Int](repeating: 0, count: 768)
        let n = image.width * image.height
        image.pixels.withUnsafeBufferPointer { p in
            flat.withUnsafeMutableBufferPointer { h in
                for i in 0..<n {
                    h[Int(p[3 * i])] += 1
                    h[256 + Int(p[3 * i + 1])] += 1
                    h[512 + Int(p[3 * i + 2])] += 1
                }
            }
        }
        return [Array(flat[0..<256]), Array(flat[256..<512]), Array(flat[512..<768])]
    }

    /// AutoContrast, per channel: lo = min, hi = max; identity if hi ≤ lo, else
    /// LUT(x) = trunc(clip(x·255/(hi−lo) − lo·255/(hi−lo), 0, 255)).
    public static func autoContrast(_ image: inout RGBImage) {
        let hist = histograms(image)
        var luts: [[UInt8]] = []
        for c in 0..<3 {
            guard let lo = hist[c].firstIndex(where: { $0 > 0 }), let hi = hist[c].lastIndex(where: { $0 > 0 }), hi > lo else {
                luts.append((0..<256).map { UInt8($0) })
                continue
            }
            let scale = 255.0 / Double(hi - lo), offset = -Double(lo) * scale
            luts.append((0..<256).map { UInt8(min(255, max(0, Double($0) * scale + offset))) })
        }
        applyLUT(&image, luts)
    }

    /// Equalize, per channel (PIL's): step = ⌊(Σ non-zero bins except the last non-zero one)/255⌋;
    /// identity if step = 0; else LUT = clip(⌊cumsum([⌊step/2⌋, h₀ … h₂₅₄]) / step⌋, 0, 255).
    public static func equalize(_ image: inout RGBImage) {
        let hist = histograms(image)
        var luts: [[UInt8]] = []
        for c in 0..<3 {
            let nonZero = hist[c].filter { $0 != 0 }
            let step = nonZero.dropLast().reduce(0, +) / 255
            guard step > 0 else { luts.append((0..<256).map { UInt8($0) }); continue }
            var lut = [UInt8](repeating: 0, count: 256)
            var acc = step / 2
            for v in 0..<256 {
                lut[v] = UInt8(min(255, acc / step))
                acc += hist[c][v]
            }
            luts.append(lut)
        }
        applyLUT(&image, luts)
    }

    /// Brightness with factor f (1.36 at level 7): LUT(x) = trunc(clip(x·f, 0, 255)).
    public static func brightness(_ image: inout RGBImage, factor: Double = 1.36) {
        let lut = (0..<256).map { UInt8(min(255, max(0, Double($0) * factor))) }
        applyLUT(&image, [lut, lut, lut])
    }

    /// Sharpness with factor f (1.36): blur = round(3×3 [[1,1,1],[1,5,1],[1,1,1]]/13), interior
    /// pixels out = trunc(clip(blur + f·(x − blur), 0, 255)) in Float32; the 1-pixel border is kept.
    /// (The reference casts without clipping, which is platform-defined; we clip.)
    public static func sharpness(_ image: inout RGBImage, factor: Float = 1.36, scratch: inout [UInt8]) {
        let w = image.width, h = image.height
        guard w >= 3 && h >= 3 else { return }
        let n = w * h * 3
        if scratch.count < n { scratch = [UInt8](repeating: 0, count: n) }
        image.pixels.withUnsafeBufferPointer { p in
            scratch.withUnsafeMutableBufferPointer { s in
                for i in 0..<n { s[i] = p[i] }
            }
        }
        scratch.withUnsafeBufferPointer { s in
            image.pixels.withUnsafeMutableBufferPointer { p in
                let stride = w * 3
                for y in 1..<(h - 1) {
                    for x in 1..<(w - 1) {
                        for c in 0..<3 {
                            let i = y * stride + x * 3 + c
                            var sum = Int(s[i]) * 5
                            sum += Int(s[i - stride - 3]) + Int(s[i - stride]) + Int(s[i - stride + 3])
                            sum += Int(s[i - 3]) + Int(s[i + 3])
                            sum += Int(s[i + stride - 3]) + Int(s[i + stride]) + Int(s[i + stride + 3])
                            let blur = (Float(sum) / 13).rounded(.toNearestOrEven)
                            let v = blur + factor * (Float(s[i]) - blur)
                            p[i] = v <= 0 ? 0 : (v >= 255 ? 255 : UInt8(v))
                        }
                    }
                }
            }
        }
    }

    /// A 2×3 affine map [[a, b, c], [d, e, f]].
    public struct Affine: Equatable, Sendable {
        public var a, b, c, d, e, f: Double
        public init(_ a: Double, _ b: Double, _ c: Double, _ d: Double, _ e: Double, _ f: Double) {
            self.a = a; self.b = b; self.c = c; self.d = d; self.e = e; self.f = f
        }
        /// The inverse map.
        public var inverted: Affine {
            let det = a * e - b * d
            let ia = e / det, ib = -b / det, id = -d / det, ie = a / det
            return Affine(ia, ib, -(ia * c + ib * f), id, ie, -(id * c + ie * f))
        }
        public static func shearX(_ s: Double) -> Affine { Affine(1, s, 0, 0, 1, 0) }
        public static func shearY(_ s: Double) -> Affine { Affine(1, 0, 0, s, 1, 0) }
        public static func translateX(_ d: Double) -> Affine { Affine(1, 0, -d, 0, 1, 0) }
        public static func translateY(_ d: Double) -> Affine { Affine(1, 0, 0, 0, 1, -d) }
        /// cv2.getRotationMatrix2D((cx, cy), degrees, 1): positive = counter-clockwise on screen.
        public static func rotation(degrees: Double, cx: Double, cy: Double) -> Affine {
            let t = degrees * Double.pi / 180, al = cos(t), be = sin(t)
            return Affine(al, be, (1 - al) * cx - be * cy, -be, al, be * cx + (1 - al) * cy)
        }
    }

    /// Bilinear weights of cv2 (`initInterTab2D`): for the 32×32 sub-pixel grid, the four products
    /// of (1 − fx, fx) × (1 − fy, fy) in 15-bit fixed point, adjusted so each set sums to 32768.
    static let bilinearTable: [Int32] = {
        var t = [Int32](repeating: 0, count: 32 * 32 * 4)
        for iy in 0..<32 {
            for ix in 0..<32 {
                let fx = Float(ix) / 32, fy = Float(iy) / 32
                let f: [Float] = [(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx]
                var w = f.map { Int32(($0 * 32768).rounded()) }
                let sum = w.reduce(0, +)
                if sum != 32768 {
                    let k = f.indices.max { f[$0] < f[$1] }!
                    w[k] += 32768 - sum
                }
                for k in 0..<4 { t[(iy * 32 + ix) * 4 + k] = w[k] }
            }
        }
        return t
    }()

    /// cv2.warpAffine(img, M, (W, H), flags=INTER_LINEAR, borderValue=fill) with a forward matrix M:
    /// dst(x, y) = bilinear src(M⁻¹ (x, y)), pixel centres at integer coordinates, source taps outside
    /// the image read `fill`. As cv2: the source position is computed in 10-bit fixed point and
    /// quantised to 1/32 pixel, the weights are 15-bit fixed point and the sum is rounded
    /// ((Σ + 2¹⁴) >> 15).
    public static func warpAffine(_ src: RGBImage, _ forward: Affine, fill: UInt8 = 128, into dst: inout RGBImage) {
        let w = src.width, h = src.height
        dst.reshape(width: w, height: h)
        let m = forward.inverted
        let fillI = Int32(fill)
        let abScale = 1024.0
        let ax = (0..<w).map { Int((m.a * Double($0) * abScale).rounded()) }
        let dx = (0..<w).map { Int((m.d * Double($0) * abScale).rounded()) }
        let roundDelta = 16  // 1 << (AB_BITS − INTER_BITS − 1)
        bilinearTable.withUnsafeBufferPointer { tab in
            src.pixels.withUnsafeBufferPointer { sp in
                dst.pixels.withUnsafeMutableBufferPointer { dp in
                    for y in 0..<h {
                        let x0f = Int(((m.b * Double(y) + m.c) * abScale).rounded()) + roundDelta
                        let y0f = Int(((m.e * Double(y) + m.f) * abScale).rounded()) + roundDelta
                        for x in 0..<w {
                            let X = (ax[x] + x0f) >> 5, Y = (dx[x] + y0f) >> 5
                            let x0 = X >> 5, y0 = Y >> 5
                            let t = ((Y & 31) * 32 + (X & 31)) * 4
                            let w00 = tab[t], w01 = tab[t + 1], w10 = tab[t + 2], w11 = tab[t + 3]
                            let o = (y * w + x) * 3
                            if x0 >= 0 && y0 >= 0 && x0 + 1 < w && y0 + 1 < h && (y0 + 1) * w + x0 + 2 < w * h {
                                // 4-byte loads (RGB + one ignored byte; in bounds by the last condition).
                                let p00 = (y0 * w + x0) * 3, p10 = p00 + w * 3
                                let raw = UnsafeRawPointer(sp.baseAddress!)
                                let a = SIMD4<Int32>(truncatingIfNeeded: raw.loadUnaligned(fromByteOffset: p00, as: SIMD4<UInt8>.self))
                                let b = SIMD4<Int32>(truncatingIfNeeded: raw.loadUnaligned(fromByteOffset: p00 + 3, as: SIMD4<UInt8>.self))
                                let c = SIMD4<Int32>(truncatingIfNeeded: raw.loadUnaligned(fromByteOffset: p10, as: SIMD4<UInt8>.self))
                                let d = SIMD4<Int32>(truncatingIfNeeded: raw.loadUnaligned(fromByteOffset: p10 + 3, as: SIMD4<UInt8>.self))
                                var v = a &* w00 &+ b &* w01 &+ c &* w10 &+ d &* w11
                                v = (v &+ 16384) &>> 15
                                dp[o] = UInt8(truncatingIfNeeded: v[0])
                                dp[o + 1] = UInt8(truncatingIfNeeded: v[1])
                                dp[o + 2] = UInt8(truncatingIfNeeded: v[2])
                            } else if x0 < -1 || y0 < -1 || x0 >= w || y0 >= h {
                                dp[o] = fill; dp[o + 1] = fill; dp[o + 2] = fill
                            } else {
                                for c in 0..<3 {
                                    @inline(__always) func tap(_ xx: Int, _ yy: Int) -> Int32 {
                                        xx >= 0 && yy >= 0 && xx < w && yy < h ? Int32(sp[(yy * w + xx) * 3 + c]) : fillI
                                    }
                                    let v = tap(x0, y0) * w00 + tap(x0 + 1, y0) * w01 + tap(x0, y0 + 1) * w10 + tap(x0 + 1, y0 + 1) * w11
                                    dp[o + c] = UInt8(clamping: (v + 16384) >> 15)
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
