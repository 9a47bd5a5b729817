/// An 8-bit RGB image, row-major HWC: pixel (x, y) channel c is `pixels[(y * width + x) * 3 + c]`.
///
/// `pixels` may be longer than `width * height * 3`: buffers are reused between samples and only
/// grow, so decoding a stream of images allocates nothing once the largest one has been seen.
public struct RGBImage: Sendable, Equatable {
    public var width: Int
    public var height: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(pixels.count >= width * height * 3, "RGBImage: \(pixels.count) bytes < \(width)x\(height)x3")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// A `width`×`height` image filled with `fill`.
    public init(width: Int, height: Int, fill: UInt8 = 0) {
        self.width = width
        self.height = height
        pixels = [UInt8](repeating: fill, count: width * height * 3)
    }

    public init() { self.init(width: 0, height: 0) }

    /// Sets the size, growing the buffer if needed (contents unspecified afterwards).
    public mutating func reshape(width: Int, height: Int) {
        self.width = width
        self.height = height
        let need = width * height * 3
        if pixels.count < need { pixels.append(contentsOf: repeatElement(0, count: need - pixels.count)) }
    }

    /// Channel `c` of pixel (x, y).
    @inline(__always)
    public func at(_ x: Int, _ y: Int, _ c: Int) -> UInt8 { pixels[(y * width + x) * 3 + c] }

    /// The active bytes only (for comparisons).
    public var activeBytes: ArraySlice<UInt8> { pixels[0..<(width * height * 3)] }

    public static func == (a: RGBImage, b: RGBImage) -> Bool {
        a.width == b.width && a.height == b.height && a.activeBytes == b.activeBytes
    }
}
