/// Separable bicubic resampling of an RGB8 region, PIL style (`Image.resize(size, BICUBIC, box)`).
///
/// Concretely, per axis: scale = boxSize / outSize, filterScale = max(scale, 1) (antialiasing when
/// shrinking), support = 2·filterScale; output i is centred at c = box0 + (i + 0.5)·scale and takes
/// the source samples j ∈ [⌊c − support + 0.5⌋, ⌊c + support + 0.5⌋) ∩ [clipLo, clipHi) with
/// weights K((j − c + 0.5)/filterScale), normalised to sum 1, where K is the Keys cubic with
/// a = −0.5. Horizontal pass first into an 8-bit intermediate, then vertical; rounding half up,
/// clamped to [0, 255]. Differences to PIL: float weights instead of 22-bit fixed point (±1).
public struct BicubicResampler {
    struct Coefficients {
        var start: [Int] = []
        var count: [Int] = []
        var weights: [Float] = []
        var kernelSize = 0
    }
    var horizontal = Coefficients()
    var vertical = Coefficients()
    var intermediate: [UInt8] = []
    var accumulator: [Float] = []
    var floatRow: [Float] = []

    public init() {}

    @inline(__always)
    static func cubic(_ x0: Double) -> Double {
        let a = -0.5
        let x = abs(x0)
        if x < 1 { return ((a + 2) * x - (a + 3)) * x * x + 1 }
        if x < 2 { return (((x - 5) * x + 8) * x - 4) * a }
        return 0
    }

    static func compute(_ c: inout Coefficients, box0: Double, box1: Double, clipLo: Int, clipHi: Int, outSize: Int) {
        let scale = (box1 - box0) / Double(outSize)
        let filterScale = max(scale, 1)
        let support = 2 * filterScale
        let ksize = Int((support * 2).rounded(.up)) + 2
        c.kernelSize = ksize
        c.start = [Int](repeating: 0, count: outSize)
        c.count = [Int](repeating: 0, count: outSize)
        if c.weights.count < outSize * ksize { c.weights = [Float](repeating: 0, count: outSize * ksize) }
        var tmp = [Double](repeating: 0, count: ksize)
        for i in 0..<outSize {
            let center = box0 + (Double(i) + 0.5) * scale
            var lo = Int((center - support + 0.5).rounded(.down))
            var hi = Int((center + support + 0.5).rounded(.down))
            lo = max(lo, clipLo)
            hi = min(hi, clipHi)
            if hi <= lo { hi = min(lo + 1, clipHi); lo = hi - 1 }
            let n = min(hi - lo, ksize)
            var total = 0.0
            for k in 0..<n {
                let w = cubic((Double(lo + k) - center + 0.5) / filterScale)
                tmp[k] = w
                total += w
            }
            c.start[i] = lo
            c.count[i] = n
            for k in 0..<ksize { c.weights[i * ksize + k] = k < n && total != 0 ? Float(tmp[k] / total) : 0 }
        }
    }

    /// Resamples the box (x0, y0, x1, y1) of `src` (source samples clipped to the integer rectangle
    /// `clip`, i.e. crop-then-resize semantics) into `dst`, resized to `outWidth`×`outHeight`.
    public mutating func resample(_ src: RGBImage, box: (Double, Double, Double, Double),
                                  clip: (x0: Int, y0: Int, x1: Int, y1: Int),
                                  into dst: inout RGBImage, outWidth: Int, outHeight: Int) {
        BicubicResampler.compute(&horizontal, box0: box.0, box1: box.2, clipLo: clip.x0, clipHi: clip.x1, outSize: outWidth)
        BicubicResampler.compute(&vertical, box0: box.1, box1: box.3, clipLo: clip.y0, clipHi: clip.y1, outSize: outHeight)
        // Rows needed by the vertical pass.
        var rowLo = Int.max, rowHi = Int.min
        for i in 0..<outHeight {
            rowLo = min(rowLo, vertical.start[i])
            rowHi = max(rowHi, vertical.start[i] + vertical.count[i])
        }
        let rows = rowHi - rowLo
        let need = rows * outWidth * 3
        if intermediate.count < need { intermediate = [UInt8](repeating: 0, count: need) }
        dst.reshape(width: outWidth, height: outHeight)
        let srcW = src.width
        let hk = horizontal.kernelSize, vk = vertical.kernelSize
        // Horizontal pass. Each source row's clip columns are converted to Float once (plus 4
        // floats of padding), then output pixel x is Σ_k w_k · px[start_x + k] with SIMD4 loads of
        // RGB(+1 ignored lane).
        let cols = clip.x1 - clip.x0
        if floatRow.count < cols * 3 + 4 { floatRow = [Float](repeating: 0, count: cols * 3 + 4) }
        src.pixels.withUnsafeBufferPointer { sp in
            intermediate.withUnsafeMutableBufferPointer { ip in
                floatRow.withUnsafeMutableBufferPointer { fr in
                    horizontal.weights.withUnsafeBufferPointer { hw in
                        horizontal.start.withUnsafeBufferPointer { hs in
                            horizontal.count.withUnsafeBufferPointer { hc in
                                let frp = UnsafeRawPointer(fr.baseAddress!)
                                for r in 0..<rows {
                                    let srow = ((rowLo + r) * srcW + clip.x0) * 3
                                    for i in 0..<(cols * 3) { fr[i] = Float(sp[srow + i]) }
                                    let irow = r * outWidth * 3
                                    for x in 0..<outWidth {
                                        let s0 = (hs[x] - clip.x0) * 3
                                        let wb = x * hk
                                        var acc = SIMD4<Float>(repeating: 0.5)
                                        for k in 0..<hc[x] {
                                            let v = frp.loadUnaligned(fromByteOffset: (s0 + 3 * k) * 4, as: SIMD4<Float>.self)
                                            acc += hw[wb + k] * v
                                        }
                                        acc = acc.clamped(lowerBound: SIMD4(repeating: 0), upperBound: SIMD4(repeating: 255))
                                        ip[irow + x * 3] = UInt8(acc[0])
                                        ip[irow + x * 3 + 1] = UInt8(acc[1])
                                        ip[irow + x * 3 + 2] = UInt8(acc[2])
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        let rowStride = outWidth * 3
        if accumulator.count < rowStride { accumulator = [Float](repeating: 0, count: rowStride) }
        // Vertical pass, vectorised along the row: acc[x] = 0.5 + Σ_k w_k · row_k[x].
        intermediate.withUnsafeBufferPointer { ip in
            dst.pixels.withUnsafeMutableBufferPointer { dp in
                accumulator.withUnsafeMutableBufferPointer { acc in
                    vertical.weights.withUnsafeBufferPointer { vw in
                        for y in 0..<outHeight {
                            let base = (vertical.start[y] - rowLo) * rowStride
                            let n = vertical.count[y]
                            let wb = y * vk
                            let drow = y * rowStride
                            if n == 4 {
                                let w0 = vw[wb], w1 = vw[wb + 1], w2 = vw[wb + 2], w3 = vw[wb + 3]
                                let r0 = base, r1 = base + rowStride, r2 = base + 2 * rowStride, r3 = base + 3 * rowStride
                                for x in 0..<rowStride {
                                    var v: Float = 0.5 + w0 * Float(ip[r0 + x]) + w1 * Float(ip[r1 + x])
                                    v += w2 * Float(ip[r2 + x]) + w3 * Float(ip[r3 + x])
                                    dp[drow + x] = UInt8(min(max(v, 0), 255))
                                }
                                continue
                            }
                            for x in 0..<rowStride { acc[x] = 0.5 }
                            for k in 0..<n {
                                let w = vw[wb + k]
                                let row = base + k * rowStride
                                for x in 0..<rowStride { acc[x] += w * Float(ip[row + x]) }
                            }
                            for x in 0..<rowStride { dp[drow + x] = UInt8(min(max(acc[x], 0), 255)) }
                        }
                    }
                }
            }
        }
    }

    /// Resizes a whole image (`Resize((h, w), BICUBIC)`).
    public mutating func resize(_ src: RGBImage, into dst: inout RGBImage, width: Int, height: Int) {
        resample(src, box: (0, 0, Double(src.width), Double(src.height)), clip: (0, 0, src.width, src.height),
                 into: &dst, outWidth: width, outHeight: height)
    }
}

/// ⌊v⌋ clamped to [0, 255] (v already has the +0.5 rounding offset).
@inline(__always)
func clamp8(_ v: Float) -> UInt8 {
    UInt8(min(max(v, 0), 255))
}
