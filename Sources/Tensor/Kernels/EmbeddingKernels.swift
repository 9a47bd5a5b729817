/// Embedding lookup: out[n] = table[ids[n]] (rows of width C).
/// PyTorch counterpart: `nn.Embedding(V, C, padding_idx)`; key `weight`.
public func embeddingForward(out: UnsafeMutablePointer<Float>, table: UnsafePointer<Float>,
                             ids: UnsafePointer<Int32>, count n: Int, vocab: Int, width: Int) {
    for i in 0..<n {
        let id = Int(ids[i])
        precondition(id >= 0 && id < vocab, "embedding: id \(id) out of range 0..<\(vocab) at position \(i)")
        (out + i * width).update(from: table + id * width, count: width)
    }
}

/// Embedding backward: dtable[ids[n]] += dout[n], in order of n, skipping `paddingIndex`
/// (PyTorch's padding_idx row receives no gradient from the lookup).
public func embeddingBackward(dtable: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                              ids: UnsafePointer<Int32>, count n: Int, width: Int, paddingIndex: Int32?) {
    for i in 0..<n {
        let id = ids[i]
        if let paddingIndex, id == paddingIndex { continue }
        let d = dtable + Int(id) * width, g = dout + i * width
        for c in 0..<width { d[c] += g[c] }
    }
}
