extension Tensor {
    /// ITC similarities against local features and a feature queue, without materialising
    /// `[localᵀ | queue]`: `[B, E]` features → `[B, B' + Q]` = `[f·localᵀ | f·queue] · scale`.
    /// `local` (`[B', E]`) and `queue` (`[E, Q]`) are constants; gradients flow to `self` only.
    /// PyTorch counterpart: `feat @ torch.cat([local.t(), queue], 1) / temp` (ALBEF's sim_i2t).
    public func similarity(local: Tensor, queue: Tensor) -> Tensor {
        let b = shape[0], e = shape[1], bl = local.shape[0], q = queue.shape[1]
        precondition(local.shape[1] == e && queue.shape[0] == e, "similarity: feat \(shape), local \(local.shape), queue \(queue.shape)")
        let n = bl + q
        let out = Tensor(uninitialized: [b, n])
        sgemm(transB: true, m: b, n: bl, k: e, a: data, lda: e, b: local.data, ldb: e, c: out.data, ldc: n)
        sgemm(m: b, n: q, k: e, a: data, lda: e, b: queue.data, ldb: q, c: out.data + bl, ldc: n)
        if Tensor.needsGrad(self) {
            out.record([self]) { o in
                let g = o.gradPointer, d = self.gradPointer
                sgemm(m: b, n: e, k: bl, a: g, lda: n, b: local.data, ldb: e, beta: 1, c: d, ldc: e)
                sgemm(transB: true, m: b, n: e, k: q, a: g + bl, lda: n, b: queue.data, ldb: q, beta: 1, c: d, ldc: e)
            }
        }
        return out
    }
}
