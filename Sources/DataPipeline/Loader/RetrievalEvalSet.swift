import Foundation
import Tensor

/// A retrieval evaluation split (ALBEF `re_eval_dataset`): every image with the eval transform
/// (bicubic resize to `imageSize`, CLIP normalization) and every caption, pre_captioned and
/// tokenized, with the caption ↔ image mapping (`txt2img`, `img2txt`).
///
/// Input: an eval annotation list `[{"image": path, "caption": [str]}]` such as the synthetic
/// corpus's `heldout.json` (relative paths resolved against the file's directory).
public struct RetrievalEvalSet {
    /// (imageCount, 3, imageSize, imageSize); empty when loaded with `decodeImages: false`
    /// (then ``decodeImages(_:)`` decodes any range on demand).
    public var images: [Float]
    /// Each image's file.
    public var imagePaths: [String] = []
    public var imageCount: Int
    public var imageSize: Int
    /// (captionCount, length) `[CLS]` + pieces, padded to the longest caption.
    public var texts: TokenizedBatch
    /// The captions after `pre_caption`.
    public var captions: [String]
    /// Caption t describes image `textToImage[t]`.
    public var textToImage: [Int]
    /// Image i is described by captions `imageToTexts[i]`.
    public var imageToTexts: [[Int]]

    /// Loads the split: captions tokenized, images transformed (all of them, or none with
    /// `decodeImages: false`, for streaming). Relative image paths are read from `imageRoot`
    /// (ALBEF's `image_root`; default: the JSON's directory). Bad images or captions throw (an
    /// eval set must be clean).
    public static func load(annotation: URL, imageRoot: String? = nil, imageSize: Int, tokenizer: BertTokenizer, maxTextLength: Int = 25,
                            maxWords: Int = 30, decodeImages: Bool = true) throws -> RetrievalEvalSet {
        let ann = try AnnotationFile(path: annotation.path, imageRoot: imageRoot)
        var transform = ImageTransform(mode: .eval, imageSize: imageSize)
        var rng = RandomGenerator(seed: 0)
        let floats = 3 * imageSize * imageSize
        var images = [Float](repeating: 0, count: decodeImages ? ann.entries.count * floats : 0)
        var paths: [String] = []
        var captions: [String] = []
        var t2i: [Int] = []
        var i2t: [[Int]] = []
        for (i, e) in ann.entries.enumerated() {
            let path = ann.imagePath(e)
            paths.append(path)
            if decodeImages {
                guard let data = FileManager.default.contents(atPath: path) else { throw DataError.missingFile(path: path) }
                try images.withUnsafeMutableBufferPointer { buf in
                    let slice = UnsafeMutableBufferPointer(rebasing: buf[(i * floats)..<((i + 1) * floats)])
                    try transform.run([UInt8](data), source: path, rng: &rng, into: slice)
                }
            } else if !FileManager.default.fileExists(atPath: path) {
                throw DataError.missingFile(path: path)
            }
            var mine: [Int] = []
            for c in e.captions {
                mine.append(captions.count)
                captions.append(PreCaption.apply(c, maxWords: maxWords))
                t2i.append(i)
            }
            guard !mine.isEmpty else {
                throw DataError.badAnnotation(path: annotation.path, reason: "entry \(i) (\(e.image)) has no caption")
            }
            i2t.append(mine)
        }
        return RetrievalEvalSet(images: images, imagePaths: paths, imageCount: ann.entries.count, imageSize: imageSize,
                                texts: tokenizer.encodeBatch(captions, maxLength: maxTextLength), captions: captions,
                                textToImage: t2i, imageToTexts: i2t)
    }

    /// The eval transform of images `range` `(range.count, 3, imageSize, imageSize)` (the
    /// transform is deterministic: the same floats as `load` with `decodeImages`).
    public func decodeImages(_ range: Range<Int>) throws -> [Float] {
        var transform = ImageTransform(mode: .eval, imageSize: imageSize)
        var rng = RandomGenerator(seed: 0)
        let floats = 3 * imageSize * imageSize
        var out = [Float](repeating: 0, count: range.count * floats)
        for (n, i) in range.enumerated() {
            let path = imagePaths[i]
            guard let data = FileManager.default.contents(atPath: path) else { throw DataError.missingFile(path: path) }
            try out.withUnsafeMutableBufferPointer { buf in
                try transform.run([UInt8](data), source: path, rng: &rng, into: UnsafeMutableBufferPointer(rebasing: buf[(n * floats)..<((n + 1) * floats)]))
            }
        }
        return out
    }
}
