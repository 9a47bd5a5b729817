import Foundation

/// Writes a POSIX ustar archive (what `tarfile` reads; names ≤ 100 bytes, or ≤ 255 with a prefix).
/// Used by the synthetic corpus to write WebDataset shards.
public struct TarWriter {
    public private(set) var data = Data()

    public init() {}

    /// Appends one regular file.
    public mutating func add(name: String, bytes: [UInt8], mtime: Int = 0) {
        var h = [UInt8](repeating: 0, count: 512)
        var nameBytes = Array(name.utf8)
        var prefix: [UInt8] = []
        if nameBytes.count > 100, let slash = nameBytes.prefix(155).lastIndex(of: UInt8(ascii: "/")) {
            prefix = Array(nameBytes[..<slash])
            nameBytes = Array(nameBytes[(slash + 1)...])
        }
        precondition(nameBytes.count <= 100, "TarWriter: name too long for ustar: \(name)")
        func put(_ s: [UInt8], _ at: Int) { for (i, b) in s.enumerated() { h[at + i] = b } }
        func octal(_ v: Int, _ width: Int) -> [UInt8] {
            let s = String(v, radix: 8)
            return Array((String(repeating: "0", count: max(0, width - 1 - s.count)) + s).utf8) + [0]
        }
        put(nameBytes, 0)
        put(octal(0o644, 8), 100)
        put(octal(0, 8), 108)
        put(octal(0, 8), 116)
        put(octal(bytes.count, 12), 124)
        put(octal(mtime, 12), 136)
        put(Array("        ".utf8), 148)
        h[156] = UInt8(ascii: "0")
        put(Array("ustar".utf8) + [0], 257)
        put(Array("00".utf8), 263)
        put(prefix, 345)
        let sum = h.reduce(0) { $0 + Int($1) }
        put(Array(String(format: "%06o", sum).utf8) + [0, 32], 148)
        data.append(contentsOf: h)
        data.append(contentsOf: bytes)
        let pad = (512 - bytes.count % 512) % 512
        if pad > 0 { data.append(contentsOf: [UInt8](repeating: 0, count: pad)) }
    }

    /// The archive with its two zero end blocks.
    public func finished() -> Data {
        var d = data
        d.append(contentsOf: [UInt8](repeating: 0, count: 1024))
        return d
    }
}
