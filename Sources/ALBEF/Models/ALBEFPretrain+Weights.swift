import NN
import Tensor

extension ALBEFPretrain {
    /// Initialises `text_encoder.bert` and `text_encoder_m.bert` from a plain BERT checkpoint
    /// (keys `embeddings.*`, `encoder.layer.*`, optionally under `bert.`; old `gamma`/`beta`
    /// LayerNorm names accepted). Cross-attention and the MLM head keep their init. Returns the
    /// report for the online encoder.
    @discardableResult
    public func loadPlainBert(_ file: WeightFile) throws -> LoadReport {
        let map = BertModel.checkpointKeyMap(in: file)
        let r = try textEncoder.bert.load(from: file, keyMap: map, strict: false)
        let bad = r.shapeMismatches
        guard bad.isEmpty else {
            throw CheckpointError.shapeMismatch(key: bad[0].key, expected: bad[0].expected, got: bad[0].got, path: file.path)
        }
        let cross = r.missing.filter { !$0.contains("crossattention") }
        guard cross.isEmpty else { throw CheckpointError.keyMismatch(report: r, path: file.path) }
        copyOnlineToMomentum()
        return r
    }
}
