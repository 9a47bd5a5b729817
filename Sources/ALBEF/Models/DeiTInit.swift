import NN
import Tensor

extension VisionTransformer {
    /// ALBEF's `init_deit` (`models/model_pretrain.py`): loads timm/DeiT ViT weights
    /// (`deit_base_patch16_224-b5f2ef4d.pth`'s `model`, keys `cls_token`, `pos_embed`,
    /// `patch_embed.proj.*`, `blocks.i.*`, `norm.*`, `head.*`) with `strict=False`, after resizing
    /// `pos_embed` from the file's grid to this ViT's with `interpolatePosEmbed` (ALBEF's
    /// `interpolate_pos_embed`). The classifier `head.*` has no counterpart here and is reported
    /// as unexpected; a shape mismatch on any other key is an error.
    @discardableResult
    public func loadDeiT(_ file: WeightFile) throws -> LoadReport {
        var r = try load(from: file, keyMap: { $0 == "pos_embed" ? nil : $0 }, strict: false)
        if let bad = r.shapeMismatches.first {
            throw CheckpointError.shapeMismatch(key: bad.key, expected: bad.expected, got: bad.got, path: file.path)
        }
        guard let shape = file.shape(of: "pos_embed") else {
            r.missing.append("pos_embed")
            return r
        }
        let c = posEmbed.shape[2]
        let nOld = shape.reduce(1, *) / max(c, 1) - 1
        let gOld = Int(Double(nOld).squareRoot().rounded()), gNew = Int(Double(posEmbed.shape[1] - 1).squareRoot().rounded())
        guard shape.count == 3, shape[0] == 1, shape[2] == c, gOld * gOld == nOld else {
            throw CheckpointError.shapeMismatch(key: "pos_embed", expected: posEmbed.shape, got: shape, path: file.path)
        }
        let v = interpolatePosEmbed(try file.floats("pos_embed"), channels: c, oldGrid: gOld, newGrid: gNew)
        v.withUnsafeBufferPointer { posEmbed.data.update(from: $0.baseAddress!, count: posEmbed.count) }
        r.loaded.append("pos_embed")
        r.unexpected.removeAll { $0 == "pos_embed" }
        return r
    }
}
