import Foundation
import Tensor

/// A retrieval evaluation split (ALBEF `re_eval_dataset`): every image with the eval transform
/// (bicubic resize to `imageSize`, CLIP normalization) and every caption, pre_captioned and
/// tokenized, with the caption ↔ image mapping (`txt2img`, `img2txt`).
///
/// Input: an eval annotation list `[{"image": path, "caption": [str]}]` such as the synthetic
/// corpus's `heldout.json` (relative paths resolved against the file's directory).
public struct RetrievalEvalSet {
    /// (imageCount, 3, imageSize, imageSize).
    public var images: [Float]
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

    /// Loads and transforms the whole split. Bad images or captions throw (an eval set must be clean).
    public static func load(annotation: URL, imageSize: Int, tokenizer: BertTokenizer, maxTextLength: Int = 25,
                            maxWords: Int = 30) throws -> RetrievalEvalSet {
        let ann = try AnnotationFile(path: annotation.path)
        var transform = ImageTransform(mode: .eval, imageSize: imageSize)
        var rng = RandomGenerator(seed: 0)
        let floats = 3 * imageSize * imageSize
        var images = [Float](repeating: 0, count: ann.entries.count * floats)
        var captions: [String] = []
        var t2i: [Int] = []
        var i2t: [[Int]] = []
        for (i, e) in ann.entries.enumerated() {
            let path = ann.imagePath(e)
            guard let data = FileManager.default.contents(atPath: path) else { throw DataError.missingFile(path: path) }
            try images.withUnsafeMutableBufferPointer { buf in
                let slice = UnsafeMutableBufferPointer(rebasing: buf[(i * floats)..<((i + 1) * floats)])
                try transform.run([UInt8](data), source: path, rng: &rng, into: slice)
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
        return RetrievalEvalSet(images: images, imageCount: ann.entries.count, imageSize: imageSize,
                                texts: tokenizer.encodeBatch(captions, maxLength: maxTextLength), captions: captions,
                                textToImage: t2i, imageToTexts: i2t)
    }
}
