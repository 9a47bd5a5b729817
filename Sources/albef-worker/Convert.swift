import ArgumentParser
import Foundation
import NN

/// `albef-worker convert IN.pth|.bin OUT.safetensors [--key model]`: a PyTorch checkpoint's state
/// dict to safetensors (every tensor in its stored dtype, views made contiguous), read with the
/// safe unpickler (no Python; a pickle naming any non-tensor global is refused). Prints a key report.
struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Convert a PyTorch .pth/.bin checkpoint (zip or legacy format) to safetensors, with a key report.")

    @Argument(help: "Input checkpoint (.pth, .pt, .bin, .ckpt).")
    var input: String
    @Argument(help: "Output .safetensors file.")
    var output: String
    @Option(help: "Where the state dict is inside the checkpoint ('model', 'state_dict', a/b path); default: the root if it holds tensors, else state_dict/model/module.")
    var key: String?

    func run() throws {
        let sd = try TorchStateDict(path: input, key: key)
        let ck = sd.checkpoint
        print("\(input): \(ck.format) format, \(ck.storages.count) storages")
        if let top = ck.root.dict {
            print("top-level keys: " + top.pairs.prefix(12).map { k, v -> String in
                let kind: String
                switch v {
                case .tensor: kind = "tensor"
                case .dict(let d): kind = "dict[\(d.count)]"
                case .list(let l): kind = "list[\(l.items.count)]"
                default: kind = v.repr.count <= 24 ? v.repr : String(v.repr.prefix(21)) + "..."
                }
                return "\(k.string ?? k.repr) (\(kind))"
            }.joined(separator: ", ") + (top.count > 12 ? ", … (\(top.count) in all)" : ""))
        }
        print("state dict: \(sd.foundAt.isEmpty ? "the root" : "'\(sd.foundAt)'"), \(sd.tensors.count) tensors")
        var byDType: [String: Int] = [:]
        for t in sd.tensors.values { byDType[t.dtype.rawValue, default: 0] += 1 }
        print("dtypes: " + byDType.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        var groups: [ObjectIdentifier: [String]] = [:]
        for (n, t) in sd.tensors { groups[ObjectIdentifier(t.storage), default: []].append(n) }
        for g in groups.values where g.count > 1 { print("shared storage: " + g.sorted().joined(separator: " = ")) }
        let views = sd.tensors.filter { !$0.value.isContiguous || $0.value.offset != 0 }.keys.sorted()
        if !views.isEmpty { print("views made contiguous (\(views.count)): \(views.prefix(8).joined(separator: ", "))\(views.count > 8 ? ", …" : "")") }
        if !sd.renamed.isEmpty { print("renamed \(sd.renamed.count): " + sd.renamed.prefix(6).map { "\($0.0) → \($0.1)" }.joined(separator: ", ") + (sd.renamed.count > 6 ? ", …" : "")) }
        try sd.writeSafeTensors(to: output, metadata: ["format": "pt", "source": URL(fileURLWithPath: input).lastPathComponent])
        print("wrote \(output)")
    }
}
