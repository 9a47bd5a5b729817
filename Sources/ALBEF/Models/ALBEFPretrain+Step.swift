import NN
import Tensor

extension ALBEFPretrain {
    /// The ALBEF pretraining forward (spec §2.1), returning the three losses on the tape.
    ///
    /// - Parameters:
    ///   - alpha: distillation weight for this iteration (the ramp is the caller's).
    ///   - rng: source of the ITM negatives and the MLM mask (in that order).
    ///   - injection: externally supplied negatives / MLM mask (parity tests).
    ///   - updateMomentum: apply the EMA update of the momentum encoders first (ALBEF does at
    ///     every forward; with gradient accumulation, only the first micro-step of a step does).
    ///   - allGather: gathers `[B, E]` momentum features from every rank in rank order
    ///     (identity for a single process).
    ///   - keepActivations: keep named intermediates in the output (selfcheck).
    public func forwardStep(_ batch: PretrainBatch, alpha: Float, rng: inout RandomGenerator,
                            injection: StepInjection = StepInjection(),
                            updateMomentum: Bool = true,
                            allGather: (Tensor) -> Tensor = { $0 },
                            keepActivations: Bool = false) -> StepOutput {
        let b = batch.batchSize, l = batch.length
        let c = config
        var acts: [String: Tensor] = [:]
        // 1. temp ← clamp(temp, 0.001, 0.5), in place.
        temp.data[0] = min(max(temp.data[0], 0.001), 0.5)

        // The momentum update first, before any online GEMM (same result: `momentumUpdate`).
        if updateMomentum { withNoGrad { momentumUpdate() } }

        // 2–3. Online image and text features.
        let (imageEmbeds, imageFeat) = encodeImage(batch.images)
        let (textEmbeds, textFeat) = encodeText(ids: batch.inputIds, attentionMask: batch.attentionMask, batch: b, length: l)

        // 4. Momentum features and soft ITC targets (no grad); the positives are the diagonal.
        let (imageEmbedsM, targetsI2T, targetsT2I, imageFeatM, textFeatM) = withNoGrad {
            let (xm, im, hm, tm) = momentumFeatures(images: batch.images, ids: batch.inputIds, attentionMask: batch.attentionMask,
                                                    batch: b, length: l)
            if keepActivations { acts["image_embeds_m"] = xm; acts["text_embeds_m"] = hm }
            let tempValue = Tensor(scalar: temp.data[0])
            let simI2TM = ContrastiveLoss.similarities(im, momentum: tm, queue: textQueue, temp: tempValue)   // [B, B+Q]
            let simT2IM = ContrastiveLoss.similarities(tm, momentum: im, queue: imageQueue, temp: tempValue)
            func targets(_ s: Tensor) -> Tensor {
                ContrastiveLoss.distilledTargets(momentumSimilarities: s, alpha: alpha, hardWeight: 1 - alpha, positives: .diagonal)
            }
            return (xm, targets(simI2TM), targets(simT2IM), im, tm)
        }

        // 5–6. ITC against the momentum features + queue (constants).
        let simI2T = ContrastiveLoss.similarities(imageFeat, momentum: textFeatM, queue: textQueue, temp: temp)
        let simT2I = ContrastiveLoss.similarities(textFeat, momentum: imageFeatM, queue: imageQueue, temp: temp)
        let (lossI2T, lossT2I, lossITA) = ContrastiveLoss.loss(simI2T: simI2T, simT2I: simT2I, targetsI2T: targetsI2T, targetsT2I: targetsT2I)

        // 7. Enqueue the gathered momentum features. Nothing after ITC reads the queue, so the
        // write is deferred to `commitEnqueue()` (after backward, whose ITC gradient reads the
        // pre-step queue in place instead of a copy).
        precondition(pendingEnqueue == nil, "forwardStep: the previous step's enqueue was not committed (call commitEnqueue() after backward)")
        pendingEnqueue = withNoGrad { (allGather(imageFeatM), allGather(textFeatM)) }

        // 8–12. ITM: positive pairs, hard negatives sampled from the in-batch similarities
        // (diagonal excluded; or injected), negative pairs.
        let crossKV = CrossAttentionCache()
        let itm = ImageTextMatching.forward(bert: textBert, head: itmHead, textEmbeds: textEmbeds, attentionMask: batch.attentionMask,
                                            imageEmbeds: imageEmbeds, batch: b, length: l, cache: crossKV) {
            if let ni = injection.negativeImageIndex, let nt = injection.negativeTextIndex { return (ni, nt) }
            return withNoGrad {
                HardNegativeSampler.sample(simI2T: simI2T, simT2I: simT2I, batch: b, exclusion: .diagonal, rng: &rng)
            }
        }
        let itmLogits = itm.logits
        let lossITM = itm.loss
        let negImage = itm.negativeImage, negText = itm.negativeText

        // 13. MLM mask.
        let mlmIds: [Int32], labels: [Int32]
        if let mi = injection.mlmInputIds, let ml = injection.mlmLabels {
            mlmIds = mi
            labels = ml
        } else {
            (mlmIds, labels) = maskTokens(ids: batch.inputIds, batch: b, length: l, vocabSize: c.bert.vocabSize,
                                          probability: c.mlmProbability, rng: &rng,
                                          special: SpecialTokenIds(pad: c.padId, cls: c.clsId, mask: c.maskId))
        }
        let masked = labels.indices.filter { labels[$0] != -100 }
        let maskedLabels = masked.map { labels[$0] }
        let v = c.bert.vocabSize

        // 14. Momentum MLM soft targets at the masked positions (no grad).
        let softTargets: Tensor? = withNoGrad {
            let hm = momentumForward {
                textEncoderM.bert(ids: mlmIds, attentionMask: batch.attentionMask, batch: b, length: l,
                                  image: imageEmbedsM, mode: .multimodal)
            }
            guard !masked.isEmpty else { return nil }
            let logitsM = momentumForward { textEncoderM.head(hm.reshaped([b * l, -1]).gatherRows(masked)) }
            if keepActivations { acts["mlm_logits_m_masked"] = logitsM }
            return logitsM.softmax()
        }
        // 15. Online MLM, computed only at masked positions (the others contribute nothing).
        // The fusion layers' cross-attention keys/values of `imageEmbeds` are the positive ITM
        // pass's (same weights, same image tokens): reused, not projected and kept a second time.
        crossKV.rows = Array(0..<b)
        let hidden = textEncoder.bert(ids: mlmIds, attentionMask: batch.attentionMask, batch: b, length: l,
                                      image: imageEmbeds, mode: .multimodal, cache: crossKV)
        let lossMLM: Tensor
        var diag: [String: Float] = [:]
        if let softTargets {
            let logits = textEncoder.head(hidden.reshaped([b * l, -1]).gatherRows(masked))
            let ce = logits.crossEntropy(labels: maskedLabels)
            let distill = logits.softCrossEntropy(targets: softTargets)
            lossMLM = ce * (1 - alpha) + distill * alpha
            diag["loss_mlm_ce"] = ce.item
            diag["loss_mlm_distill"] = distill.item
            if keepActivations { acts["mlm_logits_masked"] = logits }
        } else {
            // No masked token in this batch: the reference would divide 0/0; we contribute 0.
            lossMLM = (hidden.sum() * 0)
            diag["loss_mlm_ce"] = 0
            diag["loss_mlm_distill"] = 0
        }
        _ = v
        diag["loss_i2t"] = lossI2T.item
        diag["loss_t2i"] = lossT2I.item
        diag["num_masked_tokens"] = Float(masked.count)
        diag["temp_used"] = temp.data[0]
        diag["itm_accuracy"] = itm.accuracy

        if keepActivations {
            acts["image_embeds"] = imageEmbeds; acts["text_embeds"] = textEmbeds
            acts["image_feat"] = imageFeat; acts["text_feat"] = textFeat
            acts["image_feat_m"] = imageFeatM; acts["text_feat_m"] = textFeatM
            acts["sim_i2t"] = simI2T; acts["sim_t2i"] = simT2I
            acts["fusion_pos_cls"] = itm.positiveCLS; acts["fusion_neg_cls"] = itm.negativeCLS
            acts["itm_logits"] = itmLogits; acts["mlm_last_hidden"] = hidden
        }
        let total = lossMLM + lossITA + lossITM
        var out = StepOutput(lossITA: lossITA, lossITM: lossITM, lossMLM: lossMLM, total: total, diagnostics: diag, activations: acts)
        out.negativeImageIndex = negImage
        out.negativeTextIndex = negText
        return out
    }
}
