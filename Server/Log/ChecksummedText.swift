import Foundation

/// The log's small text files (a consumer group's offsets, the partition layout): lines, then
/// a line "crc32c HEX" over the lines before it, so a damaged file is told from a valid one.
enum ChecksummedText {
    static func render(_ body: String) -> String {
        body + "crc32c \(String(CRC32C.checksum(Array(body.utf8)), radix: 16))\n"
    }

    /// The lines before the checksum line; nil when that line is missing or does not match.
    static func body(of text: String) -> String? {
        guard let line = text.range(of: "crc32c ", options: .backwards) else { return nil }
        let body = String(text[..<line.lowerBound])
        let stored = text[line.upperBound...].trimmingCharacters(in: .whitespacesAndNewlines)
        guard UInt32(stored, radix: 16) == CRC32C.checksum(Array(body.utf8)) else { return nil }
        return body
    }
}
