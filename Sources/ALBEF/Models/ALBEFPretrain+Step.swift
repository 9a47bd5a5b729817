import DataPipeline
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

        // 2–3. Online image and text features.
        let imageEmbeds = visualEncoder(batch.images)
        let imageFeat = visionProj(imageEmbeds.select(axis: 1, 0)).l2Normalized()
        let textEmbeds = textEncoder.bert(ids: batch.inputIds, attentionMask: batch.attentionMask, batch: b, length: l, mode: .text)
        let textFeat = textProj(textEmbeds.select(axis: 1, 0)).l2Normalized()

        // 4. Momentum features and soft ITC targets (no grad).
        let (imageEmbedsM, targetsI2T, targetsT2I, imageFeatM, textFeatM) = withNoGrad {
            if updateMomentum { momentumUpdate() }
            let xm = visualEncoderM(batch.images)
            let im = visionProjM(xm.select(axis: 1, 0)).l2Normalized()
            let hm = textEncoderM.bert(ids: batch.inputIds, attentionMask: batch.attentionMask, batch: b, length: l, mode: .text)
            let tm = textProjM(hm.select(axis: 1, 0)).l2Normalized()
            if keepActivations { acts["image_embeds_m"] = xm; acts["text_embeds_m"] = hm }
            let tempValue = Tensor(scalar: temp.data[0])
            let simI2TM = im.similarity(local: tm, queue: textQueue) / tempValue   // [B, B+Q]
            let simT2IM = tm.similarity(local: im, queue: imageQueue) / tempValue
            func targets(_ s: Tensor) -> Tensor {
                let p = s.softmax()
                let n = s.shape[1]
                for r in 0..<b {
                    for j in 0..<n { p.data[r * n + j] *= alpha }
                    p.data[r * n + r] += 1 - alpha
                }
                return p
            }
            return (xm, targets(simI2TM), targets(simT2IM), im, tm)
        }

        // 5–6. ITC against the momentum features + queue (constants).
        let simI2T = imageFeat.similarity(local: textFeatM, queue: textQueue) / temp
        let simT2I = textFeat.similarity(local: imageFeatM, queue: imageQueue) / temp
        let lossI2T = simI2T.softCrossEntropy(targets: targetsI2T)
        let lossT2I = simT2I.softCrossEntropy(targets: targetsT2I)
        let lossITA = (lossI2T + lossT2I) * 0.5

        // 7. Enqueue the gathered momentum features. Nothing after ITC reads the queue, so the
        // write is deferred to `commitEnqueue()` (after backward, whose ITC gradient reads the
        // pre-step queue in place instead of a copy).
        precondition(pendingEnqueue == nil, "forwardStep: the previous step's enqueue was not committed (call commitEnqueue() after backward)")
        pendingEnqueue = withNoGrad { (allGather(imageFeatM), allGather(textFeatM)) }

        // 8. Positive pairs through the fusion layers.
        let crossKV = CrossAttentionCache()
        let outputPos = textEncoder.bert(hidden: textEmbeds, attentionMask: batch.attentionMask, batch: b, length: l,
                                         image: imageEmbeds, mode: .fusion, cache: crossKV)
        // 9–10. Hard negatives sampled from the in-batch similarities (diagonal excluded).
        let negImage: [Int], negText: [Int]
        if let ni = injection.negativeImageIndex, let nt = injection.negativeTextIndex {
            negImage = ni
            negText = nt
        } else {
            (negImage, negText) = withNoGrad {
                let n = simI2T.shape[1]
                func weights(_ s: Tensor) -> [[Float]] {
                    (0..<b).map { r in
                        var row = Array(UnsafeBufferPointer(start: s.data + r * n, count: b))
                        let mx = row.max() ?? 0
                        var sum: Float = 0
                        for j in 0..<b { row[j] = expf(row[j] - mx); sum += row[j] }
                        for j in 0..<b { row[j] /= sum }
                        row[r] = 0
                        return row
                    }
                }
                let wI2T = weights(simI2T), wT2I = weights(simT2I)
                func draw(_ w: [Float], _ r: Int) -> Int {
                    if let k = rng.categorical(weights: w) { return k }
                    // Degenerate weights (all zero or NaN; the reference raises here): pick any other index.
                    return b > 1 ? (r + 1 + rng.int(below: b - 1)) % b : r
                }
                let ni = (0..<b).map { draw(wT2I[$0], $0) }
                let nt = (0..<b).map { draw(wI2T[$0], $0) }
                return (ni, nt)
            }
        }
        // 11. Negative pairs: (text b, negative image) then (negative text, image b).
        let textEmbedsNeg = textEmbeds.gatherRows(negText)
        var textAttsNeg = [Int32]()
        textAttsNeg.reserveCapacity(b * l)
        for k in negText { textAttsNeg += batch.attentionMask[(k * l)..<((k + 1) * l)] }
        let textAll = Tensor.concat([textEmbeds, textEmbedsNeg], axis: 0)
        // Images [negative images ; images] = imageEmbeds[rows]; their cross-attention keys and
        // values are the positive pass's, gathered (no re-projection of the image tokens).
        crossKV.rows = negImage + Array(0..<b)
        let outputNeg = textEncoder.bert(hidden: textAll, attentionMask: batch.attentionMask + textAttsNeg, batch: 2 * b,
                                         length: l, image: imageEmbeds, mode: .fusion, cache: crossKV)
        let vl = Tensor.concat([outputPos.select(axis: 1, 0), outputNeg.select(axis: 1, 0)], axis: 0)
        let itmLogits = itmHead(vl)
        let itmLabels = [Int32](repeating: 1, count: b) + [Int32](repeating: 0, count: 2 * b)
        let lossITM = itmLogits.crossEntropy(labels: itmLabels)

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
            let hm = textEncoderM.bert(ids: mlmIds, attentionMask: batch.attentionMask, batch: b, length: l,
                                       image: imageEmbedsM, mode: .multimodal)
            guard !masked.isEmpty else { return nil }
            let logitsM = textEncoderM.head(hm.reshaped([b * l, -1]).gatherRows(masked))
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
        var correct = 0
        for r in 0..<(3 * b) {
            let pred: Int32 = itmLogits.data[r * 2 + 1] > itmLogits.data[r * 2] ? 1 : 0
            if pred == itmLabels[r] { correct += 1 }
        }
        diag["itm_accuracy"] = Float(correct) / Float(3 * b)

        if keepActivations {
            acts["image_embeds"] = imageEmbeds; acts["text_embeds"] = textEmbeds
            acts["image_feat"] = imageFeat; acts["text_feat"] = textFeat
            acts["image_feat_m"] = imageFeatM; acts["text_feat_m"] = textFeatM
            acts["sim_i2t"] = simI2T; acts["sim_t2i"] = simT2I
            acts["fusion_pos_cls"] = outputPos.select(axis: 1, 0); acts["fusion_neg_cls"] = outputNeg.select(axis: 1, 0)
            acts["itm_logits"] = itmLogits; acts["mlm_last_hidden"] = hidden
        }
        let total = lossMLM + lossITA + lossITM
        var out = StepOutput(lossITA: lossITA, lossITM: lossITM, lossMLM: lossMLM, total: total, diagnostics: diag, activations: acts)
        out.negativeImageIndex = negImage
        out.negativeTextIndex = negText
        return out
    }
}

#if canImport(Glibc)
import Glibc
#endif
