/// Linear layer forward in bf16 mixed precision: `out[N,O] = bf16(inp)[N,I] · bf16(W)ᵀ + bias`,
/// products accumulated in fp32 and the result fp32; the bias is added in fp32 (written first,
/// the product added with beta = 1). `weight` is the `[O, I]` weight in bf16, rows `ldw` apart.
/// PyTorch counterpart: `F.linear` under `torch.autocast("cpu", dtype=torch.bfloat16)`.
public func linearForwardBF16(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>,
                              weight: UnsafePointer<UInt16>, ldw: Int, bias: UnsafePointer<Float>?,
                              n: Int, inFeatures: Int, outFeatures: Int) {
    let x = BF16Buffer(converting: inp, count: n * inFeatures)
    linearForwardBF16(out: out, inp: UnsafePointer(x.pointer), weight: weight, ldw: ldw, bias: bias, n: n,
                      inFeatures: inFeatures, outFeatures: outFeatures)
    withExtendedLifetime(x) {}
}

/// `linearForwardBF16` on an input already rounded to bf16 (`[N, I]`, dense).
public func linearForwardBF16(out: UnsafeMutablePointer<Float>, inp x: UnsafePointer<UInt16>,
                              weight: UnsafePointer<UInt16>, ldw: Int, bias: UnsafePointer<Float>?,
                              n: Int, inFeatures: Int, outFeatures: Int) {
    // out (N, O), inp (N, I) bf16, weight (O, I) bf16, bias (O)
    if let bias {
        for r in 0..<n { (out + r * outFeatures).update(from: bias, count: outFeatures) }
    }
    bf16gemm(transB: true, m: n, n: outFeatures, k: inFeatures, a: x, lda: inFeatures,
             b: weight, ldb: ldw, beta: bias == nil ? 0 : 1, c: out, ldc: outFeatures)
}

/// Linear layer backward in bf16 mixed precision, accumulating into fp32 gradients:
/// `dinp += bf16(dout) · bf16(W)`, `dweight += bf16(dout)ᵀ · bf16(inp)`, `dbias += Σ_rows dout`
/// (the bias gradient from the fp32 `dout`, as autocast's fp32 reduction). `weight` (the `[O, I]`
/// weight in bf16, rows `ldw` apart) is needed only with `dinp`. `inpBF16`: the input already
/// rounded to bf16 (dense `[N, I]`), read by the weight-gradient GEMM instead of `inp`.
public func linearBackwardBF16(dinp: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>?,
                               dbias: UnsafeMutablePointer<Float>?, dout: UnsafePointer<Float>,
                               inp: UnsafePointer<Float>, inpBF16: UnsafePointer<UInt16>? = nil,
                               weight: UnsafePointer<UInt16>?, ldw: Int,
                               n: Int, inFeatures: Int, outFeatures: Int) {
    precondition(dinp == nil || weight != nil, "linearBackwardBF16: dinp needs the bf16 weight")
    // dout (N, O) fp32, inp (N, I) fp32, weight (O, I) bf16
    if dinp != nil || dweight != nil {
        let g = BF16Buffer(converting: dout, count: n * outFeatures)
        if let dinp, let weight {
            bf16gemm(m: n, n: inFeatures, k: outFeatures, a: g.pointer, lda: outFeatures, b: weight, ldb: ldw,
                     beta: 1, c: dinp, ldc: inFeatures)
        }
        if let dweight {
            let x = inpBF16 == nil ? BF16Buffer(converting: inp, count: n * inFeatures) : nil
            bf16gemm(transA: true, m: outFeatures, n: inFeatures, k: n, a: g.pointer, lda: outFeatures,
                     b: inpBF16 ?? UnsafePointer(x!.pointer), ldb: inFeatures, beta: 1, c: dweight, ldc: inFeatures)
            withExtendedLifetime(x) {}
        }
        withExtendedLifetime(g) {}
    }
    if let dbias {
        columnSums(into: dbias, dout, rows: n, cols: outFeatures)
    }
}
