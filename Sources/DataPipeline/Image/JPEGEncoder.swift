import CImage

/// JPEG encoding (for the synthetic corpus).
public enum JPEGEncoder {
    /// Encodes `image` at `quality` (1–100, 4:2:0 chroma subsampling).
    public static func encode(_ image: RGBImage, quality: Int = 90) throws -> [UInt8] {
        var out: UnsafeMutablePointer<UInt8>? = nil
        var size = 0
        var err = [CChar](repeating: 0, count: 256)
        let status = image.pixels.withUnsafeBufferPointer { p in
            CImage_jpeg_encode(p.baseAddress, Int32(image.width), Int32(image.height), Int32(quality), &out, &size,
                               &err, err.count)
        }
        try imageCheck(status, source: "<encoder>", message: err)
        defer { CImage_free(out) }
        return Array(UnsafeBufferPointer(start: out, count: size))
    }
}
