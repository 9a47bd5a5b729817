extension Tensor {
    /// `y = x · Wᵀ + b` over the last dimension: x `[..., I]`, weight `[O, I]`, bias `[O]` → `[..., O]`.
    /// PyTorch counterpart: `F.linear`.
    public func linear(_ weight: Tensor, _ bias: Tensor?) -> Tensor {
        let (inF, outF, n) = Tensor.linearDimensions("linear", input: shape, weight, bias)
        let out = Tensor(uninitialized: Array(shape.dropLast()) + [outF])
        let bf16 = MatmulPrecision.isBF16
        Tensor.linearForwardInPrecision(out: out.data, inp: data, weight: weight, bias: bias?.data, n: n,
                                        inFeatures: inF, outFeatures: outF, bf16: bf16)
        if Tensor.needsGrad(self, weight, bias) {
            out.record([self, weight] + (bias.map { [$0] } ?? []), readsOutput: false) { o in
                Tensor.linearBackwardInPrecision(dinp: self.gradIfNeeded, dweight: weight.gradIfNeeded, dbias: bias?.gradIfNeeded,
                                                 dout: o.gradPointer, inp: self.data, weight: weight, n: n,
                                                 inFeatures: inF, outFeatures: outF, bf16: bf16)
            }
        }
        return out
    }

    /// Matrix product over the last two dimensions with equal leading (batch) dimensions:
    /// `[..., M, K] · [..., K, N] → [..., M, N]`; `transposeB` reads b as `[..., N, K]`.
    /// A 2-D `b` is shared by every batch entry. PyTorch counterpart: `torch.matmul`.
    public func matmul(_ b: Tensor, transposeB: Bool = false) -> Tensor {
        precondition(rank >= 2 && b.rank >= 2, "matmul: needs rank ≥ 2, got \(shape) and \(b.shape)")
        let m = shape[rank - 2], k = shape[rank - 1]
        let bk = transposeB ? b.shape[b.rank - 1] : b.shape[b.rank - 2]
        let n = transposeB ? b.shape[b.rank - 2] : b.shape[b.rank - 1]
        precondition(k == bk, "matmul: inner dimensions differ: \(shape) · \(b.shape)\(transposeB ? "ᵀ" : "")")
        let batchA = Array(shape.dropLast(2)), batchB = Array(b.shape.dropLast(2))
        let shared = batchB.isEmpty
        precondition(shared || batchA == batchB, "matmul: batch dims differ: \(batchA) vs \(batchB)")
        let nb = batchA.reduce(1, *)
        let out = Tensor(uninitialized: batchA + [m, n])
        let a = self
        let ldb = transposeB ? k : n
        for i in 0..<nb {
            let bo = shared ? 0 : i * k * n
            sgemm(transB: transposeB, m: m, n: n, k: k, a: a.data + i * m * k, lda: k, b: b.data + bo, ldb: ldb,
                  c: out.data + i * m * n, ldc: n)
        }
        if Tensor.needsGrad(a, b) {
            out.record([a, b]) { o in
                let g = o.gradPointer
                for i in 0..<nb {
                    let bo = shared ? 0 : i * k * n
                    let gi = g + i * m * n
                    if let da = a.gradIfNeeded {
                        // dA = dC · op(B)ᵀ
                        sgemm(transB: !transposeB, m: m, n: k, k: n, a: gi, lda: n, b: b.data + bo, ldb: ldb,
                              beta: 1, c: da + i * m * k, ldc: k)
                    }
                    if let db = b.gradIfNeeded {
                        if transposeB {  // dB[N,K] += dCᵀ · A
                            sgemm(transA: true, m: n, n: k, k: m, a: gi, lda: n, b: a.data + i * m * k, ldb: k,
                                  beta: 1, c: db + bo, ldc: k)
                        } else {  // dB[K,N] += Aᵀ · dC
                            sgemm(transA: true, m: k, n: n, k: m, a: a.data + i * m * k, lda: k, b: gi, ldb: n,
                                  beta: 1, c: db + bo, ldc: n)
                        }
                    }
                }
            }
        }
        return out
    }
}
