import Foundation
import XCTest
@testable import DataPipeline

/// Fixtures: `Fixtures/images/*` made once by `Fixtures/images/make_images.py` (Pillow); the
/// expected pixels are in `expected.json`.
final class ImageDecodeTests: XCTestCase {
    let dir = fixturesURL().appendingPathComponent("images")

    func bytes(_ name: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: dir.appendingPathComponent(name))) }
    func expected() throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("expected.json"))) as! [String: Any]
    }

    func testPNGExactPixels() throws {
        let exp = try expected()
        for name in ["rgb4x4.png", "rgba4x4.png", "gray4x4.png", "palette4x4.png", "gray16_4x4.png"] {
            let img = try ImageDecoder.decode(bytes(name), source: name)
            XCTAssertEqual(img.width, 4, name)
            XCTAssertEqual(img.height, 4, name)
            XCTAssertEqual(Array(img.activeBytes), (exp[name] as! [Int]).map(UInt8.init), name)
            let size = try ImageDecoder.size(of: bytes(name), source: name)
            XCTAssertEqual(size.width, 4)
            XCTAssertEqual(size.format, .png)
        }
    }

    func checkBlocks(_ img: RGBImage, _ blocks: [[Int]], tolerance: Int, scale: Int, name: String) {
        let half = 16 / scale
        for y in 0..<img.height {
            for x in 0..<img.width {
                let b = blocks[(y / half) * 2 + x / half]
                // Skip the pixels next to a block edge (JPEG ringing).
                if abs(y % half - half / 2) > half / 2 - 2 || abs(x % half - half / 2) > half / 2 - 2, scale == 1 { continue }
                for c in 0..<3 {
                    let want = b.count == 1 ? b[0] : b[c]
                    XCTAssertLessThanOrEqual(abs(Int(img.at(x, y, c)) - want), tolerance, "\(name) (\(x),\(y),\(c))")
                }
            }
        }
    }

    func testJPEGFlatBlocksRGBGrayCMYK() throws {
        let exp = try expected()
        for name in ["blocks32.jpg", "blocks32_gray.jpg", "blocks32_cmyk.jpg"] {
            let spec = exp[name] as! [String: Any]
            let blocks = (spec["blocks"] as! [Any]).map { ($0 as? [Int]) ?? [$0 as! Int] }
            let img = try ImageDecoder.decode(bytes(name), source: name)
            XCTAssertEqual(img.width, 32)
            XCTAssertEqual(img.height, 32)
            checkBlocks(img, blocks, tolerance: spec["tolerance"] as! Int, scale: 1, name: name)
        }
    }

    func testJPEGMatchesPillowDecode() throws {
        let exp = try expected()
        let img = try ImageDecoder.decode(bytes("blocks32.jpg"), source: "blocks32.jpg")
        let pil = (exp["pillow_decoded_blocks32"] as! [Int])
        let ours = img.activeBytes.prefix(pil.count).map(Int.init)
        XCTAssertLessThanOrEqual(zip(ours, pil).map { abs($0 - $1) }.max()!, 2)
    }

    func testJPEGScaledDecode() throws {
        let exp = try expected()
        let blocks = (exp["blocks32.jpg"] as! [String: Any])["blocks"] as! [[Int]]
        for d in [2, 4, 8] {
            var img = RGBImage()
            try ImageDecoder.decode(bytes("blocks32.jpg"), into: &img, scaleDenominator: d, source: "b")
            XCTAssertEqual(img.width, 32 / d)
            XCTAssertEqual(img.height, 32 / d)
            checkBlocks(img, blocks, tolerance: 12, scale: d, name: "1/\(d)")
        }
    }

    func testTruncatedJPEGThrowsNamingTheFile() throws {
        let full = try bytes("blocks32.jpg")
        let cut = Array(full.prefix(full.count * 2 / 3))
        XCTAssertThrowsError(try ImageDecoder.decode(cut, source: "shard-7.tar:sample42")) { error in
            let e = error as! ImageError
            XCTAssertEqual(e.kind, .truncated)
            XCTAssertTrue("\(e)".contains("shard-7.tar:sample42"))
        }
        XCTAssertThrowsError(try ImageDecoder.decode(Array(full.prefix(20)), source: "x.jpg")) { error in
            XCTAssertTrue("\(error)".contains("x.jpg"))
        }
    }

    func testCorruptJPEGHeaderIsCorrupt() throws {
        var b = try bytes("blocks32.jpg")
        // Zero the height and width of the SOF0 frame header (FF C0 len(2) P(1) H(2) W(2)).
        let sof = try XCTUnwrap((0..<(b.count - 1)).first { b[$0] == 0xFF && b[$0 + 1] == 0xC0 })
        for i in (sof + 5)..<(sof + 9) { b[i] = 0 }
        XCTAssertThrowsError(try ImageDecoder.decode(b, source: "zero.jpg")) { error in
            XCTAssertEqual((error as! ImageError).kind, .corrupt)
            XCTAssertTrue("\(error)".contains("zero.jpg"))
        }
    }

    func testTruncatedAndGarbagePNGAndUnknownFormat() throws {
        let full = try bytes("rgb4x4.png")
        XCTAssertThrowsError(try ImageDecoder.decode(Array(full.prefix(40)), source: "a.png")) { error in
            XCTAssertEqual((error as! ImageError).kind, .truncated)
        }
        XCTAssertThrowsError(try ImageDecoder.decode(Array("hello world".utf8), source: "b.txt")) { error in
            XCTAssertEqual((error as! ImageError).kind, .unknownFormat)
            XCTAssertTrue("\(error)".contains("b.txt"))
        }
        XCTAssertThrowsError(try ImageDecoder.decode([], source: "c.jpg"))
    }

    func testEncodeDecodeRoundTrip() throws {
        var img = RGBImage(width: 24, height: 16)
        for y in 0..<16 { for x in 0..<24 { for c in 0..<3 { img.pixels[(y * 24 + x) * 3 + c] = c == 0 ? 180 : (c == 1 ? 90 : 20) } } }
        let jpg = try JPEGEncoder.encode(img, quality: 95)
        let back = try ImageDecoder.decode(jpg, source: "mem")
        XCTAssertEqual(back.width, 24)
        XCTAssertEqual(back.height, 16)
        let maxDiff = zip(back.activeBytes, img.activeBytes).map { abs(Int($0) - Int($1)) }.max()!
        XCTAssertLessThanOrEqual(maxDiff, 4)
    }
}
