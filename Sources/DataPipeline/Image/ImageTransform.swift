import Tensor

/// The per-sample image pipelines, with reusable buffers (one instance per worker thread).
///
/// Pretraining (`create_dataset('pretrain')`): RandomResizedCrop(res, scale (0.2, 1), ratio (3/4, 4/3),
/// bicubic) → RandomHorizontalFlip(0.5) → RandAugment(2, 7) → ToTensor → Normalize(CLIP).
/// Eval: Resize((res, res), bicubic) → ToTensor → Normalize(CLIP).
/// Random draws, in order: crop box, flip (one uniform), RandAugment.
public struct ImageTransform {
    public enum Mode: String, Sendable { case pretrain, eval }
    public var mode: Mode
    public var imageSize: Int
    public var scale: (Double, Double) = (0.2, 1.0)
    public var ratio: (Double, Double) = (3.0 / 4.0, 4.0 / 3.0)
    public var flipProbability = 0.5
    public var randAugment = RandAugment()
    public var useRandAugment = true
    public var normalization = Normalization.clip
    /// Decode JPEGs at 1/2, 1/4, 1/8 when the crop still covers `imageSize` (faster; on by default).
    public var allowScaledDecode = true
    /// Images declaring more pixels than this (in their header) are refused before decoding.
    public var maxPixels = ImageDecoder.defaultMaxPixels

    /// Whether the last pretrain transform flipped the image.
    public private(set) var lastFlipped = false
    var decoded = RGBImage()
    var resized = RGBImage()
    var resampler = BicubicResampler()

    public init(mode: Mode, imageSize: Int) {
        self.mode = mode
        self.imageSize = imageSize
    }

    /// Decodes `bytes`, transforms, and writes (3, imageSize, imageSize) floats into `out`.
    /// Throws `ImageError` naming `source` for undecodable bytes.
    public mutating func run(_ bytes: [UInt8], source: String, rng: inout RandomGenerator,
                             into out: UnsafeMutableBufferPointer<Float>) throws {
        try transformToRGB(bytes, source: source, rng: &rng)
        normalization.write(resized, to: out)
    }

    /// Everything but the normalization; the result is `lastImage`.
    public mutating func transformToRGB(_ bytes: [UInt8], source: String, rng: inout RandomGenerator) throws {
        lastFlipped = false
        switch mode {
        case .eval:
            try ImageDecoder.decode(bytes, into: &decoded, maxPixels: maxPixels, source: source)
            resampler.resize(decoded, into: &resized, width: imageSize, height: imageSize)
        case .pretrain:
            let header = try ImageDecoder.size(of: bytes, source: source)
            try ImageDecoder.checkPixels(Int32(clamping: header.width), Int32(clamping: header.height), maxPixels: maxPixels, source: source)
            let crop = RandomResizedCrop.box(width: header.width, height: header.height, scale: scale, ratio: ratio, rng: &rng)
            var d = 1
            if allowScaledDecode && header.format == .jpeg {
                d = RandomResizedCrop.jpegScaleDenominator(crop: crop, outSize: imageSize)
            }
            try ImageDecoder.decode(bytes, into: &decoded, scaleDenominator: d, maxPixels: maxPixels, source: source)
            let fd = Double(d)
            let box = (Double(crop.x) / fd, Double(crop.y) / fd, Double(crop.x + crop.width) / fd,
                       Double(crop.y + crop.height) / fd)
            let clip = (x0: min(decoded.width - 1, crop.x / d), y0: min(decoded.height - 1, crop.y / d),
                        x1: min(decoded.width, (crop.x + crop.width + d - 1) / d),
                        y1: min(decoded.height, (crop.y + crop.height + d - 1) / d))
            resampler.resample(decoded, box: box, clip: clip, into: &resized, outWidth: imageSize, outHeight: imageSize)
            lastFlipped = rng.nextDouble() < flipProbability
            if lastFlipped { flipHorizontally(&resized) }
            if useRandAugment { randAugment(&resized, rng: &rng) }
        }
    }

    /// The RGB result of the last `transformToRGB`.
    public var lastImage: RGBImage { resized }
}
