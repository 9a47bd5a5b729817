import NN
import Tensor

/// The parts every ALBEF model shares (`models/model_pretrain.py`, `models/model_retrieval.py`):
/// a ViT image encoder, a BERT text/fusion encoder, the `vision_proj`/`text_proj` projections
/// into the E-dimensional contrastive space, the ITM head, the ITC temperature, and momentum
/// (EMA) copies of the encoders and projections paired in the reference's `model_pairs` order.
///
/// The pretraining model's BERT is `text_encoder.bert` (a `BertForMaskedLM`), the retrieval
/// model's is `text_encoder` itself (a `BertModel`); `textBert` names whichever it is. The
/// extension below holds what both forwards do identically: the momentum update, the online
/// and momentum features, and the packing order of the trainable parameters.
public protocol ALBEFEncoders: Module {
    var visualEncoder: VisionTransformer { get }
    /// The BERT that runs `mode='text'` and `mode='fusion'`.
    var textBert: BertModel { get }
    var visionProj: Linear { get }
    var textProj: Linear { get }
    var itmHead: Linear { get }
    /// The ITC temperature τ (0-dim parameter).
    var temp: Tensor { get }
    var visualEncoderM: VisionTransformer { get }
    var textBertM: BertModel { get }
    var visionProjM: Linear { get }
    var textProjM: Linear { get }
    /// (online, momentum, online state-dict name) in `model_pairs` order: visual encoder,
    /// vision_proj, text encoder, text_proj. The momentum copy's name is the online one + `_m`.
    var momentumPairs: [(online: Module, momentum: Module, name: String)] { get }
    /// The EMA coefficient m (`config['momentum']`, 0.995).
    var momentumCoefficient: Float { get }
    /// Packed online trainables (after `pack()`), nil before.
    var online: FlatParameters? { get }
    /// Packed momentum parameters, laid out like the paired prefix of `online`.
    var momentum: FlatParameters? { get }
}

extension ALBEFEncoders {
    /// Online trainables: the momentum-paired ones first (pair order, `parameters()` order
    /// inside each module, tied tensors once), then `itm_head`, then `temp`. This is the packing
    /// order of `online`, so the EMA over the paired prefix is one saxpby.
    public func trainableParameters() -> [(String, Tensor)] {
        var out: [(String, Tensor)] = []
        for (o, _, name) in momentumPairs { out += o.uniqueParameters().map { (name + "." + $0.0, $0.1) } }
        out += itmHead.uniqueParameters().map { ("itm_head." + $0.0, $0.1) }
        out.append(("temp", temp))
        return out
    }

    /// Momentum parameters in the same order as the paired prefix of `trainableParameters()`.
    public func momentumParameters() -> [(String, Tensor)] {
        momentumPairs.flatMap { _, m, name in m.uniqueParameters().map { (name + "_m." + $0.0, $0.1) } }
    }

    /// Packs the online trainables and the momentum copies into flat buffers (see `pack()` of
    /// the models), checking that the momentum layout equals the online paired prefix.
    func makePackedBuffers(gradients layout: FlatParameters.GradientLayout) -> (online: FlatParameters, momentum: FlatParameters) {
        let on = FlatParameters(trainableParameters(), gradients: layout)
        let mo = FlatParameters(momentumParameters(), withGradients: false)
        BufferPool.shared.trim()  // the pre-packing copies are garbage now
        precondition(on.segments.prefix(mo.segments.count).map(\.shape) == mo.segments.map(\.shape),
                     "\(type(of: self)).pack: momentum layout differs from the online prefix")
        return (on, mo)
    }

    /// Exact copy of every online paired parameter into its momentum partner (`copy_params`).
    public func copyOnlineToMomentum() {
        for (o, m, _) in momentumPairs {
            for ((_, a), (_, b)) in zip(o.uniqueParameters(), m.uniqueParameters()) { b.data.update(from: a.data, count: a.count) }
        }
    }

    /// `_momentum_update`: θ_m ← m·θ_m + (1 − m)·θ over every pair, with the factor 1 − m
    /// computed in double and rounded; one saxpby on the packed buffers (or one per tensor
    /// before packing). The training steps run it before the online encoders (the reference
    /// runs it after them): it reads only online weights, which those encoders do not change,
    /// and writes only momentum weights, which they do not read, so the result is the same, and
    /// no bf16 GEMM has split an online weight yet (it joins any that are).
    public func momentumUpdate() {
        let m = momentumCoefficient
        let w = Float(1 - Double(m))
        BF16Weights.joinAll()  // reads every online weight as fp32 (a no-op unless bf16 GEMMs split some)
        if let on = online, let mo = momentum {
            saxpby(mo.count, alpha: w, x: on.values.pointer, beta: m, y: mo.values.pointer)
        } else {
            for (o, mm, _) in momentumPairs {
                for ((_, a), (_, b)) in zip(o.uniqueParameters(), mm.uniqueParameters()) {
                    saxpby(a.count, alpha: w, x: a.data, beta: m, y: b.data)
                }
            }
        }
    }

    /// Online image side: `image_embeds = visual_encoder(image)` `[B, 1+N, C]` and
    /// `image_feat = normalize(vision_proj(image_embeds[:, 0]))` `[B, E]`.
    public func encodeImage(_ images: Tensor) -> (embeds: Tensor, feat: Tensor) {
        let x = visualEncoder(images)
        return (x, itcProjection { visionProj(x.select(axis: 1, 0)) }.l2Normalized())
    }

    /// Online text side: `text_embeds = BERT(ids, mask, mode='text')` `[B, L, C]` and
    /// `text_feat = normalize(text_proj(text_embeds[:, 0]))` `[B, E]`.
    public func encodeText(ids: [Int32], attentionMask: [Int32], batch: Int, length: Int) -> (embeds: Tensor, feat: Tensor) {
        let h = textBert(ids: ids, attentionMask: attentionMask, batch: batch, length: length, mode: .text)
        return (h, itcProjection { textProj(h.select(axis: 1, 0)) }.l2Normalized())
    }

    /// The momentum encoders' image and text features (call inside `withNoGrad`, after
    /// `momentumUpdate()`): `image_embeds_m` `[B, 1+N, C]`, `image_feat_m` `[B, E]`,
    /// `text_embeds_m` `[B, L, C]`, `text_feat_m` `[B, E]`, in the reference's order (image first).
    public func momentumFeatures(images: Tensor, ids: [Int32], attentionMask: [Int32], batch: Int, length: Int)
        -> (imageEmbeds: Tensor, imageFeat: Tensor, textEmbeds: Tensor, textFeat: Tensor) {
        momentumForward {
            let xm = visualEncoderM(images)
            let im = itcProjection { visionProjM(xm.select(axis: 1, 0)) }.l2Normalized()
            let hm = textBertM(ids: ids, attentionMask: attentionMask, batch: batch, length: length, mode: .text)
            let tm = itcProjection { textProjM(hm.select(axis: 1, 0)) }.l2Normalized()
            return (xm, im, hm, tm)
        }
    }
}

/// The ITC projections (`vision_proj`, `text_proj` and their momentum copies) in the precision
/// bf16 mode gives them.
@inline(__always)
func itcProjection(_ body: () -> Tensor) -> Tensor {
    MatmulPrecision.ablated("itc-fp32") ? MatmulPrecision.inFP32(body) : body()
}

/// A momentum encoder's forward in the precision bf16 mode gives it.
@inline(__always)
func momentumForward<T>(_ body: () -> T) -> T {
    MatmulPrecision.ablated("momentum-fp32") ? MatmulPrecision.inFP32(body) : body()
}
