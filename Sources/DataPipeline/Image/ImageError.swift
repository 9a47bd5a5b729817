import CImage

/// A failure to decode or encode an image, naming the file or sample key.
///
/// The only place that reads `CImage` status codes (`imageCheck`).
public struct ImageError: Error, CustomStringConvertible, Equatable {
    public enum Kind: String, Sendable, Codable {
        case corrupt, truncated, unsupported, bufferTooSmall, badArgument, noMemory, unknownFormat, tooLarge
    }
    public var kind: Kind
    /// File path or `shard:key` of the sample.
    public var source: String
    /// The library's message.
    public var message: String

    public init(kind: Kind, source: String, message: String) {
        self.kind = kind
        self.source = source
        self.message = message
    }

    public var description: String {
        let hint: String
        switch kind {
        case .truncated: hint = "the file is cut short (interrupted download?); re-download it or let the loader skip it"
        case .corrupt: hint = "the bytes are not a valid image; re-download it or let the loader skip it"
        case .unknownFormat: hint = "only JPEG and PNG are supported; convert the image"
        case .unsupported: hint = "convert the image to 8-bit RGB JPEG or PNG"
        case .tooLarge: hint = "its header declares more pixels than max_image_pixels allows (a decompression bomb?); resize it, or raise max_image_pixels"
        default: hint = "this is a bug in the caller"
        }
        return "image \(source): \(kind.rawValue): \(message). HINT: \(hint)"
    }
}

/// Throws an `ImageError` for a non-zero `CImage` status.
@inline(__always)
func imageCheck(_ status: Int32, source: @autoclosure () -> String, message: UnsafePointer<CChar>) throws {
    guard status != Int32(CIMAGE_OK) else { return }
    let kind: ImageError.Kind
    switch status {
    case Int32(CIMAGE_CORRUPT): kind = .corrupt
    case Int32(CIMAGE_TRUNCATED): kind = .truncated
    case Int32(CIMAGE_UNSUPPORTED): kind = .unsupported
    case Int32(CIMAGE_BUFFER_TOO_SMALL): kind = .bufferTooSmall
    case Int32(CIMAGE_BAD_ARGUMENT): kind = .badArgument
    default: kind = .noMemory
    }
    throw ImageError(kind: kind, source: source(), message: String(cString: message))
}
