import Foundation

/// Scalars as a TensorBoard event file, `DIR/events.out.tfevents.<unix seconds>.<host>`, the file
/// `tensorboard --logdir DIR` reads (rank 0 writes it beside `metrics.jsonl`).
///
/// Concretely: a TFRecord stream of serialized `tensorboard.Event` protos. Each record is
/// `uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)` (little
/// endian; masked = ((c >> 15) | (c << 17)) + 0xa282ead8); the first event carries
/// `file_version = "brain.Event:2"`, each later one `wall_time`, `step` and a `Summary` of
/// `(tag, simple_value)` pairs. PyTorch counterpart: `torch.utils.tensorboard.SummaryWriter.add_scalar`.
public final class TensorBoardWriter {
    public let url: URL
    private let handle: FileHandle

    /// Opens a new event file in `directory` (created if missing) and writes the version event.
    public init(directory: String, wallTime: Double = Date().timeIntervalSince1970) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "host"
        url = URL(fileURLWithPath: directory).appendingPathComponent("events.out.tfevents.\(Int(wallTime)).\(host)")
        guard FileManager.default.createFile(atPath: url.path, contents: nil) else {
            throw TrainingError.output("cannot create the TensorBoard event file \(url.path) (check the output directory's permissions)")
        }
        handle = try FileHandle(forWritingTo: url)
        var event = ProtoWriter()
        event.double(field: 1, wallTime)
        event.string(field: 3, "brain.Event:2")
        handle.write(Data(TFRecord.frame(event.bytes)))
    }

    deinit { try? handle.close() }

    /// One event with every scalar of a step (tags such as `loss/ita`, `lr`).
    public func add(scalars: [(tag: String, value: Double)], step: Int, wallTime: Double = Date().timeIntervalSince1970) {
        var summary = ProtoWriter()
        for (tag, value) in scalars {
            var v = ProtoWriter()
            v.string(field: 1, tag)
            v.float(field: 2, Float(value))
            summary.message(field: 1, v)
        }
        var event = ProtoWriter()
        event.double(field: 1, wallTime)
        event.varint(field: 2, UInt64(bitPattern: Int64(step)))
        event.message(field: 5, summary)
        handle.write(Data(TFRecord.frame(event.bytes)))
    }
}

/// The TFRecord framing TensorBoard (and TensorFlow) use.
public enum TFRecord {
    /// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), masked as TFRecord stores it.
    public static func maskedCRC(_ bytes: [UInt8]) -> UInt32 {
        let c = CRC32C.checksum(bytes)
        return ((c >> 15) | (c << 17)) &+ 0xA282_EAD8
    }

    /// `length | crc(length) | data | crc(data)`.
    public static func frame(_ data: [UInt8]) -> [UInt8] {
        let length = withUnsafeBytes(of: UInt64(data.count).littleEndian) { Array($0) }
        var out = length
        withUnsafeBytes(of: maskedCRC(length).littleEndian) { out += $0 }
        out += data
        withUnsafeBytes(of: maskedCRC(data).littleEndian) { out += $0 }
        return out
    }

    /// The records of a TFRecord stream; nil when a length or checksum does not match (a torn or
    /// corrupt file).
    public static func records(_ bytes: [UInt8]) -> [[UInt8]]? {
        var out: [[UInt8]] = [], i = 0
        func u32(_ at: Int) -> UInt32 { bytes[at..<at + 4].reversed().reduce(0) { $0 << 8 | UInt32($1) } }
        while i < bytes.count {
            guard i + 12 <= bytes.count else { return nil }
            let lengthBytes = Array(bytes[i..<i + 8])
            let n = Int(lengthBytes.reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
            guard maskedCRC(lengthBytes) == u32(i + 8), i + 12 + n + 4 <= bytes.count else { return nil }
            let data = Array(bytes[i + 12..<i + 12 + n])
            guard maskedCRC(data) == u32(i + 12 + n) else { return nil }
            out.append(data)
            i += 12 + n + 4
        }
        return out
    }
}

/// CRC-32C, table-driven (one table lookup per byte).
public enum CRC32C {
    static let table: [UInt32] = (0..<256).map { i -> UInt32 in
        var c = UInt32(i)
        for _ in 0..<8 { c = c & 1 != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
        return c
    }

    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes { c = table[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }
}

/// Just enough of the protobuf wire format for `tensorboard.Event`: varints, 64- and 32-bit
/// fixed fields, length-delimited strings and messages.
struct ProtoWriter {
    var bytes: [UInt8] = []

    mutating func rawVarint(_ v0: UInt64) {
        var v = v0
        while v >= 0x80 { bytes.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
        bytes.append(UInt8(v))
    }
    mutating func key(_ field: Int, _ wire: UInt64) { rawVarint(UInt64(field) << 3 | wire) }
    mutating func varint(field: Int, _ v: UInt64) { key(field, 0); rawVarint(v) }
    mutating func double(field: Int, _ v: Double) { key(field, 1); withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes += $0 } }
    mutating func float(field: Int, _ v: Float) { key(field, 5); withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes += $0 } }
    mutating func string(field: Int, _ s: String) { key(field, 2); rawVarint(UInt64(s.utf8.count)); bytes += Array(s.utf8) }
    mutating func message(field: Int, _ m: ProtoWriter) { key(field, 2); rawVarint(UInt64(m.bytes.count)); bytes += m.bytes }
}
