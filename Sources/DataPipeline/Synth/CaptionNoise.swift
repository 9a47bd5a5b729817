import Foundation
import Tensor

/// Web-style caption noise for the synthetic corpus.
///
/// Kinds (uniform): another image's caption; a partial caption (a random prefix of ≥ 1 word);
/// garbled (words shuffled and a letter dropped or doubled); alt-text junk (`IMG_2041.JPG`,
/// `DSC_0042`, `stock photo`, `untitled`, `image`); hashtags (`#red #circle #art`).
public enum CaptionNoise {
    public enum Kind: String, CaseIterable, Sendable { case otherImage, partial, garbled, junk, hashtags }

    static let junk = ["stock photo", "untitled", "image", "photo", "download free vector illustration",
                       "clip art", "logo icon", "hd wallpaper"]

    /// A noisy version of `clean`; `other` is the clean caption of another image.
    public static func apply(_ clean: String, other: String, rng: inout RandomGenerator) -> (String, Kind) {
        let kind = Kind.allCases[rng.int(below: Kind.allCases.count)]
        let words = clean.split(separator: " ").map(String.init)
        switch kind {
        case .otherImage:
            return (other, kind)
        case .partial:
            let n = 1 + rng.int(below: max(1, words.count / 2))
            return (words.prefix(n).joined(separator: " "), kind)
        case .garbled:
            var w = words
            rng.shuffle(&w)
            if !w.isEmpty, case let i = rng.int(below: w.count), !w[i].isEmpty {
                var chars = Array(w[i])
                let j = rng.int(below: chars.count)
                if rng.bernoulli(0.5) { chars.remove(at: j) } else { chars.insert(chars[j], at: j) }
                w[i] = String(chars)
            }
            return (w.joined(separator: " "), kind)
        case .junk:
            switch rng.int(below: 3) {
            case 0: return (String(format: "IMG_%04d.JPG", rng.int(below: 10000)), kind)
            case 1: return (String(format: "DSC_%04d", rng.int(below: 10000)), kind)
            default: return (junk[rng.int(below: junk.count)], kind)
            }
        case .hashtags:
            let tags = words.filter { $0.count > 3 }.prefix(3).map { "#" + $0 } + ["#art"]
            return (tags.joined(separator: " "), kind)
        }
    }
}

