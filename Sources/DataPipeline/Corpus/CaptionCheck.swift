/// Validation of raw caption bytes before tokenization.
///
/// A caption is bad when it is empty or only whitespace (`empty_caption`), is not valid UTF-8
/// (`non_utf8_caption`), or is longer than `maxBytes` (default 10 000 bytes, `overlong_caption`;
/// real alt-texts are < 1 000 bytes, anything longer is a scraping accident).
public enum CaptionCheck {
    public static let defaultMaxBytes = 10_000

    /// The caption as a String, or the reason it is bad.
    public static func validate(_ bytes: [UInt8], maxBytes: Int = defaultMaxBytes) -> Result<String, BadSampleKind> {
        if bytes.count > maxBytes { return .failure(.overlongCaption) }
        guard let s = String(validating: bytes, as: UTF8.self) else { return .failure(.nonUTF8Caption) }
        return validate(s, maxBytes: maxBytes)
    }

    /// The same for an already-decoded string.
    public static func validate(_ s: String, maxBytes: Int = defaultMaxBytes) -> Result<String, BadSampleKind> {
        if s.utf8.count > maxBytes { return .failure(.overlongCaption) }
        if !s.unicodeScalars.contains(where: { !UnicodeRules.isPythonSpace($0) }) { return .failure(.emptyCaption) }
        return .success(s)
    }
}
