import Foundation

/// An ALBEF JSON annotation list: `[{"image": path, "caption": str | [str]}, ...]`
/// (`dataset/caption_dataset.py` `pretrain_dataset`; the held-out eval format is the same with a
/// caption list). Relative image paths are resolved against `imageRoot` (default: the directory of
/// the JSON file). Other keys of an entry are ignored.
public struct AnnotationFile: Sendable {
    public struct Entry: Sendable, Equatable {
        public var image: String
        public var captions: [String]
        /// `re_train_dataset`'s `image_id` (any JSON scalar, as its text); nil when absent.
        public var imageId: String? = nil
    }

    public var path: String
    public var entries: [Entry]
    public var imageRoot: String

    public init(path: String, imageRoot: String? = nil) throws {
        self.path = path
        self.imageRoot = imageRoot ?? (path as NSString).deletingLastPathComponent
        guard let data = FileManager.default.contents(atPath: path) else { throw DataError.missingFile(path: path) }
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: data)
        } catch {
            throw DataError.badAnnotation(path: path, reason: "not valid JSON (\(error.localizedDescription))")
        }
        guard let list = object as? [Any] else { throw DataError.badAnnotation(path: path, reason: "top level is not a list") }
        var entries: [Entry] = []
        entries.reserveCapacity(list.count)
        for (i, item) in list.enumerated() {
            guard let d = item as? [String: Any], let image = d["image"] as? String else {
                throw DataError.badAnnotation(path: path, reason: "entry \(i) has no string \"image\"")
            }
            let id = d["image_id"].flatMap { v -> String? in v is NSNull ? nil : "\(v)" }
            if let c = d["caption"] as? String {
                entries.append(Entry(image: image, captions: [c], imageId: id))
            } else if let cs = d["caption"] as? [Any] {
                entries.append(Entry(image: image, captions: cs.compactMap { $0 as? String }, imageId: id))
            } else {
                entries.append(Entry(image: image, captions: [], imageId: id))
            }
        }
        self.entries = entries
    }

    /// The absolute path of an entry's image.
    public func imagePath(_ entry: Entry) -> String {
        entry.image.hasPrefix("/") ? entry.image : imageRoot + "/" + entry.image
    }

    /// Writes entries as a JSON list (captions as a string when single and `listCaptions` is false).
    public static func write(_ entries: [Entry], to url: URL, listCaptions: Bool) throws {
        let objects: [[String: Any]] = entries.map {
            var o: [String: Any] = ["image": $0.image, "caption": (listCaptions || $0.captions.count != 1) ? $0.captions as Any : $0.captions[0]]
            if let id = $0.imageId { o["image_id"] = id }
            return o
        }
        let data = try JSONSerialization.data(withJSONObject: objects, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        try data.write(to: url, options: .atomic)
    }
}
