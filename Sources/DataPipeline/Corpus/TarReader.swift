#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// One regular-file member of a tar archive: its full name and where its bytes are.
public struct TarMember: Sendable, Equatable {
    public var name: String
    public var offset: Int
    public var size: Int
}

/// The member table of a tar file, read from its headers only (data blocks are skipped).
///
/// Handles POSIX ustar (with the 155-byte `prefix`), GNU long names (`L` entries), pax extended
/// headers (`x`: `path`, `size`; `g` is ignored) and base-256 sizes, i.e. what Python's `tarfile`
/// and `webdataset.TarWriter` write. `problem` is set when the archive ends inside a member
/// (`truncatedMember`, naming it) or a header is damaged (`corruptTar`); members before it are kept.
public struct TarScan: Sendable {
    public var members: [TarMember]
    public var fileSize: Int
    public var problem: (kind: BadSampleKind, name: String, message: String)?
}

/// Reads members of a tar file by offset with `pread` (thread-safe, no shared file position).
public final class TarFile: @unchecked Sendable {
    public let path: String
    let fd: Int32
    public let size: Int

    public init(path: String) throws {
        self.path = path
        fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            if errno == ENOENT { throw DataError.missingFile(path: path) }
            throw DataError.unreadable(path: path, reason: String(cString: strerror(errno)))
        }
        var st = stat()
        fstat(fd, &st)
        size = Int(st.st_size)
    }

    deinit { close(fd) }

    /// `count` bytes at `offset` (fewer only at the end of the file).
    public func read(offset: Int, count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = out.withUnsafeMutableBytes { p in
                pread(fd, p.baseAddress! + done, count - done, off_t(offset + done))
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw DataError.unreadable(path: path, reason: String(cString: strerror(errno)))
            }
            if n == 0 { break }
            done += n
        }
        if done < count { out.removeLast(count - done) }
        return out
    }

    /// The bytes of one member.
    public func read(_ member: TarMember) throws -> [UInt8] {
        try read(offset: member.offset, count: member.size)
    }

    /// Scans the headers.
    public func scan() throws -> TarScan {
        var members: [TarMember] = []
        var offset = 0
        var longName: String? = nil
        var paxPath: String? = nil
        var paxSize: Int? = nil
        var zeroBlocks = 0
        func result(_ problem: (BadSampleKind, String, String)?) -> TarScan {
            TarScan(members: members, fileSize: size, problem: problem.map { (kind: $0.0, name: $0.1, message: $0.2) })
        }
        while offset + 512 <= size {
            let h = try read(offset: offset, count: 512)
            if h.allSatisfy({ $0 == 0 }) {
                zeroBlocks += 1
                offset += 512
                if zeroBlocks == 2 { break }
                continue
            }
            zeroBlocks = 0
            guard TarFile.checksumOK(h) else {
                return result((.corruptTar, "@\(offset)", "header checksum mismatch at byte \(offset)"))
            }
            let type = h[156]
            var name = TarFile.string(h, 0, 100)
            let magic = TarFile.string(h, 257, 5)
            if magic == "ustar" {
                let prefix = TarFile.string(h, 345, 155)
                if !prefix.isEmpty { name = prefix + "/" + name }
            }
            guard var memberSize = TarFile.number(h, 124, 12) else {
                return result((.corruptTar, name, "bad size field at byte \(offset)"))
            }
            if let s = paxSize { memberSize = s }
            let dataOffset = offset + 512
            let next = dataOffset + (memberSize + 511) / 512 * 512
            if dataOffset + memberSize > size {
                let shown = paxPath ?? longName ?? name
                return result((.truncatedMember, shown,
                               "archive ends inside member \(shown) (\(size - dataOffset) of \(memberSize) bytes)"))
            }
            switch type {
            case UInt8(ascii: "L"):
                let data = try read(offset: dataOffset, count: memberSize)
                longName = String(decoding: data.prefix { $0 != 0 }, as: UTF8.self)
            case UInt8(ascii: "x"):
                let data = try read(offset: dataOffset, count: memberSize)
                for (k, v) in TarFile.paxRecords(data) {
                    if k == "path" { paxPath = v }
                    if k == "size" { paxSize = Int(v) }
                }
            case UInt8(ascii: "g"):
                break
            case 0, UInt8(ascii: "0"), UInt8(ascii: "7"):
                members.append(TarMember(name: paxPath ?? longName ?? name, offset: dataOffset, size: memberSize))
                longName = nil; paxPath = nil; paxSize = nil
            default:
                longName = nil; paxPath = nil; paxSize = nil
            }
            offset = next
        }
        if zeroBlocks < 2 && offset < size && offset + 512 > size {
            return result((.truncatedMember, "@\(offset)", "archive ends inside a header at byte \(offset)"))
        }
        return result(nil)
    }

    static func string(_ h: [UInt8], _ start: Int, _ count: Int) -> String {
        let field = h[start..<(start + count)]
        return String(decoding: field.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// Octal (NUL/space terminated) or GNU base-256 (high bit of the first byte set).
    static func number(_ h: [UInt8], _ start: Int, _ count: Int) -> Int? {
        if h[start] & 0x80 != 0 {
            var v = Int(h[start] & 0x7F)
            for i in (start + 1)..<(start + count) { v = (v << 8) | Int(h[i]) }
            return v
        }
        let s = string(h, start, count).trimmingCharacters(in: CharacterSet(charactersIn: " \0"))
        if s.isEmpty { return 0 }
        return Int(s, radix: 8)
    }

    static func checksumOK(_ h: [UInt8]) -> Bool {
        guard let stored = number(h, 148, 8) else { return false }
        var sum = 0
        for i in 0..<512 { sum += (148..<156).contains(i) ? 32 : Int(h[i]) }
        return sum == stored
    }

    /// pax records `"%d %s=%s\n"`.
    static func paxRecords(_ data: [UInt8]) -> [(String, String)] {
        var out: [(String, String)] = []
        var i = 0
        while i < data.count {
            var j = i
            while j < data.count && data[j] != UInt8(ascii: " ") { j += 1 }
            guard j < data.count, let len = Int(String(decoding: data[i..<j], as: UTF8.self)), len > 0,
                  i + len <= data.count else { break }
            let record = data[(j + 1)..<(i + len - 1)]
            if let eq = record.firstIndex(of: UInt8(ascii: "=")) {
                out.append((String(decoding: record[record.startIndex..<eq], as: UTF8.self),
                            String(decoding: record[(eq + 1)...], as: UTF8.self)))
            }
            i += len
        }
        return out
    }
}
