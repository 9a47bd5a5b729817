/// The linear kernels in the precision `MatmulPrecision.current` selects: fp32 calls
/// `linearForward` / `linearBackward` exactly as before bf16 existed (bit-identical), bf16 calls
/// their mixed-precision counterparts with the weight's cached bf16 copy (`BF16Weights`).
/// Every linear op (`linear`, `geluLinear`, `layerNormLinear`, `addingLinear`) goes through here.
extension Tensor {
    /// `out[N,O] = inp[N,I] · weightᵀ + bias` in the current precision.
    /// `bf16` is `MatmulPrecision.isBF16` as read when the op was recorded (forward and backward
    /// of one op run in the precision of its forward).
    /// `inpBF16`: the input already rounded to bf16 (bf16 only; `inp` is then not read).
    static func linearForwardInPrecision(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>,
                                         inpBF16: UnsafePointer<UInt16>? = nil, weight: Tensor,
                                         bias: UnsafePointer<Float>?, n: Int, inFeatures: Int, outFeatures: Int, bf16: Bool) {
        precondition(inpBF16 == nil || bf16, "linearForwardInPrecision: a bf16 input in fp32 mode")
        if bf16 {
            let w = BF16Weights.operand(weight, cols: inFeatures, backward: false)
            if let inpBF16 {
                linearForwardBF16(out: out, inp: inpBF16, weight: w.pointer, ldw: w.ld, bias: bias, n: n, inFeatures: inFeatures,
                                  outFeatures: outFeatures)
            } else {
                linearForwardBF16(out: out, inp: inp, weight: w.pointer, ldw: w.ld, bias: bias, n: n, inFeatures: inFeatures,
                                  outFeatures: outFeatures)
            }
            withExtendedLifetime(w.owner) {}
        } else {
            BF16Weights.join(weight.data)
            linearForward(out: out, inp: inp, weight: weight.data, bias: bias, n: n, inFeatures: inFeatures,
                          outFeatures: outFeatures)
        }
    }

    /// `dinp += dout·W`, `dweight += doutᵀ·inp`, `dbias += Σ dout` in the current precision; in
    /// bf16 the weight gradient runs in fp32 when `weight.weightGradFP32` (the learning policy,
    /// `bf16_fp32_weight_grads`). `inpBF16`: the input already rounded to bf16, read by a bf16
    /// weight-gradient GEMM instead of `inp` (only when `weightGradientInBF16`).
    static func linearBackwardInPrecision(dinp: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>?,
                                          dbias: UnsafeMutablePointer<Float>?, dout: UnsafePointer<Float>,
                                          inp: UnsafePointer<Float>, inpBF16: UnsafePointer<UInt16>? = nil,
                                          weight: Tensor, n: Int, inFeatures: Int, outFeatures: Int, bf16: Bool) {
        // Each of the two GEMMs in bf16 unless an ablation keeps it in fp32 (`backward-fp32`: both).
        let ablatedBoth = bf16 && MatmulPrecision.ablated("backward-fp32")
        let dinpBF16 = bf16 && !ablatedBoth && !MatmulPrecision.ablated("backward-dinp-fp32")
        let dweightBF16 = weightGradientInBF16(weight, bf16: bf16)
        precondition(inpBF16 == nil || dweightBF16, "linearBackwardInPrecision: a bf16 input for an fp32 weight gradient")
        // The bf16 weight is only read for dinp (dweight reads dout and inp); its lookup marks the
        // backward pass for the weight cache, else this does.
        if bf16 && !(dinpBF16 && dinp != nil) { BF16Weights.noteBackward() }
        func gemms(bf16: Bool, dinp: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>?, dbias: UnsafeMutablePointer<Float>?) {
            if bf16 {
                let w = dinp == nil ? nil : BF16Weights.operand(weight, cols: inFeatures, backward: true)
                linearBackwardBF16(dinp: dinp, dweight: dweight, dbias: dbias, dout: dout, inp: inp, inpBF16: inpBF16,
                                   weight: w?.pointer, ldw: w?.ld ?? inFeatures, n: n,
                                   inFeatures: inFeatures, outFeatures: outFeatures)
                withExtendedLifetime(w?.owner) {}
            } else {
                if dinp != nil { BF16Weights.join(weight.data) }
                linearBackward(dinp: dinp, dweight: dweight, dbias: dbias, dout: dout, inp: inp, weight: weight.data, n: n,
                               inFeatures: inFeatures, outFeatures: outFeatures)
            }
        }
        if dinpBF16 == dweightBF16 {
            gemms(bf16: dinpBF16, dinp: dinp, dweight: dweight, dbias: dbias)
        } else {
            gemms(bf16: dinpBF16, dinp: dinp, dweight: nil, dbias: nil)
            gemms(bf16: dweightBF16, dinp: nil, dweight: dweight, dbias: dbias)
        }
    }

    /// Whether a linear layer's weight-gradient GEMM (`doutᵀ·inp`) runs in bf16: bf16 mode, the
    /// weight not flagged `weightGradFP32`, no ablation keeping it (or every backward GEMM) in fp32.
    static func weightGradientInBF16(_ weight: Tensor, bf16: Bool) -> Bool {
        bf16 && !MatmulPrecision.ablated("backward-fp32") && !weight.weightGradFP32 && !MatmulPrecision.ablated("backward-dweight-fp32")
    }
}
