import Foundation

/// A consumer group's committed offsets, one per partition, kept durably in one small file per
/// group. A commit writes a new file, syncs it, renames it over the old one and syncs the
/// directory, so a crash leaves either the old offsets or the new ones, never a mix.
public final class ConsumerOffsets: @unchecked Sendable {
    // @unchecked: `offsets` is guarded by `lock`, and file writes happen under it too.

    public let group: String
    private let path: String
    private let directory: String
    private let lock = NSLock()
    private var offsets: [Int: UInt64]

    /// Group names are file names: letters, digits, `-` and `_`, 1 to 64 of them.
    public static func isValidGroupName(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 64 && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }
    }

    /// Loads `group`'s offsets from `directory` (none yet: every partition starts at 0).
    public init(directory: String, group: String) throws(LogRecoveryError) {
        precondition(Self.isValidGroupName(group), "consumer group names are checked by the caller")
        self.group = group
        self.directory = directory
        self.path = "\(directory)/\(group).offsets"
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw .io(LogIOError(operation: .open, path: directory, errno: EIO))
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            offsets = [:]
            return
        }
        offsets = try Self.parse(String(decoding: data, as: UTF8.self), path: path)
    }

    /// The committed offset of `partition`: where its consumer resumes.
    public func committed(partition: Int) -> UInt64 {
        lock.withLock { offsets[partition] ?? 0 }
    }

    /// Durably records an offset for each partition given, in one write. Offsets only move
    /// forward; an older one is ignored.
    public func commit(_ moved: [Int: UInt64]) throws(LogIOError) {
        lock.lock()
        defer { lock.unlock() }
        var next = offsets
        for (partition, offset) in moved where offset > next[partition] ?? 0 { next[partition] = offset }
        guard next != offsets else { return }
        try write(next)
        offsets = next
    }

    // "partition offset" lines (`ChecksummedText`).
    private static func render(_ offsets: [Int: UInt64]) -> String {
        ChecksummedText.render(offsets.keys.sorted().map { "\($0) \(offsets[$0]!)\n" }.joined())
    }

    private static func parse(_ text: String, path: String) throws(LogRecoveryError) -> [Int: UInt64] {
        func corrupt(_ reason: String) -> LogRecoveryError {
            .corruptRecord(segment: path, position: 0, expectedOffset: 0, reason: reason)
        }
        guard let body = ChecksummedText.body(of: text) else { throw corrupt("no checksum line, or one that does not match") }
        var offsets: [Int: UInt64] = [:]
        for line in body.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count == 2, let partition = Int(fields[0]), let offset = UInt64(fields[1]) else {
                throw corrupt("bad line '\(line)'")
            }
            offsets[partition] = offset
        }
        return offsets
    }

    private func write(_ offsets: [Int: UInt64]) throws(LogIOError) {
        try PosixLogFile.replace(path, in: directory, with: Array(Self.render(offsets).utf8))
    }
}
