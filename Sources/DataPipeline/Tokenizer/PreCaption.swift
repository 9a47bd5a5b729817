/// ALBEF's caption cleaning, `dataset/utils.py` `pre_caption(caption, max_words)`.
///
/// Concretely, on Unicode scalars:
/// 1. Python `str.lower()` (full mapping + final sigma);
/// 2. delete `, . ' ! ? " ( ) * # : ; ~`;
/// 3. `-` → space, then `/` → space;
/// 4. `<person>` → `person`;
/// 5. every run of ≥ 2 Python-whitespace scalars → one U+0020;
/// 6. strip trailing `\n`s, then U+0020 at both ends;
/// 7. split on U+0020 and keep the first `maxWords` pieces.
public enum PreCaption {
    static let deleted: Set<UInt32> = Set(",.'!?\"()*#:;~".unicodeScalars.map(\.value))
    static let person: [Unicode.Scalar] = Array("<person>".unicodeScalars)

    /// Cleans one caption; see the type documentation for the rules.
    public static func apply(_ caption: String, maxWords: Int = 30) -> String {
        var s = String(String.UnicodeScalarView(applyScalars(Array(caption.unicodeScalars), maxWords: maxWords)))
        s.reserveCapacity(0)
        return s
    }

    /// The same on a scalar array.
    public static func applyScalars(_ input: [Unicode.Scalar], maxWords: Int = 30) -> [Unicode.Scalar] {
        let lowered = UnicodeRules.pythonLower(input)
        // 2 + 3.
        var a: [Unicode.Scalar] = []
        a.reserveCapacity(lowered.count)
        for s in lowered where !deleted.contains(s.value) {
            a.append(s == "-" || s == "/" ? " " : s)
        }
        // 4.
        var b: [Unicode.Scalar] = []
        b.reserveCapacity(a.count)
        var i = 0
        while i < a.count {
            if a[i] == "<", i + person.count <= a.count, Array(a[i..<(i + person.count)]) == person {
                b.append(contentsOf: "person".unicodeScalars)
                i += person.count
            } else {
                b.append(a[i])
                i += 1
            }
        }
        // 5.
        var c: [Unicode.Scalar] = []
        c.reserveCapacity(b.count)
        i = 0
        while i < b.count {
            if UnicodeRules.isPythonSpace(b[i]) {
                var j = i
                while j < b.count && UnicodeRules.isPythonSpace(b[j]) { j += 1 }
                if j - i >= 2 { c.append(" ") } else { c.append(b[i]) }
                i = j
            } else {
                c.append(b[i])
                i += 1
            }
        }
        // 6.
        var end = c.count
        while end > 0 && c[end - 1] == "\n" { end -= 1 }
        var start = 0
        while start < end && c[start] == " " { start += 1 }
        while end > start && c[end - 1] == " " { end -= 1 }
        let d = Array(c[start..<end])
        // 7.
        let words = d.split(separator: " ", omittingEmptySubsequences: false)
        guard words.count > maxWords else { return d }
        var out: [Unicode.Scalar] = []
        for (k, w) in words.prefix(maxWords).enumerated() {
            if k > 0 { out.append(" ") }
            out.append(contentsOf: w)
        }
        return out
    }
}
