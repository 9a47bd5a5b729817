import Foundation

/// BERT's basic tokenizer with `do_lower_case=True`, `tokenize_chinese_chars=True`, accents stripped.
///
/// Mirrors `transformers` 4.8.1 `BasicTokenizer.tokenize`:
/// 1. delete U+0000, U+FFFD and category C* (except tab/LF/CR); tab/LF/CR/Zs → space;
/// 2. spaces around CJK ideographs;
/// 3. split on Python whitespace;
/// 4. per word: `str.lower()`, NFD, drop `Mn`, split off every punctuation scalar;
/// 5. split the result on whitespace again.
/// The output words are scalar arrays.
public enum BasicTokenizer {
    /// Basic tokens of `text` (already pre-captioned or raw).
    public static func tokenize(_ text: [Unicode.Scalar]) -> [[Unicode.Scalar]] {
        // transformers: `if not text.strip(): return []` (str.strip whitespace = isspace).
        guard text.contains(where: { !UnicodeRules.isPythonSpace($0) }) else { return [] }
        var cleaned: [Unicode.Scalar] = []
        cleaned.reserveCapacity(text.count + 8)
        for s in text {
            if s.value == 0 || s.value == 0xFFFD || UnicodeRules.isBertControl(s) { continue }
            if UnicodeRules.isBertWhitespace(s) {
                cleaned.append(" ")
            } else if UnicodeRules.isCJKIdeograph(s) {
                cleaned.append(" ")
                cleaned.append(s)
                cleaned.append(" ")
            } else {
                cleaned.append(s)
            }
        }
        var out: [[Unicode.Scalar]] = []
        for word in splitOnPythonSpace(cleaned) {
            let stripped = stripAccents(UnicodeRules.pythonLower(word))
            var current: [Unicode.Scalar] = []
            for s in stripped {
                if UnicodeRules.isBertPunctuation(s) {
                    if !current.isEmpty { out.append(current); current = [] }
                    out.append([s])
                } else if UnicodeRules.isPythonSpace(s) {
                    // NFD never produces whitespace, but the final whitespace split would drop it.
                    if !current.isEmpty { out.append(current); current = [] }
                } else {
                    current.append(s)
                }
            }
            if !current.isEmpty { out.append(current) }
        }
        return out
    }

    /// Python `str.split()` with no argument.
    static func splitOnPythonSpace(_ a: [Unicode.Scalar]) -> [[Unicode.Scalar]] {
        a.split(whereSeparator: UnicodeRules.isPythonSpace).map(Array.init)
    }

    /// NFD, then delete category `Mn` (`_run_strip_accents`).
    static func stripAccents(_ word: [Unicode.Scalar]) -> [Unicode.Scalar] {
        let needsNFD = word.contains { $0.value >= 0xC0 }
        let decomposed: [Unicode.Scalar]
        if needsNFD {
            let s = String(String.UnicodeScalarView(word))
            decomposed = Array(s.decomposedStringWithCanonicalMapping.unicodeScalars)
        } else {
            decomposed = word
        }
        return decomposed.filter { UnicodeRules.category($0) != .nonspacingMark }
    }
}
