import Foundation
import Tensor

/// A file of named tensors that a `Module` can load from: safetensors (`SafeTensorsFile`) or a
/// PyTorch checkpoint's state dict (`TorchStateDict`). Shapes and dtypes (safetensors names:
/// `F32`, `F16`, `BF16`, `I64`, …) are known without reading data.
public protocol WeightFile: AnyObject {
    var path: String { get }
    /// Tensor names, sorted.
    var keys: [String] { get }
    func shape(of key: String) -> [Int]?
    func dtype(of key: String) -> String?
    /// Values converted to Float32.
    func floats(_ key: String) throws -> [Float]
    /// Values as integers.
    func ints(_ key: String) throws -> IntTensor
}

extension WeightFile {
    public func tensor(_ key: String) throws -> Tensor {
        guard let s = shape(of: key) else { throw CheckpointError.missingKey(path: path, key: key) }
        return Tensor(try floats(key), shape: s)
    }
}

extension SafeTensorsFile: WeightFile {
    public func shape(of key: String) -> [Int]? { entries[key]?.shape }
    public func dtype(of key: String) -> String? { entries[key]?.dtype }
}

/// Opens weights by extension: `.pth`/`.pt`/`.bin`/`.ckpt` as a PyTorch checkpoint (the state
/// dict found by `key`, or `state_dict`/`model`/the root), anything else as safetensors.
public func openWeightFile(_ path: String, key: String? = nil) throws -> WeightFile {
    if TorchCheckpoint.handles(path) { return try TorchStateDict(path: path, key: key) }
    return try SafeTensorsFile(path: path)
}
