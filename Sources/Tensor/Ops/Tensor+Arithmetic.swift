/// Broadcast shape of two shapes (NumPy/PyTorch rules: align right, 1 stretches).
public func broadcastShape(_ a: [Int], _ b: [Int]) -> [Int] {
    let n = max(a.count, b.count)
    var out = [Int](repeating: 1, count: n)
    for i in 0..<n {
        let da = i < n - a.count ? 1 : a[i - (n - a.count)]
        let db = i < n - b.count ? 1 : b[i - (n - b.count)]
        precondition(da == db || da == 1 || db == 1, "broadcast: shapes \(a) and \(b) are incompatible")
        out[i] = max(da, db)
    }
    return out
}

/// Element strides of `shape` viewed inside `outShape` (0 where broadcast).
func broadcastStrides(_ shape: [Int], in outShape: [Int]) -> [Int] {
    let n = outShape.count
    var strides = [Int](repeating: 0, count: n)
    var s = 1
    for i in stride(from: shape.count - 1, through: 0, by: -1) {
        let oi = i + (n - shape.count)
        strides[oi] = shape[i] == 1 ? 0 : s
        s *= shape[i]
    }
    return strides
}

/// Visits every output index in row-major order with the matching offsets into a and b.
@inline(__always)
func forEachBroadcast(_ outShape: [Int], _ sa: [Int], _ sb: [Int], _ body: (Int, Int, Int) -> Void) {
    let n = outShape.count
    let total = outShape.reduce(1, *)
    if n == 0 { body(0, 0, 0); return }
    var idx = [Int](repeating: 0, count: n)
    var oa = 0, ob = 0
    for o in 0..<total {
        body(o, oa, ob)
        var d = n - 1
        while d >= 0 {
            idx[d] += 1
            oa += sa[d]; ob += sb[d]
            if idx[d] < outShape[d] { break }
            oa -= sa[d] * idx[d]; ob -= sb[d] * idx[d]
            idx[d] = 0
            d -= 1
        }
    }
}

enum BinaryOp { case add, sub, mul, div }

extension Tensor {
    /// Whether `b` broadcasts over `a` as whole trailing rows (b's shape, leading 1s dropped,
    /// is a suffix of a's): then `a` is `[rows, b.count]` and `b` one row.
    static func isSuffix(_ b: [Int], of a: [Int]) -> Bool {
        let bs = Array(b.drop(while: { $0 == 1 }))
        return bs.count <= a.count && Array(a.suffix(bs.count)) == bs
    }

    func binary(_ other: Tensor, _ op: BinaryOp) -> Tensor {
        let a = self, b = other
        if a.shape != b.shape, a.count >= b.count, Tensor.isSuffix(b.shape, of: a.shape), b.rank <= a.rank || b.count == 1 {
            return rowBroadcast(b, op)
        }
        let outShape = a.shape == b.shape ? a.shape : broadcastShape(a.shape, b.shape)
        let out = Tensor(uninitialized: outShape)
        let y = out.data, x1 = a.data, x2 = b.data
        if a.shape == b.shape {
            switch op {
            case .add: for i in 0..<out.count { y[i] = x1[i] + x2[i] }
            case .sub: for i in 0..<out.count { y[i] = x1[i] - x2[i] }
            case .mul: for i in 0..<out.count { y[i] = x1[i] * x2[i] }
            case .div: for i in 0..<out.count { y[i] = x1[i] / x2[i] }
            }
        } else {
            let sa = broadcastStrides(a.shape, in: outShape), sb = broadcastStrides(b.shape, in: outShape)
            switch op {
            case .add: forEachBroadcast(outShape, sa, sb) { o, i, j in y[o] = x1[i] + x2[j] }
            case .sub: forEachBroadcast(outShape, sa, sb) { o, i, j in y[o] = x1[i] - x2[j] }
            case .mul: forEachBroadcast(outShape, sa, sb) { o, i, j in y[o] = x1[i] * x2[j] }
            case .div: forEachBroadcast(outShape, sa, sb) { o, i, j in y[o] = x1[i] / x2[j] }
            }
        }
        if Tensor.needsGrad(a, b) {
            out.record([a, b]) { o in
                let g = o.gradPointer
                let da = a.gradIfNeeded, db = b.gradIfNeeded
                let sa = broadcastStrides(a.shape, in: outShape), sb = broadcastStrides(b.shape, in: outShape)
                forEachBroadcast(outShape, sa, sb) { k, i, j in
                    let gk = g[k]
                    switch op {
                    case .add: da?[i] += gk; db?[j] += gk
                    case .sub: da?[i] += gk; db?[j] -= gk
                    case .mul: da?[i] += gk * x2[j]; db?[j] += gk * x1[i]
                    case .div:
                        da?[i] += gk / x2[j]
                        db?[j] -= gk * x1[i] / (x2[j] * x2[j])
                    }
                }
            }
        }
        return out
    }

    /// `a ∘ b` with b one row repeated over a's rows (fast path of `binary`).
    func rowBroadcast(_ b: Tensor, _ op: BinaryOp) -> Tensor {
        let a = self
        let n = b.count, rows = a.count / Swift.max(n, 1)
        let out = Tensor(uninitialized: a.shape)
        let y = out.data, x1 = a.data, x2 = b.data
        for r in 0..<rows {
            let yr = y + r * n, ar = x1 + r * n
            switch op {
            case .add: for j in 0..<n { yr[j] = ar[j] + x2[j] }
            case .sub: for j in 0..<n { yr[j] = ar[j] - x2[j] }
            case .mul: for j in 0..<n { yr[j] = ar[j] * x2[j] }
            case .div: for j in 0..<n { yr[j] = ar[j] / x2[j] }
            }
        }
        if Tensor.needsGrad(a, b) {
            out.record([a, b]) { o in
                let g = o.gradPointer
                let da = a.gradIfNeeded, db = b.gradIfNeeded
                for r in 0..<rows {
                    let gr = g + r * n, ar = x1 + r * n
                    if let da {
                        let d = da + r * n
                        switch op {
                        case .add, .sub: for j in 0..<n { d[j] += gr[j] }
                        case .mul: for j in 0..<n { d[j] += gr[j] * x2[j] }
                        case .div: for j in 0..<n { d[j] += gr[j] / x2[j] }
                        }
                    }
                    if let db {
                        switch op {
                        case .add: for j in 0..<n { db[j] += gr[j] }
                        case .sub: for j in 0..<n { db[j] -= gr[j] }
                        case .mul: for j in 0..<n { db[j] += gr[j] * ar[j] }
                        case .div: for j in 0..<n { db[j] -= gr[j] * ar[j] / (x2[j] * x2[j]) }
                        }
                    }
                }
            }
        }
        return out
    }

    /// Elementwise sum with broadcasting.
    public static func + (a: Tensor, b: Tensor) -> Tensor { a.binary(b, .add) }
    /// Elementwise difference with broadcasting.
    public static func - (a: Tensor, b: Tensor) -> Tensor { a.binary(b, .sub) }
    /// Elementwise product with broadcasting.
    public static func * (a: Tensor, b: Tensor) -> Tensor { a.binary(b, .mul) }
    /// Elementwise quotient with broadcasting.
    public static func / (a: Tensor, b: Tensor) -> Tensor { a.binary(b, .div) }

    /// x·s + t with constants s, t.
    public func affine(scale s: Float, shift t: Float = 0) -> Tensor {
        unary({ $0 * s + t }, { _, _ in s })
    }
    public static func * (a: Tensor, s: Float) -> Tensor { a.affine(scale: s) }
    public static func + (a: Tensor, s: Float) -> Tensor { a.affine(scale: 1, shift: s) }
}
