import Foundation
import NN

extension BertModel {
    /// Maps our `BertModel` keys (`embeddings.*`, `encoder.layer.i.*`) to a BERT checkpoint's:
    /// plain files use the keys as they are, `BertForMaskedLM`-style files put them under
    /// `bert.`, and old HF files name LayerNorm parameters `gamma`/`beta`. A key the file lacks
    /// maps to itself (the load reports it missing).
    ///
    /// PyTorch counterpart: HF `from_pretrained`'s prefix and `gamma`/`beta` renaming, and
    /// `Retrieval.py`'s `key.replace('bert.', '')` when a pretraining checkpoint is loaded.
    public static func checkpointKeyMap(in file: WeightFile) -> (String) -> String? {
        let keys = Set(file.keys)
        return { k in
            for cand in [k, "bert." + k] {
                if keys.contains(cand) { return cand }
                let old = cand.replacingOccurrences(of: "LayerNorm.weight", with: "LayerNorm.gamma")
                    .replacingOccurrences(of: "LayerNorm.bias", with: "LayerNorm.beta")
                if keys.contains(old) { return old }
            }
            return k
        }
    }
}
