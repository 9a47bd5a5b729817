import Foundation

/// A read-only view of a zip archive whose entries are STORED (compression method 0), as
/// `torch.save` writes them (PyTorch's `PyTorchFileWriter`, miniz, torch ≥ 1.6).
///
/// Format read here (APPNOTE 6.3): the end-of-central-directory record (`PK\x05\x06`, 22 bytes
/// + comment) at the end; if one of its 16/32-bit fields is saturated (0xFFFF / 0xFFFFFFFF), the
/// zip64 locator (`PK\x06\x07`, 20 bytes) before it points at the zip64 EOCD (`PK\x06\x06`) with
/// 64-bit counts and offsets. Each central-directory record (`PK\x01\x02`, 46 bytes + name + extra
/// + comment) gives the method, the real sizes (torch's local headers carry 0 for CRC and sizes
/// and set flag bit 3, a data descriptor follows the data) and the local header offset; zip64
/// extra fields (id 0x0001) replace saturated sizes/offsets. The payload begins after the local
/// header (`PK\x03\x04`, 30 bytes + name + extra), whose extra field torch uses to pad the data
/// to a 64-byte boundary, so the local name/extra lengths are read rather than the central ones.
/// Compressed entries are refused (torch never compresses); CRCs are not verified.
public struct StoredZip {
    public struct Entry: Sendable {
        public var name: String
        public var method: Int
        public var compressedSize: Int
        public var size: Int
        public var localHeaderOffset: Int
        /// Byte offset of the payload in the file.
        public var dataOffset: Int
    }

    public let path: String
    public let data: Data
    /// Entries in central-directory order.
    public let entries: [Entry]
    let byName: [String: Int]

    /// True when `data` starts like a zip archive (a local file header).
    public static func looksLikeZip(_ data: Data) -> Bool {
        data.count >= 4 && data[data.startIndex] == 0x50 && data[data.startIndex + 1] == 0x4B
            && data[data.startIndex + 2] == 0x03 && data[data.startIndex + 3] == 0x04
    }

    public init(path: String, data: Data) throws {
        self.path = path
        self.data = data
        let n = data.count
        func fail(_ m: String) -> TorchCheckpointError { .badFile(path: path, message: "zip: " + m) }
        func u16(_ o: Int) throws -> Int {
            guard o >= 0, o + 2 <= n else { throw fail("record at byte \(o) runs past the end of the file (\(n) bytes; truncated?)") }
            return Int(data[data.startIndex + o]) | Int(data[data.startIndex + o + 1]) << 8
        }
        func u32(_ o: Int) throws -> Int { let lo = try u16(o), hi = try u16(o + 2); return lo | hi << 16 }
        func u64(_ o: Int) throws -> Int {
            let lo = try u32(o), hi = try u32(o + 4)
            guard hi < 0x8000_0000 else { throw fail("64-bit field at byte \(o) is out of range") }
            return lo | hi << 32
        }
        // End of central directory: scan back over a comment of at most 65535 bytes.
        var eocd = -1
        var i = n - 22
        while i >= 0 && i >= n - 22 - 65535 {
            if try u32(i) == 0x0605_4B50 { eocd = i; break }
            i -= 1
        }
        guard eocd >= 0 else { throw fail("no end-of-central-directory record (the file is truncated or not a zip)") }
        var count = try u16(eocd + 10)
        var cdSize = try u32(eocd + 12)
        var cdOffset = try u32(eocd + 16)
        if count == 0xFFFF || cdSize == 0xFFFF_FFFF || cdOffset == 0xFFFF_FFFF {
            let loc = eocd - 20
            guard loc >= 0, try u32(loc) == 0x0706_4B50 else { throw fail("saturated EOCD fields but no zip64 locator before it") }
            let z = try u64(loc + 8)
            guard try u32(z) == 0x0606_4B50 else { throw fail("zip64 locator points at byte \(z), which is not a zip64 EOCD record") }
            count = try u64(z + 32)
            cdSize = try u64(z + 40)
            cdOffset = try u64(z + 48)
        }
        guard cdOffset >= 0, cdSize >= 0, cdOffset + cdSize <= n else {
            throw fail("central directory (\(cdSize) bytes at \(cdOffset)) lies outside the file (\(n) bytes; truncated?)")
        }
        var es: [Entry] = []
        var names: [String: Int] = [:]
        var p = cdOffset
        for k in 0..<count {
            guard try u32(p) == 0x0201_4B50 else { throw fail("central-directory record \(k) at byte \(p) has a bad signature") }
            let method = try u16(p + 10)
            var csize = try u32(p + 20), size = try u32(p + 24)
            let nameLen = try u16(p + 28), extraLen = try u16(p + 30), commentLen = try u16(p + 32)
            var local = try u32(p + 42)
            guard p + 46 + nameLen + extraLen + commentLen <= n else { throw fail("central-directory record \(k) is truncated") }
            let nameBytes = data.subdata(in: (data.startIndex + p + 46)..<(data.startIndex + p + 46 + nameLen))
            guard let name = String(data: nameBytes, encoding: .utf8) else { throw fail("entry \(k) has a name that is not UTF-8") }
            // zip64 extra field: the saturated values, in order size, compressed size, offset.
            var e = p + 46 + nameLen
            let extraEnd = e + extraLen
            while e + 4 <= extraEnd {
                let id = try u16(e), len = try u16(e + 2)
                if id == 0x0001 {
                    var q = e + 4
                    if size == 0xFFFF_FFFF { size = try u64(q); q += 8 }
                    if csize == 0xFFFF_FFFF { csize = try u64(q); q += 8 }
                    if local == 0xFFFF_FFFF { local = try u64(q); q += 8 }
                }
                e += 4 + len
            }
            guard try u32(local) == 0x0403_4B50 else { throw fail("entry '\(name)': no local header at byte \(local)") }
            let localName = try u16(local + 26), localExtra = try u16(local + 28)
            let dataOffset = local + 30 + localName + localExtra
            guard dataOffset + csize <= n else {
                throw fail("entry '\(name)' (\(csize) bytes at \(dataOffset)) runs past the end of the file (\(n) bytes; truncated?)")
            }
            names[name] = es.count
            es.append(Entry(name: name, method: method, compressedSize: csize, size: size, localHeaderOffset: local, dataOffset: dataOffset))
            p += 46 + nameLen + extraLen + commentLen
        }
        entries = es
        byName = names
    }

    public func entry(_ name: String) -> Entry? { byName[name].map { entries[$0] } }

    /// The payload of a stored entry as a byte range of `data` (no copy).
    public func range(of entry: Entry) throws -> Range<Int> {
        guard entry.method == 0 else {
            throw TorchCheckpointError.badFile(path: path, message: "zip entry '\(entry.name)' is compressed (method \(entry.method)); torch.save stores entries uncompressed. HINT: re-save the checkpoint with torch.save, do not re-zip it")
        }
        guard entry.size == entry.compressedSize else {
            throw TorchCheckpointError.badFile(path: path, message: "zip entry '\(entry.name)': stored size \(entry.compressedSize) differs from its size \(entry.size)")
        }
        return entry.dataOffset..<(entry.dataOffset + entry.size)
    }

    /// The payload of a stored entry, copied.
    public func contents(_ entry: Entry) throws -> Data {
        let r = try range(of: entry)
        return data.subdata(in: (data.startIndex + r.lowerBound)..<(data.startIndex + r.upperBound))
    }
}
