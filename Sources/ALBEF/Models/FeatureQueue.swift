import NN
import Tensor

/// MoCo-style ring buffers of ALBEF's ITC (`image_queue`, `text_queue` `[E, Q]`, and the
/// retrieval model's `idx_queue` `[1, Q]`): helpers both models use.
public enum FeatureQueue {
    /// Makes every column of a `[E, Q]` queue a unit vector: `F.normalize(q, dim=0)`,
    /// q[:, j] / max(‖q[:, j]‖₂, 1e-12).
    public static func normalizeColumns(_ q: Tensor) {
        let e = q.shape[0], n = q.shape[1]
        for j in 0..<n {
            var s: Float = 0
            for i in 0..<e { let v = q.data[i * n + j]; s += v * v }
            let nrm = max(s.squareRoot(), 1e-12)
            for i in 0..<e { q.data[i * n + j] /= nrm }
        }
    }

    /// Writes gathered features `[G, E]` into the columns [ptr, ptr + G) of a `[E, Q]` queue
    /// (`queue[:, ptr:ptr+G] = feats.T`).
    public static func writeColumns(_ features: Tensor, into queue: Tensor, at ptr: Int) {
        let g = features.shape[0], e = features.shape[1], q = queue.shape[1]
        precondition(queue.shape[0] == e && ptr >= 0 && ptr + g <= q,
                     "FeatureQueue.writeColumns: features \(features.shape) at \(ptr) into queue \(queue.shape)")
        for b in 0..<g { for i in 0..<e { queue.data[i * q + ptr + b] = features.data[b * e + i] } }
    }

    /// Writes gathered ids `[G]` into the columns [ptr, ptr + G) of a `[1, Q]` id queue
    /// (`idx_queue[:, ptr:ptr+G] = idxs.T`).
    public static func writeColumns(_ ids: [Int64], into queue: IntBuffer, at ptr: Int) {
        var v = queue.value.values
        precondition(ptr >= 0 && ptr + ids.count <= v.count, "FeatureQueue.writeColumns: \(ids.count) ids at \(ptr) into \(v.count)")
        for (k, id) in ids.enumerated() { v[ptr + k] = id }
        queue.value = IntTensor(v, shape: queue.value.shape)
    }

    /// The pointer after writing G columns: (ptr + G) mod Q, with ALBEF's requirement that G
    /// divides Q (the reference asserts `queue_size % batch_size == 0`, so no write wraps).
    public static func advance(_ ptr: Int, by g: Int, size q: Int) -> Int {
        precondition(g > 0 && q % g == 0, "enqueue: queue_size \(q) is not divisible by the global batch \(g)")
        return (ptr + g) % q
    }
}
