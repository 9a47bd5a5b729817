import NN
import Tensor

/// One retrieval fine-tuning batch: normalised images `[B, 3, H, W]`, token ids and attention
/// mask `[B, L]`, and each pair's image id (`idx`; captions of the same image share it).
public struct RetrievalBatch {
    public var images: Tensor
    public var inputIds: [Int32]
    public var attentionMask: [Int32]
    public var imageIds: [Int64]
    public var batchSize: Int
    public var length: Int
    public init(images: Tensor, inputIds: [Int32], attentionMask: [Int32], imageIds: [Int64], batchSize: Int, length: Int) {
        precondition(inputIds.count == batchSize * length && attentionMask.count == batchSize * length && imageIds.count == batchSize,
                     "RetrievalBatch: ids/mask must be [\(batchSize), \(length)] and idx [\(batchSize)]")
        self.images = images
        self.inputIds = inputIds
        self.attentionMask = attentionMask
        self.imageIds = imageIds
        self.batchSize = batchSize
        self.length = length
    }
}

/// The two losses (0-dim tensors on the tape) of a retrieval step and, when requested, named
/// intermediate values (the fixture's `expected/*` names).
public struct RetrievalStepOutput {
    public var lossITA: Tensor, lossITM: Tensor
    public var total: Tensor
    public var diagnostics: [String: Float] = [:]
    public var activations: [String: Tensor] = [:]
    /// `idx_all = [idx | idx_queue]` of this step (before the enqueue).
    public var idxAll: [Int64] = []
    public var negativeImageIndex: [Int] = [], negativeTextIndex: [Int] = []
}

extension ALBEFRetrieval {
    /// The 1e-4 `model_retrieval.py` adds to the similarities before the ITM sampling softmax.
    public static let negativeSamplingOffset: Float = 1e-4

    /// `model_retrieval.py`'s forward (spec §8, "fine-tune differences"): ITC with id-based
    /// positives over the batch and the queue, momentum distillation, enqueue, ITM with hard
    /// negatives that skip every pair of the same image. Returns `loss_ita`, `loss_itm` on the tape.
    ///
    /// Concretely, with S_i2t = i·[t_mᵀ | text_queue]/τ, S_t2i = t·[i_mᵀ | image_queue]/τ:
    ///
    ///     y   = pos_idx / pos_idx.sum(1),  pos_idx[i, j] = (idx[i] == [idx | idx_queue][j])
    ///     q_x = α·softmax(S_x_m) + (1 − α)·y         (distill; else q_x = y)
    ///     L_ita = (CE_soft(S_i2t, q_i2t) + CE_soft(S_t2i, q_t2i)) / 2
    ///     L_itm = CE over [pos ; (text, neg image) ; (neg text, image)]
    ///
    /// - Parameters:
    ///   - alpha: distillation weight (a Python float in the reference; 1 − α is formed in double).
    ///   - rng: source of the ITM negatives (image negatives first).
    ///   - injection: given negatives (parity tests); MLM fields are ignored.
    ///   - updateMomentum: run `_momentum_update` first (false on the later micro-steps of an
    ///     accumulated step, which DDP ranks would run once).
    ///   - allGather / allGatherIds: gather the momentum features `[B, E]` / image ids `[B]` of
    ///     every rank in rank order (identity for one process), for the enqueue.
    ///   - keepActivations: keep named intermediates in the output (selfcheck).
    public func forwardStep(_ batch: RetrievalBatch, alpha: Double, rng: inout RandomGenerator,
                            injection: StepInjection = StepInjection(),
                            updateMomentum: Bool = true,
                            allGather: (Tensor) -> Tensor = { $0 },
                            allGatherIds: ([Int64]) -> [Int64] = { $0 },
                            keepActivations: Bool = false) -> RetrievalStepOutput {
        let b = batch.batchSize, l = batch.length
        var acts: [String: Tensor] = [:]

        // The momentum update first, before any online GEMM (same result: `momentumUpdate`).
        if updateMomentum { withNoGrad { momentumUpdate() } }

        // Online image and text features (temp is used as it is: no clamp in model_retrieval).
        let (imageEmbeds, imageFeat) = encodeImage(batch.images)
        let (textEmbeds, textFeat) = encodeText(ids: batch.inputIds, attentionMask: batch.attentionMask, batch: b, length: l)

        // Id-based positives over [batch | idx_queue] (the queue before this step's enqueue).
        let (idxAll, simTargets) = ContrastiveLoss.idTargets(ids: batch.imageIds, queue: idxQueue.value.values)

        // Momentum features and ITC targets (no grad).
        let (targetsI2T, targetsT2I, imageFeatM, textFeatM) = withNoGrad {
            let (xm, im, hm, tm) = momentumFeatures(images: batch.images, ids: batch.inputIds, attentionMask: batch.attentionMask,
                                                    batch: b, length: l)
            if keepActivations { acts["image_embeds_m"] = xm; acts["text_embeds_m"] = hm }
            guard distill else { return (simTargets, simTargets, im, tm) }
            let tempValue = Tensor(scalar: temp.data[0])
            let simI2TM = ContrastiveLoss.similarities(im, momentum: tm, queue: textQueue, temp: tempValue)   // [B, B+Q]
            let simT2IM = ContrastiveLoss.similarities(tm, momentum: im, queue: imageQueue, temp: tempValue)
            func targets(_ s: Tensor) -> Tensor {
                ContrastiveLoss.distilledTargets(momentumSimilarities: s, alpha: Float(alpha), hardWeight: Float(1 - alpha),
                                                 positives: .targets(simTargets))
            }
            return (targets(simI2TM), targets(simT2IM), im, tm)
        }

        // ITC against the momentum features + queues (constants; gradient to the online features and τ).
        let simI2T = ContrastiveLoss.similarities(imageFeat, momentum: textFeatM, queue: textQueue, temp: temp)
        let simT2I = ContrastiveLoss.similarities(textFeat, momentum: imageFeatM, queue: imageQueue, temp: temp)
        let (lossI2T, lossT2I, lossITA) = ContrastiveLoss.loss(simI2T: simI2T, simT2I: simT2I, targetsI2T: targetsI2T, targetsT2I: targetsT2I)

        // Enqueue the gathered momentum features and ids, deferred to `commitEnqueue()` (the ITC
        // backward reads the pre-step queues in place).
        precondition(pendingEnqueue == nil, "forwardStep: the previous step's enqueue was not committed (call commitEnqueue() after backward)")
        pendingEnqueue = withNoGrad { (image: allGather(imageFeatM), text: allGather(textFeatM), ids: allGatherIds(batch.imageIds)) }

        // ITM: hard negatives from softmax(S[:, :B] + 1e-4) with same-image pairs zeroed.
        let exclusion = HardNegativeSampler.Exclusion.sameID(batch.imageIds)
        let offset = ALBEFRetrieval.negativeSamplingOffset
        var weights: (i2t: [[Float]], t2i: [[Float]])? = nil
        if keepActivations {
            weights = withNoGrad {
                (i2t: HardNegativeSampler.weights(simI2T, batch: b, offset: offset, exclusion: exclusion),
                 t2i: HardNegativeSampler.weights(simT2I, batch: b, offset: offset, exclusion: exclusion))
            }
        }
        let itm = ImageTextMatching.forward(bert: textBert, head: itmHead, textEmbeds: textEmbeds, attentionMask: batch.attentionMask,
                                            imageEmbeds: imageEmbeds, batch: b, length: l, cache: CrossAttentionCache()) {
            if let ni = injection.negativeImageIndex, let nt = injection.negativeTextIndex { return (ni, nt) }
            return withNoGrad {
                HardNegativeSampler.sample(simI2T: simI2T, simT2I: simT2I, batch: b, offset: offset, exclusion: exclusion, rng: &rng)
            }
        }

        var diag: [String: Float] = [:]
        diag["loss_i2t"] = lossI2T.item
        diag["loss_t2i"] = lossT2I.item
        diag["itm_accuracy"] = itm.accuracy
        diag["temp_used"] = temp.data[0]
        if keepActivations {
            acts["image_embeds"] = imageEmbeds; acts["text_embeds"] = textEmbeds
            acts["image_feat"] = imageFeat; acts["text_feat"] = textFeat
            acts["image_feat_m"] = imageFeatM; acts["text_feat_m"] = textFeatM
            acts["sim_targets"] = simTargets
            acts["sim_i2t_targets"] = targetsI2T; acts["sim_t2i_targets"] = targetsT2I
            acts["sim_i2t"] = simI2T; acts["sim_t2i"] = simT2I
            if let w = weights {
                acts["itm_weights_i2t"] = Tensor(w.i2t.flatMap { $0 }, shape: [b, b])
                acts["itm_weights_t2i"] = Tensor(w.t2i.flatMap { $0 }, shape: [b, b])
            }
            acts["fusion_pos_cls"] = itm.positiveCLS; acts["fusion_neg_cls"] = itm.negativeCLS
            acts["itm_logits"] = itm.logits
            acts["loss_ita"] = lossITA; acts["loss_itm"] = itm.loss
        }
        var out = RetrievalStepOutput(lossITA: lossITA, lossITM: itm.loss, total: lossITA + itm.loss, diagnostics: diag, activations: acts)
        out.idxAll = idxAll
        out.negativeImageIndex = itm.negativeImage
        out.negativeTextIndex = itm.negativeText
        return out
    }
}
