import Foundation
import Tensor

/// The tensors of a PyTorch state dict (`model.state_dict()` inside a `torch.save` file) by name,
/// as a `WeightFile`.
///
/// Names are normalised as the reference loaders do: a `module.` prefix on every key (a state dict
/// saved from `DistributedDataParallel`) is stripped, and old BERT layer-norm names `gamma`/`beta`
/// (the original `bert-base-uncased` release) become `weight`/`bias`, as transformers'
/// `from_pretrained` renames them. Nested dicts of tensors are flattened with `.` (non-tensor
/// entries such as `_metadata` are ignored).
public final class TorchStateDict: WeightFile {
    public let path: String
    public let checkpoint: TorchCheckpoint
    /// Where the state dict was found (`model`, `state_dict`, or "" for the root).
    public let foundAt: String
    public let tensors: [String: TorchTensor]
    /// Renames applied (`original → new`), for the key report.
    public private(set) var renamed: [(String, String)] = []

    public convenience init(path: String, key: String? = nil) throws {
        try self.init(checkpoint: TorchCheckpoint(path: path), key: key)
    }

    public init(checkpoint: TorchCheckpoint, key: String? = nil) throws {
        self.checkpoint = checkpoint
        path = checkpoint.path
        let (dict, at) = try checkpoint.stateDict(key: key)
        foundAt = at
        var raw: [(String, TorchTensor)] = []
        try TorchCheckpoint.walkTensors(.dict(dict), prefix: "") { name, t in raw.append((name.replacingOccurrences(of: "/", with: "."), t)) }
        guard !raw.isEmpty else {
            throw TorchCheckpointError.noStateDict(path: path, message: "the state dict at '\(at)' holds no tensors")
        }
        let stripModule = raw.allSatisfy { $0.0.hasPrefix("module.") }
        var out: [String: TorchTensor] = [:]
        var ren: [(String, String)] = []
        for (name, t) in raw {
            var n = stripModule ? String(name.dropFirst("module.".count)) : name
            if n.hasSuffix(".gamma") { n = String(n.dropLast(5)) + "weight" } else if n.hasSuffix(".beta") { n = String(n.dropLast(4)) + "bias" }
            if n != name { ren.append((name, n)) }
            out[n] = t
        }
        tensors = out
        renamed = ren
    }

    public var keys: [String] { tensors.keys.sorted() }
    public func shape(of key: String) -> [Int]? { tensors[key]?.shape }
    public func dtype(of key: String) -> String? { tensors[key]?.dtype.safetensorsName }
    public func floats(_ key: String) throws -> [Float] {
        guard let t = tensors[key] else { throw CheckpointError.missingKey(path: path, key: key) }
        return t.floats()
    }
    public func ints(_ key: String) throws -> IntTensor {
        guard let t = tensors[key] else { throw CheckpointError.missingKey(path: path, key: key) }
        return IntTensor(t.int64s(), shape: t.shape)
    }

    /// Writes every tensor in its stored dtype (contiguous, views resolved) to a safetensors file;
    /// names sorted. Tied tensors are written under each name, as `state_dict()` lists them.
    public func writeSafeTensors(to out: String, metadata: [String: String] = [:]) throws {
        let names = keys
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        for n in names {
            let t = tensors[n]!
            let bytes = t.count * t.dtype.elementSize
            header[n] = ["dtype": t.dtype.safetensorsName, "shape": t.shape, "data_offsets": [offset, offset + bytes]] as [String: Any]
            offset += bytes
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while json.count % 8 != 0 { json.append(0x20) }
        var blob = Data(capacity: 8 + json.count + offset)
        var len = UInt64(json.count).littleEndian
        withUnsafeBytes(of: &len) { blob.append(contentsOf: $0) }
        blob.append(json)
        for n in names { blob.append(contentsOf: tensors[n]!.contiguousBytes()) }
        try atomicWrite(blob, to: out)
    }
}
