import CImage
import Foundation

/// Decodes JPEG and PNG bytes into a reusable `RGBImage` (PIL `Image.open(...).convert("RGB")`).
///
/// JPEGs can be decoded at 1/2, 1/4 or 1/8 size (libjpeg DCT scaling), which is much faster when
/// the crop that follows only needs a fraction of the pixels.
public enum ImageFormat: String, Sendable { case jpeg, png }

public enum ImageDecoder {
    /// Pillow's `Image.MAX_IMAGE_PIXELS` (1024·1024·1024 / 4 / 3): the default pixel limit.
    public static let defaultMaxPixels = 89_478_485

    /// Throws `.tooLarge` when a `width × height` header exceeds `maxPixels` (checked before any
    /// pixel buffer is allocated, so a small file declaring a huge image costs nothing).
    static func checkPixels(_ w: Int32, _ h: Int32, maxPixels: Int, source: String) throws {
        let n = Int(w) * Int(h)
        guard n <= maxPixels else {
            throw ImageError(kind: .tooLarge, source: source, message: "\(w)×\(h) = \(n) pixels > the limit \(maxPixels)")
        }
    }

    /// Format from the magic bytes, or nil.
    public static func format(of data: UnsafeRawBufferPointer) -> ImageFormat? {
        let p = data.bindMemory(to: UInt8.self)
        guard let base = p.baseAddress else { return nil }
        if CImage_is_jpeg(base, p.count) != 0 { return .jpeg }
        if CImage_is_png(base, p.count) != 0 { return .png }
        return nil
    }

    /// Full-size width and height, reading only the header.
    public static func size(of data: [UInt8], source: String) throws -> (width: Int, height: Int, format: ImageFormat) {
        try data.withUnsafeBytes { raw in
            guard let fmt = format(of: raw) else {
                throw ImageError(kind: data.isEmpty ? .truncated : .unknownFormat, source: source,
                                 message: data.isEmpty ? "empty file" : "no JPEG/PNG signature")
            }
            let p = raw.bindMemory(to: UInt8.self)
            var w: Int32 = 0, h: Int32 = 0, comps: Int32 = 0
            var err = [CChar](repeating: 0, count: 256)
            let status = fmt == .jpeg
                ? CImage_jpeg_header(p.baseAddress, p.count, &w, &h, &comps, &err, err.count)
                : CImage_png_header(p.baseAddress, p.count, &w, &h, &err, err.count)
            try imageCheck(status, source: source, message: err)
            return (Int(w), Int(h), fmt)
        }
    }

    /// Decodes into `image` (buffer reused). `scaleDenominator` ∈ {1, 2, 4, 8} applies to JPEGs only
    /// (output size ⌈w/d⌉ × ⌈h/d⌉); PNGs always decode at full size.
    /// Images whose header declares more than `maxPixels` (full size) are refused (`.tooLarge`).
    public static func decode(_ data: [UInt8], into image: inout RGBImage, scaleDenominator: Int = 1,
                              maxPixels: Int = defaultMaxPixels, source: String) throws {
        try data.withUnsafeBytes { raw in
            guard let fmt = format(of: raw) else {
                throw ImageError(kind: data.isEmpty ? .truncated : .unknownFormat, source: source,
                                 message: data.isEmpty ? "empty file" : "no JPEG/PNG signature")
            }
            let p = raw.bindMemory(to: UInt8.self)
            var w: Int32 = 0, h: Int32 = 0, comps: Int32 = 0
            var err = [CChar](repeating: 0, count: 256)
            switch fmt {
            case .jpeg:
                try imageCheck(CImage_jpeg_header(p.baseAddress, p.count, &w, &h, &comps, &err, err.count), source: source, message: err)
                try checkPixels(w, h, maxPixels: maxPixels, source: source)
                let d = Int32(scaleDenominator)
                try imageCheck(CImage_jpeg_scaled_size(p.baseAddress, p.count, d, &w, &h, &err, err.count),
                               source: source, message: err)
                image.reshape(width: Int(w), height: Int(h))
                let status = image.pixels.withUnsafeMutableBufferPointer { out in
                    CImage_jpeg_decode(p.baseAddress, p.count, d, out.baseAddress, out.count, &w, &h, &err, err.count)
                }
                try imageCheck(status, source: source, message: err)
                _ = comps
            case .png:
                try imageCheck(CImage_png_header(p.baseAddress, p.count, &w, &h, &err, err.count),
                               source: source, message: err)
                try checkPixels(w, h, maxPixels: maxPixels, source: source)
                image.reshape(width: Int(w), height: Int(h))
                let status = image.pixels.withUnsafeMutableBufferPointer { out in
                    CImage_png_decode(p.baseAddress, p.count, out.baseAddress, out.count, &w, &h, &err, err.count)
                }
                try imageCheck(status, source: source, message: err)
            }
        }
    }

    /// Decodes into a new image.
    public static func decode(_ data: [UInt8], scaleDenominator: Int = 1, source: String) throws -> RGBImage {
        var image = RGBImage()
        try decode(data, into: &image, scaleDenominator: scaleDenominator, source: source)
        return image
    }

    /// Reads and decodes a file; a missing or unreadable file throws an `ImageError` naming it.
    public static func decode(file url: URL) throws -> RGBImage {
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw ImageError(kind: .corrupt, source: url.path, message: "cannot read the file (missing?)")
        }
        return try decode([UInt8](data), source: url.path)
    }
}
