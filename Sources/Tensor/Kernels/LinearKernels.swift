/// Linear layer forward: `out[N,O] = inp[N,I] · weightᵀ + bias`, weight in PyTorch `[O, I]` layout.
///
/// One `sgemm` with transposed B; the bias is written first and the product added (beta = 1).
/// PyTorch counterpart: `torch.nn.functional.linear`.
public func linearForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>,
                          weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                          n: Int, inFeatures: Int, outFeatures: Int) {
    // out (N, O), inp (N, I), weight (O, I), bias (O)
    if let bias {
        for r in 0..<n { (out + r * outFeatures).update(from: bias, count: outFeatures) }
    }
    sgemm(transA: false, transB: true, m: n, n: outFeatures, k: inFeatures, a: inp, lda: inFeatures,
          b: weight, ldb: inFeatures, beta: bias == nil ? 0 : 1, c: out, ldc: outFeatures)
}

/// Linear layer backward, accumulating:
/// `dinp += dout · W`, `dweight += doutᵀ · inp`, `dbias += Σ_rows dout`.
public func linearBackward(dinp: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>?,
                           dbias: UnsafeMutablePointer<Float>?, dout: UnsafePointer<Float>,
                           inp: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                           n: Int, inFeatures: Int, outFeatures: Int) {
    // dout (N, O), inp (N, I), weight (O, I)
    if let dinp {
        sgemm(m: n, n: inFeatures, k: outFeatures, a: dout, lda: outFeatures, b: weight, ldb: inFeatures,
              beta: 1, c: dinp, ldc: inFeatures)
    }
    if let dweight {
        sgemm(transA: true, m: outFeatures, n: inFeatures, k: n, a: dout, lda: outFeatures, b: inp,
              ldb: inFeatures, beta: 1, c: dweight, ldc: inFeatures)
    }
    if let dbias {
        columnSums(into: dbias, dout, rows: n, cols: outFeatures)
    }
}

/// `acc[c] += Σ_r x[r, c]`, rows in order (deterministic).
@inline(__always)
public func columnSums(into acc: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, rows: Int, cols: Int) {
    for r in 0..<rows {
        let row = x + r * cols
        for c in 0..<cols { acc[c] += row[c] }
    }
}
