import Tensor

/// The attribute vocabulary of the synthetic corpus and its caption templates.
///
/// Every word of a clean caption is a whole word of the uncased BERT vocabulary.
public enum SceneVocabulary {
    /// (name, RGB, synonyms used in captions). Twelve well-separated hues (none near the grey
    /// background): colour is what a model learns first, so the number of colours sets how far
    /// above chance early learning shows (see the README's quickstart numbers).
    public static let colors: [(name: String, rgb: (UInt8, UInt8, UInt8), words: [String])] = [
        ("red", (220, 30, 30), ["red", "red", "scarlet"]),
        ("green", (30, 170, 50), ["green"]),
        ("blue", (30, 70, 225), ["blue", "blue", "navy"]),
        ("yellow", (245, 220, 30), ["yellow", "gold"]),
        ("purple", (140, 40, 190), ["purple", "violet"]),
        ("orange", (250, 135, 20), ["orange"]),
        ("white", (248, 248, 248), ["white"]),
        ("black", (12, 12, 12), ["black", "dark"]),
        ("pink", (255, 120, 200), ["pink"]),
        ("brown", (120, 65, 20), ["brown"]),
        ("turquoise", (40, 210, 210), ["turquoise"]),
        ("lime", (160, 240, 40), ["lime"]),
    ]
    public enum Shape: String, CaseIterable, Sendable { case circle, square, triangle, star, cross, diamond }
    public static let shapeWords: [Shape: [String]] = [
        .circle: ["circle", "circle", "disc", "dot"],
        .square: ["square", "square", "box", "block"],
        .triangle: ["triangle"],
        .star: ["star"],
        .cross: ["cross", "plus sign"],
        .diamond: ["diamond"],
    ]
    public enum Position: String, CaseIterable, Sendable { case left, right, top, bottom, center }
    public static let positionPhrases: [Position: [String]] = [
        .left: ["on the left", "at the left", "on the left side", "to the left"],
        .right: ["on the right", "at the right", "on the right side", "to the right"],
        .top: ["at the top", "near the top", "in the upper part", "on top"],
        .bottom: ["at the bottom", "near the bottom", "in the lower part", "at the bottom of the picture"],
        .center: ["in the middle", "in the center", "in the middle of the picture", "centered"],
    ]
    public static let sizeWords = ["small", "medium", "large"]
}

/// One object of a scene.
public struct SceneObject: Sendable, Equatable {
    public var color: Int
    public var shape: SceneVocabulary.Shape
    public var position: SceneVocabulary.Position
    /// Radius as a fraction of the image side.
    public var radius: Double
    /// Centre in [0, 1]².
    public var cx: Double
    public var cy: Double
    /// 0 small, 1 medium, 2 large (hard mode captions).
    public var sizeClass: Int
}

/// A scene: background and objects.
public struct Scene: Sendable {
    public var background: (UInt8, UInt8, UInt8)
    public var noiseAmplitude: Int
    public var clutter: Bool
    public var objects: [SceneObject]
}

public enum SynthDifficulty: String, Sendable, CaseIterable { case easy, hard }

/// Draws scenes and their clean captions.
public enum SceneSampler {
    /// Number of distinct (colour, shape, position) combinations.
    public static var combinations: Int {
        SceneVocabulary.colors.count * SceneVocabulary.Shape.allCases.count * SceneVocabulary.Position.allCases.count
    }

    /// (colour, shape, position) of combination `k` < `combinations`.
    public static func combination(_ k: Int) -> (Int, SceneVocabulary.Shape, SceneVocabulary.Position) {
        let nc = SceneVocabulary.colors.count, ns = SceneVocabulary.Shape.allCases.count
        return (k % nc, SceneVocabulary.Shape.allCases[(k / nc) % ns], SceneVocabulary.Position.allCases[k / (nc * ns)])
    }

    static func centre(_ p: SceneVocabulary.Position, jitter: Double, rng: inout RandomGenerator) -> (Double, Double) {
        let j = { (r: inout RandomGenerator) in r.uniform(-jitter, jitter) }
        switch p {
        case .left: return (0.27 + j(&rng), 0.5 + j(&rng))
        case .right: return (0.73 + j(&rng), 0.5 + j(&rng))
        case .top: return (0.5 + j(&rng), 0.27 + j(&rng))
        case .bottom: return (0.5 + j(&rng), 0.73 + j(&rng))
        case .center: return (0.5 + j(&rng), 0.5 + j(&rng))
        }
    }

    /// An easy scene: one big object of the given combination on a plain, slightly noisy background.
    public static func easy(combination k: Int, rng: inout RandomGenerator) -> Scene {
        let (c, s, p) = combination(k)
        let (cx, cy) = centre(p, jitter: 0.03, rng: &rng)
        let g = 95 + rng.int(below: 60)
        let tint = (rng.int(below: 17) - 8, rng.int(below: 17) - 8, rng.int(below: 17) - 8)
        let bg = (UInt8(g + tint.0), UInt8(g + tint.1), UInt8(g + tint.2))
        let obj = SceneObject(color: c, shape: s, position: p, radius: rng.uniform(0.21, 0.25), cx: cx, cy: cy, sizeClass: 2)
        return Scene(background: bg, noiseAmplitude: 6, clutter: false, objects: [obj])
    }

    /// A hard scene: 1–3 objects of random attributes and sizes, clutter in the background.
    public static func hard(rng: inout RandomGenerator) -> Scene {
        let n = 1 + rng.int(below: 3)
        var objects: [SceneObject] = []
        var used = Set<Int>()
        for _ in 0..<n {
            var p = SceneVocabulary.Position.allCases[rng.int(below: 5)]
            var tries = 0
            while used.contains(SceneVocabulary.Position.allCases.firstIndex(of: p)!) && tries < 10 {
                p = SceneVocabulary.Position.allCases[rng.int(below: 5)]
                tries += 1
            }
            used.insert(SceneVocabulary.Position.allCases.firstIndex(of: p)!)
            let sizeClass = rng.int(below: 3)
            let radius = [0.08, 0.12, 0.17][sizeClass] * rng.uniform(0.9, 1.1)
            let (cx, cy) = centre(p, jitter: 0.06, rng: &rng)
            objects.append(SceneObject(color: rng.int(below: SceneVocabulary.colors.count),
                                       shape: SceneVocabulary.Shape.allCases[rng.int(below: 6)], position: p,
                                       radius: radius, cx: cx, cy: cy, sizeClass: sizeClass))
        }
        let g = 70 + rng.int(below: 110)
        let bg = (UInt8(g + rng.int(below: 21) - 10), UInt8(g + rng.int(below: 21) - 10), UInt8(g + rng.int(below: 21) - 10))
        return Scene(background: bg, noiseAmplitude: 14, clutter: true, objects: objects)
    }

    /// "a" or "an" before `word`.
    static func article(_ word: String) -> String { "aeiou".contains(word.first ?? "x") ? "an" : "a" }

    static func pick(_ words: [String], _ rng: inout RandomGenerator) -> String { words[rng.int(below: words.count)] }

    /// A clean caption naming every object's colour, shape and position (and size in hard mode).
    public static func caption(_ scene: Scene, hard: Bool, rng: inout RandomGenerator) -> String {
        func phrase(_ o: SceneObject, _ withSize: Bool) -> String {
            let color = pick(SceneVocabulary.colors[o.color].words, &rng)
            let shape = pick(SceneVocabulary.shapeWords[o.shape]!, &rng)
            let size = withSize ? SceneVocabulary.sizeWords[o.sizeClass] + " " : ""
            return "\(size)\(color) \(shape)"
        }
        func pos(_ o: SceneObject) -> String { pick(SceneVocabulary.positionPhrases[o.position]!, &rng) }
        if scene.objects.count == 1 {
            let o = scene.objects[0]
            let a = phrase(o, hard), p = pos(o)
            let x = article(a)
            let templates = [
                "\(x) \(a) \(p)", "photo of \(x) \(a) \(p)", "there is \(x) \(a) \(p)", "an image showing \(x) \(a) \(p)",
                "\(x) \(a) \(p) of the image", "picture of \(x) \(a) \(p) on a plain background", "\(a) \(p)",
                "a simple drawing of \(x) \(a) \(p)",
            ]
            return pick(templates, &rng)
        }
        let parts = scene.objects.map { o -> String in let a = phrase(o, true); return "\(article(a)) \(a) \(pos(o))" }
        let joined = parts.dropLast().joined(separator: " , ") + " and " + parts.last!
        return pick(["\(joined)", "photo of \(joined)", "there is \(joined)"], &rng)
    }
}
