import Foundation
import XCTest
import Tensor
@testable import DataPipeline

/// Hand-computed pixels on tiny images for every op (the arithmetic is in the comments).
final class ImageTransformTests: XCTestCase {
    func image(_ w: Int, _ h: Int, _ f: (Int, Int, Int) -> Int) -> RGBImage {
        var img = RGBImage(width: w, height: h)
        for y in 0..<h { for x in 0..<w { for c in 0..<3 { img.pixels[(y * w + x) * 3 + c] = UInt8(f(x, y, c)) } } }
        return img
    }

    func testRRCBoxRuleReplaysTorchvisionDraws() {
        var rng = RandomGenerator(seed: 3)
        for _ in 0..<200 {
            var replay = rng
            let box = RandomResizedCrop.box(width: 64, height: 48, rng: &rng)
            // Independent replay of get_params: the first attempt that fits wins.
            var expected: CropBox? = nil
            for _ in 0..<10 where expected == nil {
                let t = 64.0 * 48.0 * replay.uniform(0.2, 1.0)
                let r = exp(replay.uniform(log(3.0 / 4.0), log(4.0 / 3.0)))
                let w = Int((t * r).squareRoot().rounded(.toNearestOrEven)), h = Int((t / r).squareRoot().rounded(.toNearestOrEven))
                if w > 0, h > 0, w <= 64, h <= 48 {
                    let y = replay.int(below: 48 - h + 1), x = replay.int(below: 64 - w + 1)
                    expected = CropBox(x: x, y: y, width: w, height: h)
                }
            }
            XCTAssertEqual(box, expected)
            XCTAssertEqual(rng, replay)
            XCTAssertGreaterThanOrEqual(Double(box.width * box.height), 0.2 * 64 * 48 * 0.9)
        }
    }

    func testRRCFallbackCentreCrop() {
        var rng = RandomGenerator(seed: 1)
        // 100×1: every attempt needs h ≥ 4 > 1, so the fallback clamps the ratio to 4/3: h = 1, w = round(4/3) = 1.
        XCTAssertEqual(RandomResizedCrop.box(width: 100, height: 1, rng: &rng), CropBox(x: 49, y: 0, width: 1, height: 1))
        // 1×30: ratio 1/30 < 3/4: w = 1, h = round(1 / 0.75) = 1, y = (30 − 1)/2 = 14.
        XCTAssertEqual(RandomResizedCrop.box(width: 1, height: 30, rng: &rng), CropBox(x: 0, y: 14, width: 1, height: 1))
        XCTAssertEqual(RandomResizedCrop.fallback(width: 40, height: 40, ratio: (0.75, 4.0 / 3.0)), CropBox(x: 0, y: 0, width: 40, height: 40))
        XCTAssertEqual(RandomResizedCrop.jpegScaleDenominator(crop: CropBox(x: 0, y: 0, width: 600, height: 520), outSize: 256), 2)
        XCTAssertEqual(RandomResizedCrop.jpegScaleDenominator(crop: CropBox(x: 0, y: 0, width: 2100, height: 2100), outSize: 256), 8)
    }

    func testFlip() {
        var img = image(3, 2) { x, y, c in x * 10 + y * 100 + c }
        flipHorizontally(&img)
        XCTAssertEqual(img.at(0, 0, 0), 20)
        XCTAssertEqual(img.at(1, 0, 1), 11)
        XCTAssertEqual(img.at(2, 1, 2), 102)
    }

    func testBicubicResize() {
        var r = BicubicResampler()
        // Same size: weights K(0) = 1, K(±1) = K(±2) = 0 → identity.
        let src = image(5, 4) { x, y, c in (x * 37 + y * 11 + c * 5) % 256 }
        var dst = RGBImage()
        r.resize(src, into: &dst, width: 5, height: 4)
        XCTAssertEqual(dst, src)
        // 4×1 [0, 100, 200, 100] → 2×1. Output 0: centre 1.0, filter scale 2, taps j = 0…3 at
        // (j − 0.5)/2 = −0.25, 0.25, 0.75, 1.25 → K = 0.8671875, 0.8671875, 0.2265625, −0.0703125,
        // sum 1.890625: (86.71875 + 45.3125 − 7.03125)/1.890625 = 66.1 → 66.
        // Output 1: centre 3.0, taps j = 0…3 at −1.25, −0.75, −0.25, 0.25 → (−0 + 22.65625 + 173.4375 + 86.71875)/1.890625 = 149.6 → 150.
        let row = image(4, 1) { x, _, _ in [0, 100, 200, 100][x] }
        r.resize(row, into: &dst, width: 2, height: 1)
        XCTAssertEqual(dst.at(0, 0, 0), 66)
        XCTAssertEqual(dst.at(1, 0, 2), 150)
        // Flat stays flat under any scale.
        let flat = image(9, 7) { _, _, c in 40 + c }
        r.resize(flat, into: &dst, width: 4, height: 11)
        XCTAssertTrue((0..<44).allSatisfy { dst.at($0 % 4, $0 / 4, 1) == 41 })
    }

    func testBrightnessAutoContrastEqualize() {
        var img = image(3, 1) { x, _, c in c == 0 ? [7, 100, 200][x] : [50, 100, 150][x] }
        var b = img
        AugmentOps.brightness(&b)  // ×1.36: 7 → 9.52 → 9; 100 → 136; 200 → 272 → 255.
        XCTAssertEqual([b.at(0, 0, 0), b.at(1, 0, 0), b.at(2, 0, 0)], [9, 136, 255])
        AugmentOps.autoContrast(&img)  // G: lo 50, hi 150: scale 2.55: 50 → 0, 100 → 127.5 → 127, 150 → 255.
        XCTAssertEqual([img.at(0, 0, 1), img.at(1, 0, 1), img.at(2, 0, 1)], [0, 127, 255])
        // Equalize on 32×32: 512 px of 10, 256 of 20, 256 of 30: step = ⌊(512 + 256)/255⌋ = 3;
        // LUT(v) = ⌊(1 + Σ_{u<v} h_u)/3⌋: 10 → 0, 20 → 513/3 = 171, 30 → 769/3 = 256 → 255.
        var eq = image(32, 32) { x, y, _ in let i = y * 32 + x; return i < 512 ? 10 : (i < 768 ? 20 : 30) }
        AugmentOps.equalize(&eq)
        XCTAssertEqual([eq.at(0, 0, 0), eq.at(0, 16, 1), eq.at(0, 31, 2)], [0, 171, 255])
        // Too few pixels: step = 0 → identity.
        var small = image(2, 2) { x, _, _ in x * 50 }
        let before = small
        AugmentOps.equalize(&small)
        XCTAssertEqual(small, before)
    }

    func testSharpness() {
        // Centre 100, neighbours 10: blur = round((5·100 + 8·10)/13 = 44.6) = 45;
        // 45 + 1.36·(100 − 45) = 119.8 → 119. The border is untouched.
        var img = image(3, 3) { x, y, _ in x == 1 && y == 1 ? 100 : 10 }
        var scratch: [UInt8] = []
        AugmentOps.sharpness(&img, scratch: &scratch)
        XCTAssertEqual(img.at(1, 1, 0), 119)
        XCTAssertEqual(img.at(0, 0, 0), 10)
        XCTAssertEqual(img.at(2, 1, 2), 10)
    }

    func testTranslateAndShear() {
        var ra = RandAugment()
        let ramp = image(10, 3) { x, _, _ in x * 10 }
        var t = ramp
        ra.apply(.translateX, negate: false, to: &t)  // M = [[1,0,−7]]: dst(x) = src(x + 7).
        XCTAssertEqual((0..<10).map { t.at($0, 1, 0) }, [70, 80, 90, 128, 128, 128, 128, 128, 128, 128])
        t = ramp
        ra.apply(.translateX, negate: true, to: &t)  // dst(x) = src(x − 7).
        XCTAssertEqual((0..<10).map { t.at($0, 0, 2) }, [128, 128, 128, 128, 128, 128, 128, 0, 10, 20])
        t = ramp
        ra.apply(.translateY, negate: false, to: &t)  // 3 rows, shifted up by 7: all fill.
        XCTAssertEqual(t.at(4, 0, 0), 128)
        // ShearX s = 0.21: dst(x, y) = src(x − 0.21·y, y). Row 0 unchanged; row 1: x − 0.21 → 1/32
        // grid: −6.72/32 → −7/32 = −0.21875, so x0 = x − 1, fx = 0.78125:
        // x = 0: 128 + 0.78125·(0 − 128) = 28; x ≥ 1: 10x − 2.1875 → 10x − 2.
        var s = ramp
        ra.apply(.shearX, negate: false, to: &s)
        XCTAssertEqual((0..<10).map { s.at($0, 0, 0) }, (0..<10).map { UInt8($0 * 10) })
        XCTAssertEqual((0..<4).map { s.at($0, 1, 0) }, [28, 8, 18, 28])
    }

    func testRotation() {
        // 90° about (2, 2) on 4×4: M = [[0, 1, 0], [−1, 0, 4]], so dst(x, y) = src(4 − y, x).
        let src = image(4, 4) { x, y, _ in x + 4 * y }
        var dst = RGBImage()
        AugmentOps.warpAffine(src, .rotation(degrees: 90, cx: 2, cy: 2), into: &dst)
        XCTAssertEqual(dst.at(0, 1, 0), src.at(3, 0, 0))  // top-right corner moves to the left: counter-clockwise.
        XCTAssertEqual(dst.at(2, 3, 0), src.at(1, 2, 0))
        XCTAssertEqual(dst.at(0, 0, 0), 128)  // src(4, 0) is outside.
        // The level-7 op on a flat image keeps the centre and fills a corner.
        var ra = RandAugment()
        var flat = image(16, 16) { _, _, _ in 30 }
        ra.apply(.rotate, negate: false, to: &flat)
        XCTAssertEqual(flat.at(8, 8, 0), 30)
        XCTAssertEqual(flat.at(0, 0, 0), 128)
    }

    func testRandAugmentDrawOrder() {
        var rng = RandomGenerator(seed: 99)
        var ra = RandAugment()
        for _ in 0..<50 {
            var replay = rng
            var img = image(8, 8) { x, y, c in (x * 31 + y * 7 + c) % 256 }
            let applied = ra(&img, rng: &rng)
            let ops = (0..<2).map { _ in RandAugment.Op.allCases[replay.int(below: 10)] }
            var expected: [String] = []
            for op in ops {
                if replay.nextDouble() > 0.5 { continue }
                var neg = false
                if [.shearX, .shearY, .translateX, .translateY, .rotate].contains(op) {
                    let u = replay.nextDouble()
                    neg = op == .rotate ? u < 0.5 : u > 0.5
                }
                expected.append("\(op)\(neg)")
            }
            XCTAssertEqual(applied.map { "\($0.0)\($0.1)" }, expected)
            XCTAssertEqual(rng, replay)
        }
    }

    func testNormalizeCHW() {
        let img = image(2, 1) { x, _, c in x == 0 ? [255, 0, 128][c] : 0 }
        var out = [Float](repeating: 0, count: 6)
        out.withUnsafeMutableBufferPointer { Normalization.clip.write(img, to: $0) }
        XCTAssertEqual(out[0], (1 - 0.48145466) / 0.26862954, accuracy: 1e-5)       // R of pixel 0
        XCTAssertEqual(out[2], (0 - 0.4578275) / 0.26130258, accuracy: 1e-5)        // G plane starts at 2
        XCTAssertEqual(out[4], (128.0 / 255 - 0.40821073) / 0.27577711, accuracy: 1e-5)
        XCTAssertEqual(out[5], -0.40821073 / 0.27577711, accuracy: 1e-5)
    }

    func testPretrainAndEvalPipelines() throws {
        let jpg = try JPEGEncoder.encode(image(80, 60) { x, y, c in (x * 3 + y * 2 + c * 40) % 256 })
        var t = ImageTransform(mode: .pretrain, imageSize: 32)
        var rng = RandomGenerator(seed: 4)
        var out = [Float](repeating: .nan, count: 3 * 32 * 32)
        try out.withUnsafeMutableBufferPointer { try t.run(jpg, source: "mem", rng: &rng, into: $0) }
        XCTAssertTrue(out.allSatisfy { $0.isFinite && abs($0) < 3 })
        // Same seed → same output.
        var rng2 = RandomGenerator(seed: 4)
        var out2 = [Float](repeating: 0, count: 3 * 32 * 32)
        try out2.withUnsafeMutableBufferPointer { try t.run(jpg, source: "mem", rng: &rng2, into: $0) }
        XCTAssertEqual(out, out2)
        var e = ImageTransform(mode: .eval, imageSize: 16)
        try e.transformToRGB(jpg, source: "mem", rng: &rng)
        XCTAssertEqual(e.lastImage.width, 16)
        // Scaled decode: a 640×480 JPEG with a full-image crop decodes at 1/2 for 256 px... here 1/8 for 32 px.
        let big = try JPEGEncoder.encode(image(640, 480) { _, _, c in 60 + c * 50 })
        var tb = ImageTransform(mode: .pretrain, imageSize: 32)
        tb.useRandAugment = false
        try tb.transformToRGB(big, source: "big", rng: &rng)
        XCTAssertLessThanOrEqual(abs(Int(tb.lastImage.at(16, 16, 1)) - 110), 3)
        XCTAssertThrowsError(try tb.transformToRGB(Array(big.prefix(300)), source: "big-cut", rng: &rng)) {
            XCTAssertTrue("\($0)".contains("big-cut"))
        }
    }
}
