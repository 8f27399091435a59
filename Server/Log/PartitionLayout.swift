import Foundation

/// How a log directory routes senders to partitions (the partition count and the users per
/// range), kept in `partitions/layout` from the directory's first start. Opening the log with
/// another layout would leave records unread in partitions it no longer opens, and put a
/// chat's later messages in another partition than its earlier ones (whose order then depends
/// on two consumers): so the layout of a directory never changes, and asking for another one
/// is an error that changes nothing.
struct PartitionLayout: Equatable {
    var partitionCount: Int
    var usersPerRange: UInt64

    static let fileName = "layout"

    /// Checks `self` against what `directory` (the log's `partitions` directory) was created
    /// with, and records it when the directory is new. A directory from before the file
    /// existed counts its partitions' directories; its range size was always 64.
    func settle(in directory: String) throws(LogRecoveryError) {
        let path = "\(directory)/\(Self.fileName)"
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw .io(LogIOError(operation: .open, path: directory, errno: EIO))
        }
        if let data = FileManager.default.contents(atPath: path) {
            let recorded = try Self.parse(String(decoding: data, as: UTF8.self), path: path)
            guard recorded == self else { throw .layoutChanged(directory: directory, recorded: recorded.description, requested: description) }
            return
        }
        let existing = Self.partitionDirectories(in: directory)
        if !existing.isEmpty {
            let recorded = PartitionLayout(partitionCount: (existing.max() ?? 0) + 1, usersPerRange: 64)
            guard recorded == self else { throw .layoutChanged(directory: directory, recorded: recorded.description, requested: description) }
        }
        // Written before any partition is created, so a first start cut short is finished
        // with the same layout by the next.
        do { try PosixLogFile.replace(path, in: directory, with: Array(rendered.utf8)) } catch { throw .io(error) }
    }

    var description: String { "\(partitionCount) partitions of \(usersPerRange)-user ranges" }

    private static func partitionDirectories(in directory: String) -> [Int] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).compactMap { name in
            guard let index = Int(name), String(index) == name else { return nil }
            return index
        }
    }

    // "partitions N", "users-per-range M", then "crc32c HEX" over the lines before it.
    private var rendered: String {
        let body = "partitions \(partitionCount)\nusers-per-range \(usersPerRange)\n"
        return body + "crc32c \(String(CRC32C.checksum(Array(body.utf8)), radix: 16))\n"
    }

    private static func parse(_ text: String, path: String) throws(LogRecoveryError) -> PartitionLayout {
        func corrupt(_ reason: String) -> LogRecoveryError {
            .corruptRecord(segment: path, position: 0, expectedOffset: 0, reason: reason)
        }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.count == 4, lines[3].isEmpty else { throw corrupt("expected three lines") }
        let body = lines[0...1].map { "\($0)\n" }.joined()
        guard lines[2].hasPrefix("crc32c "), UInt32(lines[2].dropFirst("crc32c ".count), radix: 16) == CRC32C.checksum(Array(body.utf8)) else {
            throw corrupt("checksum mismatch")
        }
        guard lines[0].hasPrefix("partitions "), let count = Int(lines[0].dropFirst("partitions ".count)), count > 0,
              lines[1].hasPrefix("users-per-range "), let range = UInt64(lines[1].dropFirst("users-per-range ".count)), range > 0
        else { throw corrupt("bad layout '\(body)'") }
        return PartitionLayout(partitionCount: count, usersPerRange: range)
    }
}
