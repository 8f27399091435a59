/// How one record sits in a segment file.
///
///   0       4       8               16
///  +-------+-------+---------------+------------------+
///  |length | crc32c|    offset     |  payload ...     |
///  +-------+-------+---------------+------------------+
///   little-endian; `length` counts offset + payload (8 + n bytes);
///   `crc32c` covers offset + payload, so a record copied to the wrong place fails its check.
public enum RecordFrame {
    public static let headerSize = 8
    /// Largest payload a record may carry; a longer length field is treated as corruption.
    public static let maxPayloadSize = 1 << 20

    /// What lies at a position in a segment.
    public enum Scan: Equatable {
        /// A whole, intact record; the next one starts at `next`.
        case record(offset: UInt64, payload: ArraySlice<UInt8>, next: Int)
        /// The bytes end inside a record: a write that did not finish.
        case torn
        /// A whole record whose length or checksum is wrong.
        case corrupt(String)
        /// Nothing more: the position is the end of the bytes.
        case end
    }

    /// Appends the frame for one record to `buffer`.
    public static func append(offset: UInt64, payload: some Collection<UInt8>, to buffer: inout [UInt8]) {
        precondition(payload.count <= maxPayloadSize, "record payload above \(maxPayloadSize) bytes")
        // Straight into the buffer, checksum filled in last: no per-record intermediate arrays.
        let start = buffer.count
        withUnsafeBytes(of: UInt32(8 + payload.count).littleEndian) { buffer.append(contentsOf: $0) }
        buffer.append(contentsOf: [0, 0, 0, 0])
        withUnsafeBytes(of: offset.littleEndian) { buffer.append(contentsOf: $0) }
        buffer.append(contentsOf: payload)
        let crc = buffer.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[(start + headerSize)...])) }
        withUnsafeBytes(of: crc.littleEndian) { bytes in
            for index in 0..<4 { buffer[start + 4 + index] = bytes[index] }
        }
    }

    /// Reads the record starting at `position` in `bytes`.
    public static func scan(_ bytes: [UInt8], at position: Int) -> Scan {
        let available = bytes.count - position
        guard available > 0 else { return .end }
        guard available >= headerSize else { return .torn }
        let length = Int(readUInt32(bytes, at: position))
        let storedCRC = readUInt32(bytes, at: position + 4)
        guard length >= 8, length <= maxPayloadSize + 8 else {
            // An all-zero header is what a preallocated or torn tail looks like, not a bad record.
            return length == 0 && storedCRC == 0 ? .torn : .corrupt("record length \(length) out of range")
        }
        guard available >= headerSize + length else { return .torn }
        let bodyStart = position + headerSize
        let body = bytes[bodyStart..<bodyStart + length]
        guard CRC32C.checksum(body) == storedCRC else { return .corrupt("checksum mismatch") }
        let offset = UInt64(readUInt32(bytes, at: bodyStart)) | UInt64(readUInt32(bytes, at: bodyStart + 4)) << 32
        return .record(offset: offset, payload: bytes[bodyStart + 8..<bodyStart + length], next: bodyStart + length)
    }

    private static func readUInt32(_ bytes: [UInt8], at position: Int) -> UInt32 {
        UInt32(bytes[position]) | UInt32(bytes[position + 1]) << 8 | UInt32(bytes[position + 2]) << 16 | UInt32(bytes[position + 3]) << 24
    }
}
