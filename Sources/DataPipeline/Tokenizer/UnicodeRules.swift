/// Unicode character classes used by ALBEF's `pre_caption` and BERT's basic tokenizer, pinned to
/// the behaviour of Python 3.11 (`unicodedata` 14.0.0).
///
/// Everything here works on `Unicode.Scalar`s, never on `Character`s: Swift's grapheme clusters glue
/// `"\r\n"`, combining marks and emoji sequences together, which Python never does.
enum UnicodeRules {
    /// Unicode 14.0: a scalar assigned later is `Cn` (unassigned) for Python 3.11.
    @inline(__always)
    static func isAssignedInUnicode14(_ s: Unicode.Scalar) -> Bool {
        guard let age = s.properties.age else { return false }
        return age.major < 14 || (age.major == 14 && age.minor == 0)
    }

    /// Python `str.isspace()` (= the `\s` of `re` on `str`).
    @inline(__always)
    static func isPythonSpace(_ s: Unicode.Scalar) -> Bool {
        switch s.value {
        case 0x09...0x0D, 0x1C...0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F,
             0x205F, 0x3000:
            return true
        default:
            return false
        }
    }

    /// General category as Python 3.11 sees it (post-14.0 scalars are unassigned).
    @inline(__always)
    static func category(_ s: Unicode.Scalar) -> Unicode.GeneralCategory {
        if s.value < 0x80 { return s.properties.generalCategory }
        guard isAssignedInUnicode14(s) else { return .unassigned }
        return s.properties.generalCategory
    }

    /// BERT `_is_control`: category C* except tab, LF, CR.
    static func isBertControl(_ s: Unicode.Scalar) -> Bool {
        if s == "\t" || s == "\n" || s == "\r" { return false }
        switch category(s) {
        case .control, .format, .surrogate, .privateUse, .unassigned: return true
        default: return false
        }
    }

    /// BERT `_is_whitespace`: space, tab, LF, CR, or category Zs.
    static func isBertWhitespace(_ s: Unicode.Scalar) -> Bool {
        if s == " " || s == "\t" || s == "\n" || s == "\r" { return true }
        return category(s) == .spaceSeparator
    }

    /// BERT `_is_punctuation`: ASCII 33–47, 58–64, 91–96, 123–126, or category P*.
    static func isBertPunctuation(_ s: Unicode.Scalar) -> Bool {
        let v = s.value
        if (33...47).contains(v) || (58...64).contains(v) || (91...96).contains(v) || (123...126).contains(v) {
            return true
        }
        switch category(s) {
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation:
            return true
        default:
            return false
        }
    }

    /// BERT `_is_chinese_char`: the CJK Unified Ideograph blocks (not kana, Hangul or CJK punctuation).
    static func isCJKIdeograph(_ s: Unicode.Scalar) -> Bool {
        switch s.value {
        case 0x4E00...0x9FFF, 0x3400...0x4DBF, 0x20000...0x2A6DF, 0x2A700...0x2B73F, 0x2B740...0x2B81F,
             0x2B820...0x2CEAF, 0xF900...0xFAFF, 0x2F800...0x2FA1F:
            return true
        default:
            return false
        }
    }

    /// Python `str.lower()`: the full lowercase mapping (SpecialCasing, e.g. U+0130 → `i` U+0307) plus
    /// the final-sigma context rule for U+03A3.
    ///
    /// Concretely, Σ at index i becomes ς when some scalar before i, skipping case-ignorable ones, is
    /// cased, and no scalar after i, skipping case-ignorable ones, is cased; otherwise σ.
    static func pythonLower(_ input: [Unicode.Scalar]) -> [Unicode.Scalar] {
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(input.count)
        for (i, s) in input.enumerated() {
            if s.value < 0x80 {
                if s.value >= 0x41 && s.value <= 0x5A {
                    out.append(Unicode.Scalar(s.value + 32)!)
                } else {
                    out.append(s)
                }
                continue
            }
            if s.value == 0x3A3 {
                out.append(isFinalSigma(input, at: i) ? "\u{3C2}" : "\u{3C3}")
                continue
            }
            guard isAssignedInUnicode14(s), s.properties.changesWhenLowercased else {
                out.append(s)
                continue
            }
            out.append(contentsOf: s.properties.lowercaseMapping.unicodeScalars)
        }
        return out
    }

    private static func isFinalSigma(_ a: [Unicode.Scalar], at i: Int) -> Bool {
        var j = i - 1
        while j >= 0 && a[j].properties.isCaseIgnorable { j -= 1 }
        guard j >= 0 && a[j].properties.isCased else { return false }
        j = i + 1
        while j < a.count && a[j].properties.isCaseIgnorable { j += 1 }
        return j == a.count || !a[j].properties.isCased
    }
}
