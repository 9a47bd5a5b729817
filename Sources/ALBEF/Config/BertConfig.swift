import Foundation

/// ALBEF's `config_bert.json` (HF `BertConfig` plus `fusion_layer` and `encoder_width`); keys as in the file.
public struct BertConfig: Codable, Equatable, Sendable {
    public var hiddenSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var intermediateSize: Int
    public var hiddenAct: String
    public var hiddenDropoutProb: Float
    public var attentionProbsDropoutProb: Float
    public var maxPositionEmbeddings: Int
    public var typeVocabSize: Int
    public var vocabSize: Int
    public var layerNormEps: Float
    public var initializerRange: Float
    public var padTokenId: Int
    public var fusionLayer: Int
    public var encoderWidth: Int

    enum CodingKeys: String, CodingKey, CaseIterable {
        case hiddenSize = "hidden_size", numHiddenLayers = "num_hidden_layers", numAttentionHeads = "num_attention_heads"
        case intermediateSize = "intermediate_size", hiddenAct = "hidden_act", hiddenDropoutProb = "hidden_dropout_prob"
        case attentionProbsDropoutProb = "attention_probs_dropout_prob", maxPositionEmbeddings = "max_position_embeddings"
        case typeVocabSize = "type_vocab_size", vocabSize = "vocab_size", layerNormEps = "layer_norm_eps"
        case initializerRange = "initializer_range", padTokenId = "pad_token_id", fusionLayer = "fusion_layer"
        case encoderWidth = "encoder_width"
    }

    public init(hiddenSize: Int = 768, numHiddenLayers: Int = 12, numAttentionHeads: Int = 12, intermediateSize: Int = 3072,
                hiddenAct: String = "gelu", hiddenDropoutProb: Float = 0.1, attentionProbsDropoutProb: Float = 0.1,
                maxPositionEmbeddings: Int = 512, typeVocabSize: Int = 2, vocabSize: Int = 30522, layerNormEps: Float = 1e-12,
                initializerRange: Float = 0.02, padTokenId: Int = 0, fusionLayer: Int = 6, encoderWidth: Int = 768) {
        self.hiddenSize = hiddenSize; self.numHiddenLayers = numHiddenLayers; self.numAttentionHeads = numAttentionHeads
        self.intermediateSize = intermediateSize; self.hiddenAct = hiddenAct; self.hiddenDropoutProb = hiddenDropoutProb
        self.attentionProbsDropoutProb = attentionProbsDropoutProb; self.maxPositionEmbeddings = maxPositionEmbeddings
        self.typeVocabSize = typeVocabSize; self.vocabSize = vocabSize; self.layerNormEps = layerNormEps
        self.initializerRange = initializerRange; self.padTokenId = padTokenId; self.fusionLayer = fusionLayer
        self.encoderWidth = encoderWidth
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = BertConfig()
        func get<T: Decodable>(_ k: CodingKeys, _ def: T) throws -> T {
            do { return try c.decodeIfPresent(T.self, forKey: k) ?? def } catch {
                throw ConfigError.wrongType(key: k.rawValue, expected: "\(T.self)", file: nil)
            }
        }
        hiddenSize = try get(.hiddenSize, d.hiddenSize)
        numHiddenLayers = try get(.numHiddenLayers, d.numHiddenLayers)
        numAttentionHeads = try get(.numAttentionHeads, d.numAttentionHeads)
        intermediateSize = try get(.intermediateSize, d.intermediateSize)
        hiddenAct = try get(.hiddenAct, d.hiddenAct)
        hiddenDropoutProb = try get(.hiddenDropoutProb, d.hiddenDropoutProb)
        attentionProbsDropoutProb = try get(.attentionProbsDropoutProb, d.attentionProbsDropoutProb)
        maxPositionEmbeddings = try get(.maxPositionEmbeddings, d.maxPositionEmbeddings)
        typeVocabSize = try get(.typeVocabSize, d.typeVocabSize)
        vocabSize = try get(.vocabSize, d.vocabSize)
        layerNormEps = try get(.layerNormEps, d.layerNormEps)
        initializerRange = try get(.initializerRange, d.initializerRange)
        padTokenId = try get(.padTokenId, d.padTokenId)
        fusionLayer = try get(.fusionLayer, numHiddenLayers)
        encoderWidth = try get(.encoderWidth, hiddenSize)
        guard hiddenAct == "gelu" else { throw ConfigError.invalid(key: "hidden_act", message: "only \"gelu\" (erf form) is supported, got \"\(hiddenAct)\"", file: nil) }
        guard hiddenSize % numAttentionHeads == 0 else {
            throw ConfigError.invalid(key: "hidden_size", message: "\(hiddenSize) is not divisible by num_attention_heads \(numAttentionHeads)", file: nil)
        }
        guard (0...numHiddenLayers).contains(fusionLayer) else {
            throw ConfigError.invalid(key: "fusion_layer", message: "\(fusionLayer) must be in 0...\(numHiddenLayers)", file: nil)
        }
    }

    /// Reads a `config_bert.json`.
    public static func load(_ path: String) throws -> BertConfig {
        guard let data = FileManager.default.contents(atPath: path) else { throw ConfigError.missingFile(path) }
        if let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any] { try checkKeys(o, file: path) }
        do { return try JSONDecoder().decode(BertConfig.self, from: data) } catch let e as ConfigError { throw e.in(path) } catch {
            throw ConfigError.parse(file: path, message: "\(error)")
        }
    }
}

extension BertConfig {
    /// Keys of Hugging Face / ALBEF BERT config files that describe the file, not the model, or
    /// that this implementation does not use (their defaults are what it does).
    public static let ignoredKeys: Set<String> = [
        "architectures", "model_type", "transformers_version", "gradient_checkpointing", "position_embedding_type",
        "use_cache", "torch_dtype", "classifier_dropout", "is_decoder", "add_cross_attention", "bos_token_id",
        "eos_token_id", "directionality", "pooler_fc_size", "pooler_num_attention_heads", "pooler_num_fc_layers",
        "pooler_size_per_head", "pooler_type", "output_past", "id2label", "label2id",
    ]

    /// Strict keys: a key neither read nor known-and-ignored is an error naming it and the
    /// nearest known key (`hidden_szie` → `hidden_size`), so a typo never leaves a default in place.
    public static func checkKeys(_ o: [String: Any], file: String?) throws {
        let known = CodingKeys.allCases.map(\.rawValue)
        for key in o.keys.sorted() where !known.contains(key) && !ignoredKeys.contains(key) {
            let near = known.min { editDistance(key, $0) < editDistance(key, $1) }
            let hint = near.flatMap { editDistance(key, $0) <= max(2, key.count / 3) ? "; did you mean '\($0)'?" : nil }
                ?? "; known keys: \(known.sorted().joined(separator: ", "))"
            throw ConfigError.invalid(key: key, message: "unknown BERT config key\(hint)", file: file)
        }
    }
}

/// Levenshtein distance (insertions, deletions, substitutions): the nearest-key suggestions of
/// the strict configs.
public func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    if a.isEmpty { return b.count }
    var row = Array(0...b.count)
    for i in 1...a.count {
        var prev = row[0]
        row[0] = i
        for j in stride(from: 1, through: b.count, by: 1) {
            let cur = row[j]
            row[j] = min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] == b[j - 1] ? 0 : 1))
            prev = cur
        }
    }
    return row[b.count]
}

/// Configuration errors name the file and key, and say what to fix.
public enum ConfigError: Error, CustomStringConvertible {
    case missingFile(String)
    case parse(file: String, message: String)
    case missingKey(key: String, file: String?)
    case wrongType(key: String, expected: String, file: String?)
    case invalid(key: String, message: String, file: String?)

    func `in`(_ file: String) -> ConfigError {
        switch self {
        case let .missingKey(k, nil): return .missingKey(key: k, file: file)
        case let .wrongType(k, e, nil): return .wrongType(key: k, expected: e, file: file)
        case let .invalid(k, m, nil): return .invalid(key: k, message: m, file: file)
        default: return self
        }
    }

    public var description: String {
        switch self {
        case .missingFile(let p): return "config file not found: \(p)"
        case let .parse(f, m): return "\(f): cannot parse: \(m)"
        case let .missingKey(k, f): return "\(f ?? "config"): missing required key '\(k)'"
        case let .wrongType(k, e, f): return "\(f ?? "config"): key '\(k)' has the wrong type; expected \(e)"
        case let .invalid(k, m, f): return "\(f ?? "config"): key '\(k)': \(m)"
        }
    }
}
