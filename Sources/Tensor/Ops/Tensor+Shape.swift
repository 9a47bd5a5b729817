extension Tensor {
    /// Same elements, new shape (one dimension may be −1). Shares storage.
    /// PyTorch: `x.reshape(shape)` on a contiguous tensor (a view).
    public func reshaped(_ newShape: [Int]) -> Tensor {
        var s = newShape
        if let i = s.firstIndex(of: -1) {
            let known = s.enumerated().filter { $0.offset != i }.map(\.element).reduce(1, *)
            s[i] = known == 0 ? 0 : count / known
        }
        precondition(s.reduce(1, *) == count, "reshaped: \(shape) → \(newShape): element counts differ")
        let out = Tensor(shape: s, storage: storage)
        if Tensor.needsGrad(self) {
            out.record([self]) { o in
                let g = o.gradPointer, d = self.gradPointer
                for i in 0..<self.count { d[i] += g[i] }
            }
        }
        return out
    }

    /// Reorders dimensions (copying into a contiguous result). PyTorch: `x.permute(dims).contiguous()`.
    public func permuted(_ dims: [Int]) -> Tensor {
        precondition(dims.sorted() == Array(0..<rank), "permuted: \(dims) is not a permutation of 0..<\(rank)")
        let outShape = dims.map { shape[$0] }
        var inStrides = [Int](repeating: 1, count: rank)
        for i in stride(from: rank - 2, through: 0, by: -1) { inStrides[i] = inStrides[i + 1] * shape[i + 1] }
        let srcStrides = dims.map { inStrides[$0] }
        let zero = [Int](repeating: 0, count: rank)
        let out = Tensor(uninitialized: outShape)
        let x = data, y = out.data
        forEachBroadcast(outShape, srcStrides, zero) { o, i, _ in y[o] = x[i] }
        if Tensor.needsGrad(self) {
            out.record([self]) { r in
                let g = r.gradPointer, d = self.gradPointer
                forEachBroadcast(outShape, srcStrides, zero) { o, i, _ in d[i] += g[o] }
            }
        }
        return out
    }

    /// Swaps two dimensions. PyTorch: `x.transpose(a, b).contiguous()`.
    public func transposed(_ a: Int = -2, _ b: Int = -1) -> Tensor {
        var dims = Array(0..<rank)
        dims.swapAt(a < 0 ? a + rank : a, b < 0 ? b + rank : b)
        return permuted(dims)
    }

    /// Elements `range` along `axis` (copy). PyTorch: `x.narrow(axis, start, length)`.
    public func slice(axis: Int, _ range: Range<Int>) -> Tensor {
        let (outer, n, inner) = axisSplit(axis)
        precondition(range.lowerBound >= 0 && range.upperBound <= n, "slice: \(range) out of 0..<\(n) on axis \(axis) of \(shape)")
        let ax = axis < 0 ? axis + rank : axis
        var s = shape
        s[ax] = range.count
        let out = Tensor(uninitialized: s)
        let len = range.count * inner
        for o in 0..<outer {
            (out.data + o * len).update(from: data + (o * n + range.lowerBound) * inner, count: len)
        }
        if Tensor.needsGrad(self) {
            out.record([self]) { r in
                let g = r.gradPointer, d = self.gradPointer
                for o in 0..<outer {
                    let dd = d + (o * n + range.lowerBound) * inner, gg = g + o * len
                    for i in 0..<len { dd[i] += gg[i] }
                }
            }
        }
        return out
    }

    /// Index `i` along `axis`, dropping that axis. PyTorch: `x.select(axis, i)` / `x[:, 0]`.
    public func select(axis: Int, _ i: Int) -> Tensor {
        let ax = axis < 0 ? axis + rank : axis
        var s = shape
        s.remove(at: ax)
        return slice(axis: ax, i..<(i + 1)).reshaped(s)
    }

    /// Concatenation along `axis`. PyTorch: `torch.cat(tensors, axis)`.
    public static func concat(_ tensors: [Tensor], axis: Int = 0) -> Tensor {
        precondition(!tensors.isEmpty, "concat: no tensors")
        let first = tensors[0]
        let ax = axis < 0 ? axis + first.rank : axis
        for t in tensors {
            precondition(t.rank == first.rank && (0..<t.rank).allSatisfy { $0 == ax || t.shape[$0] == first.shape[$0] },
                         "concat: shapes \(tensors.map(\.shape)) differ outside axis \(axis)")
        }
        let outer = first.shape[..<ax].reduce(1, *), inner = first.shape[(ax + 1)...].reduce(1, *)
        let total = tensors.reduce(0) { $0 + $1.shape[ax] }
        var s = first.shape
        s[ax] = total
        let out = Tensor(uninitialized: s)
        var offset = 0
        var offsets: [Int] = []
        for t in tensors {
            offsets.append(offset)
            let len = t.shape[ax] * inner
            for o in 0..<outer {
                (out.data + (o * total + offset) * inner).update(from: t.data + o * len, count: len)
            }
            offset += t.shape[ax]
        }
        if GradMode.isEnabled, tensors.contains(where: \.requiresGrad) {
            out.record(tensors) { r in
                let g = r.gradPointer
                for (t, off) in zip(tensors, offsets) where t.requiresGrad {
                    let d = t.gradPointer, len = t.shape[ax] * inner
                    for o in 0..<outer {
                        let gg = g + (o * total + off) * inner, dd = d + o * len
                        for i in 0..<len { dd[i] += gg[i] }
                    }
                }
            }
        }
        return out
    }

    /// Rows `indices` of the first axis (repeats allowed). PyTorch: `x[indices]` / `index_select(0, …)`.
    /// Gradients scatter-add back in index order.
    public func gatherRows(_ indices: [Int]) -> Tensor {
        let n = shape[0], inner = count / Swift.max(n, 1)
        var s = shape
        s[0] = indices.count
        let out = Tensor(uninitialized: s)
        for (k, i) in indices.enumerated() {
            precondition(i >= 0 && i < n, "gatherRows: index \(i) out of range 0..<\(n)")
            (out.data + k * inner).update(from: data + i * inner, count: inner)
        }
        if Tensor.needsGrad(self) {
            out.record([self]) { r in
                let g = r.gradPointer, d = self.gradPointer
                for (k, i) in indices.enumerated() {
                    let dd = d + i * inner, gg = g + k * inner
                    for j in 0..<inner { dd[j] += gg[j] }
                }
            }
        }
        return out
    }
}
