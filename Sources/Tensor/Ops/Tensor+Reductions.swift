extension Tensor {
    /// Splits `shape` around `axis` into (outer, n, inner).
    func axisSplit(_ axis: Int) -> (Int, Int, Int) {
        let ax = axis < 0 ? axis + rank : axis
        precondition(ax >= 0 && ax < rank, "reduction: axis \(axis) out of range for shape \(shape)")
        let outer = shape[..<ax].reduce(1, *), inner = shape[(ax + 1)...].reduce(1, *)
        return (outer, shape[ax], inner)
    }

    func reducedShape(_ axis: Int, keepDims: Bool) -> [Int] {
        let ax = axis < 0 ? axis + rank : axis
        var s = shape
        if keepDims { s[ax] = 1 } else { s.remove(at: ax) }
        return s
    }

    /// Sum along `axis`. PyTorch: `x.sum(axis, keepdim)`.
    public func sum(axis: Int, keepDims: Bool = false) -> Tensor {
        let (outer, n, inner) = axisSplit(axis)
        let out = Tensor(zeros: reducedShape(axis, keepDims: keepDims))
        for o in 0..<outer {
            for j in 0..<n {
                let x = data + (o * n + j) * inner, y = out.data + o * inner
                for i in 0..<inner { y[i] += x[i] }
            }
        }
        if Tensor.needsGrad(self) {
            out.record([self]) { r in
                let g = r.gradPointer, d = self.gradPointer
                for o in 0..<outer {
                    for j in 0..<n {
                        let dx = d + (o * n + j) * inner, gy = g + o * inner
                        for i in 0..<inner { dx[i] += gy[i] }
                    }
                }
            }
        }
        return out
    }

    /// Mean along `axis`.
    public func mean(axis: Int, keepDims: Bool = false) -> Tensor {
        let n = axisSplit(axis).1
        return sum(axis: axis, keepDims: keepDims) * (1 / Float(n))
    }

    /// Sum of every element (0-dim result).
    public func sum() -> Tensor { reshaped([count]).sum(axis: 0) }

    /// Mean of every element (0-dim result).
    public func mean() -> Tensor { sum() * (1 / Float(count)) }

    /// Maximum along `axis`; the gradient goes to the first maximal element.
    public func max(axis: Int, keepDims: Bool = false) -> Tensor {
        let (outer, n, inner) = axisSplit(axis)
        let out = Tensor(uninitialized: reducedShape(axis, keepDims: keepDims))
        var arg = [Int32](repeating: 0, count: outer * inner)
        for o in 0..<outer {
            for i in 0..<inner {
                var best = -Float.infinity, bj = 0
                for j in 0..<n {
                    let v = data[(o * n + j) * inner + i]
                    if j == 0 || v > best { best = v; bj = j }
                }
                out.data[o * inner + i] = best
                arg[o * inner + i] = Int32(bj)
            }
        }
        if Tensor.needsGrad(self) {
            out.record([self]) { r in
                let g = r.gradPointer, d = self.gradPointer
                for o in 0..<outer {
                    for i in 0..<inner {
                        d[(o * n + Int(arg[o * inner + i])) * inner + i] += g[o * inner + i]
                    }
                }
            }
        }
        return out
    }
}
