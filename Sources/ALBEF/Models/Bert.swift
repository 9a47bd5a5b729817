import NN
import Tensor

/// BERT embeddings: LN(word[id] + token_type[0] + position[t]) then dropout.
/// Keys: `word_embeddings`, `position_embeddings`, `token_type_embeddings`, `LayerNorm`, buffer `position_ids`.
public final class BertEmbeddings: Module {
    public let word: Embedding, position: Embedding, tokenType: Embedding
    public let norm: LayerNorm
    public let dropout: Dropout
    public let positionIds: IntBuffer

    init(_ c: BertConfig, random: SharedRandom?) {
        word = Embedding(c.vocabSize, c.hiddenSize, paddingIndex: Int32(c.padTokenId))
        position = Embedding(c.maxPositionEmbeddings, c.hiddenSize)
        tokenType = Embedding(c.typeVocabSize, c.hiddenSize)
        norm = LayerNorm(c.hiddenSize, eps: c.layerNormEps)
        dropout = Dropout(c.hiddenDropoutProb, random: random)
        positionIds = IntBuffer(IntTensor((0..<Int64(c.maxPositionEmbeddings)).map { $0 }, shape: [1, c.maxPositionEmbeddings]))
    }

    public override var children: [(String, Module)] {
        [("word_embeddings", word), ("position_embeddings", position), ("token_type_embeddings", tokenType), ("LayerNorm", norm),
         ("dropout", dropout)]
    }
    public override var localBuffers: [(String, StateEntry)] { [("position_ids", .int(positionIds))] }

    /// ids `[B, L]` → `[B, L, C]`.
    public func callAsFunction(_ ids: [Int32], batch: Int, length: Int) -> Tensor {
        let w = word(ids, shape: [batch, length])
        let tt = tokenType.weight.slice(axis: 0, 0..<1).reshaped([tokenType.weight.shape[1]])
        let pos = position.weight.slice(axis: 0, 0..<length)
        return dropout(norm((w + tt) + pos))
    }
}

/// Multi-head attention projections (`query`, `key`, `value`); `key`/`value` read `kvWidth` inputs.
public final class BertSelfAttention: Module {
    public let query: Linear, key: Linear, value: Linear
    public let heads: Int
    public let dropout: Dropout
    init(_ c: BertConfig, kvWidth: Int, random: SharedRandom?) {
        query = Linear(c.hiddenSize, c.hiddenSize)
        key = Linear(kvWidth, c.hiddenSize)
        value = Linear(kvWidth, c.hiddenSize)
        heads = c.numAttentionHeads
        dropout = Dropout(c.attentionProbsDropoutProb, random: random)
    }
    public override var children: [(String, Module)] { [("query", query), ("key", key), ("value", value), ("dropout", dropout)] }

    /// Context `[B, Lq, C]` of `h` attending over `kv` (= h for self-attention) with an additive key mask.
    /// `projected` supplies key(kv) and value(kv) already computed (cross-attention reuse).
    public func callAsFunction(_ h: Tensor, kv: Tensor, mask: Tensor?, projected: (Tensor, Tensor)? = nil) -> Tensor {
        let d = h.shape[2] / heads
        let (k, v) = projected ?? (key(kv), value(kv))
        // xbert divides scores by √d, then applies dropout to the attention probabilities.
        var drop: (p: Float, seed: UInt64)? = nil
        if dropout.isTraining, dropout.p > 0, let r = dropout.random { drop = (dropout.p, r.generator.nextUInt64()) }
        return Tensor.attention(q: query(h), k: k, v: v, heads: heads, mask: mask, scale: 1 / Float(d).squareRoot(), dropout: drop)
    }
}

/// `dense` + dropout + residual + `LayerNorm` (HF `BertSelfOutput` / `BertOutput`).
public final class BertResidualOutput: Module {
    public let dense: Linear, norm: LayerNorm, dropout: Dropout
    init(_ inW: Int, _ c: BertConfig, random: SharedRandom?) {
        dense = Linear(inW, c.hiddenSize)
        norm = LayerNorm(c.hiddenSize, eps: c.layerNormEps)
        dropout = Dropout(c.hiddenDropoutProb, random: random)
    }
    public override var children: [(String, Module)] { [("dense", dense), ("LayerNorm", norm), ("dropout", dropout)] }
    /// norm(dropout(dense(x)) + residual), fused (`addingLinear`) so that neither the dense
    /// output nor the dropout output is kept; the same arithmetic and random draws as the separate ops.
    public func callAsFunction(_ x: Tensor, residual: Tensor) -> Tensor { norm(sublayer(x, residual: residual, gelu: false)) }
    /// The same on GELU(`preActivation`) (`BertIntermediate`'s activation), without keeping the
    /// GELU output (recomputed in the backward).
    public func callAsFunction(geluOf preActivation: Tensor, residual: Tensor) -> Tensor {
        norm(sublayer(preActivation, residual: residual, gelu: true))
    }
    func sublayer(_ x: Tensor, residual: Tensor, gelu: Bool) -> Tensor {
        if dropout.isTraining, dropout.p > 0, let random = dropout.random {
            return residual.addingLinear(x, dense.weight, dense.bias, gelu: gelu, dropout: dropout.p, rng: &random.generator)
        }
        return residual.addingLinear(x, dense.weight, dense.bias, gelu: gelu)
    }
}

/// Attention block: keys `self`, `output`.
public final class BertAttention: Module {
    public let attention: BertSelfAttention, output: BertResidualOutput
    init(_ c: BertConfig, kvWidth: Int, random: SharedRandom?) {
        attention = BertSelfAttention(c, kvWidth: kvWidth, random: random)
        output = BertResidualOutput(c.hiddenSize, c, random: random)
    }
    public override var children: [(String, Module)] { [("self", attention), ("output", output)] }
    public func callAsFunction(_ h: Tensor, kv: Tensor, mask: Tensor?, projected: (Tensor, Tensor)? = nil) -> Tensor {
        output(attention(h, kv: kv, mask: mask, projected: projected), residual: h)
    }
}

/// Feed-forward: `intermediate.dense` → GELU.
public final class BertIntermediate: Module {
    public let dense: Linear
    init(_ c: BertConfig) { dense = Linear(c.hiddenSize, c.intermediateSize) }
    public override var children: [(String, Module)] { [("dense", dense)] }
}

/// Post-LN BERT layer; layers from `fusion_layer` on also cross-attend to image tokens.
/// Keys: `attention`, `crossattention` (fusion layers only), `intermediate`, `output`.
public final class BertLayer: Module {
    public let attention: BertAttention
    public let crossAttention: BertAttention?
    public let intermediate: BertIntermediate
    public let output: BertResidualOutput

    init(_ c: BertConfig, crossAttention: Bool, random: SharedRandom?) {
        attention = BertAttention(c, kvWidth: c.hiddenSize, random: random)
        self.crossAttention = crossAttention ? BertAttention(c, kvWidth: c.encoderWidth, random: random) : nil
        intermediate = BertIntermediate(c)
        output = BertResidualOutput(c.intermediateSize, c, random: random)
    }
    public override var children: [(String, Module)] {
        var c: [(String, Module)] = [("attention", attention)]
        if let crossAttention { c.append(("crossattention", crossAttention)) }
        return c + [("intermediate", intermediate), ("output", output)]
    }

    public func callAsFunction(_ h: Tensor, mask: Tensor?, image: Tensor?, cache: CrossAttentionCache? = nil, layer: Int = 0) -> Tensor {
        var a = attention(h, kv: h, mask: mask)
        if let crossAttention {
            guard let image else { preconditionFailure("BertLayer: a fusion layer needs image tokens") }
            var projected: (Tensor, Tensor)? = nil
            if let cache {
                if let rows = cache.rows, let (k, v) = cache.kv[layer] {
                    // Same images in the same order (the MLM pass): the recorded projections as they are.
                    let identity = rows.count == k.shape[0] && rows.elementsEqual(0..<rows.count)
                    projected = identity ? (k, v) : (k.gatherRows(rows), v.gatherRows(rows))
                } else if cache.rows == nil {
                    let k = crossAttention.attention.key(image), v = crossAttention.attention.value(image)
                    cache.kv[layer] = (k, v)
                    projected = (k, v)
                }
            }
            a = crossAttention(a, kv: image, mask: nil, projected: projected)
        }
        return output(geluOf: intermediate.dense(a), residual: a)
    }
}

/// Which layers a BERT forward runs, as xbert's `mode` argument.
public enum BertMode: Sendable {
    /// Embeddings + layers `0..<fusion_layer` (the text encoder).
    case text
    /// Layers `fusion_layer..<N` on already-encoded hidden states, cross-attending to the image.
    case fusion
    /// Embeddings + every layer (the MLM path).
    case multimodal
}

/// xbert `BertModel` without pooler. Keys `embeddings.*`, `encoder.layer.i.*`.
public final class BertModel: Module {
    public let config: BertConfig
    public let embeddings: BertEmbeddings
    public let layers: ModuleList<BertLayer>

    final class Encoder: Module {
        let layer: ModuleList<BertLayer>
        init(_ l: ModuleList<BertLayer>) { layer = l }
        override var children: [(String, Module)] { [("layer", layer)] }
    }
    let encoder: Encoder

    public init(_ c: BertConfig, random: SharedRandom?) {
        config = c
        embeddings = BertEmbeddings(c, random: random)
        layers = ModuleList((0..<c.numHiddenLayers).map { BertLayer(c, crossAttention: $0 >= c.fusionLayer, random: random) })
        encoder = Encoder(layers)
    }
    public override var children: [(String, Module)] { [("embeddings", embeddings), ("encoder", encoder)] }

    /// Additive key mask `[B, L]`: (1 − m)·(−10000).
    public static func extendedMask(_ attentionMask: [Int32], batch: Int, length: Int) -> Tensor {
        Tensor(attentionMask.map { (1 - Float($0)) * -10000 }, shape: [batch, length])
    }

    /// Runs `mode` over token ids (text, multimodal) or hidden states (fusion).
    public func callAsFunction(ids: [Int32]? = nil, hidden: Tensor? = nil, attentionMask: [Int32], batch: Int, length: Int,
                               image: Tensor? = nil, mode: BertMode, cache: CrossAttentionCache? = nil) -> Tensor {
        let mask = BertModel.extendedMask(attentionMask, batch: batch, length: length)
        var h: Tensor
        let range: Range<Int>
        switch mode {
        case .text:
            h = embeddings(ids!, batch: batch, length: length)
            range = 0..<config.fusionLayer
        case .multimodal:
            h = embeddings(ids!, batch: batch, length: length)
            range = 0..<config.numHiddenLayers
        case .fusion:
            h = hidden!
            range = config.fusionLayer..<config.numHiddenLayers
        }
        for i in range { h = layers[i](h, mask: mask, image: image, cache: cache, layer: i) }
        return h
    }

    /// BERT init: N(0, initializer_range) for Linear and Embedding weights, zero biases, unit LayerNorm
    /// (HF `_init_weights`; the padding row is left random, as HF re-initialises embeddings fully).
    public func initialize(rng: inout RandomGenerator) {
        let std = config.initializerRange
        for (k, t) in namedParameters() {
            if k.hasSuffix("LayerNorm.weight") { t.data.update(repeating: 1, count: t.count) }
            else if k.hasSuffix(".bias") { t.data.update(repeating: 0, count: t.count) }
            else { for i in 0..<t.count { t.data[i] = rng.normal() * std } }
        }
    }
}

/// MLM head `cls.predictions`: transform (dense → GELU → LayerNorm) then the decoder, whose
/// weight IS the word-embedding matrix and whose bias IS `cls.predictions.bias`.
/// Keys: `bias`, `transform.dense`, `transform.LayerNorm`, `decoder.weight`, `decoder.bias`.
public final class BertMLMHead: Module {
    final class Transform: Module {
        let dense: Linear, norm: LayerNorm
        init(_ c: BertConfig) { dense = Linear(c.hiddenSize, c.hiddenSize); norm = LayerNorm(c.hiddenSize, eps: c.layerNormEps) }
        override var children: [(String, Module)] { [("dense", dense), ("LayerNorm", norm)] }
    }
    final class Decoder: Module {
        let weight: Tensor, bias: Tensor
        init(weight: Tensor, bias: Tensor) {
            self.weight = weight
            self.bias = bias
            // Read by this GEMM and by the embedding lookup, which joins a split table first.
            weight.bf16Splittable = true
        }
        override var localParameters: [(String, Tensor)] { [("weight", weight), ("bias", bias)] }
    }
    let transform: Transform
    let decoder: Decoder
    public let bias: Tensor

    init(_ c: BertConfig, wordEmbeddings: Tensor) {
        transform = Transform(c)
        bias = Tensor(zeros: [c.vocabSize], requiresGrad: true)
        decoder = Decoder(weight: wordEmbeddings, bias: bias)
    }
    public override var localParameters: [(String, Tensor)] { [("bias", bias)] }
    public override var children: [(String, Module)] { [("transform", transform), ("decoder", decoder)] }

    /// hidden `[..., C]` → logits `[..., V]`.
    public func callAsFunction(_ h: Tensor) -> Tensor {
        transform.norm(transform.dense(h).gelu()).linear(decoder.weight, decoder.bias)
    }
}

/// xbert `BertForMaskedLM`: keys `bert.*` and `cls.predictions.*` (decoder tied to the word embeddings).
public final class BertForMaskedLM: Module {
    public let bert: BertModel
    final class Cls: Module {
        let predictions: BertMLMHead
        init(_ p: BertMLMHead) { predictions = p }
        override var children: [(String, Module)] { [("predictions", predictions)] }
    }
    let cls: Cls
    public var head: BertMLMHead { cls.predictions }

    public init(_ c: BertConfig, random: SharedRandom?) {
        bert = BertModel(c, random: random)
        cls = Cls(BertMLMHead(c, wordEmbeddings: bert.embeddings.word.weight))
    }
    public override var children: [(String, Module)] { [("bert", bert), ("cls", cls)] }

    public func initialize(rng: inout RandomGenerator) {
        bert.initialize(rng: &rng)
        let std = bert.config.initializerRange
        for (k, t) in cls.namedParameters() where !k.hasPrefix("predictions.decoder") {
            if k.hasSuffix("LayerNorm.weight") { t.data.update(repeating: 1, count: t.count) }
            else if k.hasSuffix("bias") { t.data.update(repeating: 0, count: t.count) }
            else { for i in 0..<t.count { t.data[i] = rng.normal() * std } }
        }
    }
}

/// Cross-attention key/value projections of image tokens, shared between fusion passes over the
/// same images: the first pass (`rows == nil`) records key(X), value(X) per layer; a later pass
/// over images `X[rows]` uses key(X)[rows], value(X)[rows] (a row gather commutes with a Linear),
/// which is what ALBEF's negative ITM pass computes, without re-projecting every image token; a
/// pass over the same images (`rows` = 0..<B, the MLM pass) reuses them as they are.
public final class CrossAttentionCache {
    var kv: [Int: (Tensor, Tensor)] = [:]
    /// Rows of the recorded images the next pass reads (nil while recording).
    public var rows: [Int]?
    public init() {}
}
