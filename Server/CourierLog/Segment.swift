/// One segment of a partition: a file of records named by its base offset, with a sparse
/// in-memory index rebuilt by the recovery scan. Single-threaded: the partition that owns it
/// serialises every call.
final class Segment {
    /// Bytes between index entries: a read seeks to the nearest entry below, then scans.
    static let indexInterval = 4 * 1024
    /// A read window large enough for the largest record.
    static let scanWindow = 2 * RecordFrame.maxPayloadSize

    let baseOffset: UInt64
    let name: String
    private let file: any LogFile
    private(set) var nextOffset: UInt64
    private var index: [(offset: UInt64, position: Int)] = []
    private var bytesSinceIndexEntry = Int.max

    var size: Int { file.size }

    /// `00000000000000000042.log` for base offset 42: names sort in offset order.
    static func fileName(baseOffset: UInt64) -> String {
        let digits = String(baseOffset)
        return String(repeating: "0", count: max(0, 20 - digits.count)) + digits + ".log"
    }

    private init(baseOffset: UInt64, name: String, file: any LogFile) {
        self.baseOffset = baseOffset
        self.name = name
        self.file = file
        self.nextOffset = baseOffset
    }

    /// A new, empty segment.
    static func create(baseOffset: UInt64, file: any LogFile) -> Segment {
        Segment(baseOffset: baseOffset, name: fileName(baseOffset: baseOffset), file: file)
    }

    /// Opens an existing segment, checking every record. In the newest segment an invalid tail
    /// with nothing valid after it is a write that never finished (never acknowledged, since
    /// acknowledgement waits for sync): it is cut off. Anywhere else it is an error.
    static func recover(baseOffset: UInt64, file: any LogFile, isNewest: Bool) throws(LogRecoveryError) -> (segment: Segment, truncatedBytes: Int) {
        let segment = Segment(baseOffset: baseOffset, name: fileName(baseOffset: baseOffset), file: file)
        var position = 0
        while position < file.size {
            let window: [UInt8]
            do { window = try file.read(at: position, count: scanWindow) } catch { throw .io(error) }
            let windowEndsFile = position + window.count >= file.size
            var cursor = 0
            var invalid: String?
            scanning: while true {
                switch RecordFrame.scan(window, at: cursor) {
                case .record(let offset, _, let next):
                    guard offset == segment.nextOffset else {
                        invalid = "offset \(offset) where \(segment.nextOffset) was expected"
                        break scanning
                    }
                    segment.noteRecord(offset: offset, position: position + cursor, length: next - cursor)
                    cursor = next
                case .end:
                    break scanning
                case .torn:
                    if !windowEndsFile && cursor > 0 { break scanning }  // read on from this record
                    invalid = "the file ends inside a record"
                    break scanning
                case .corrupt(let reason):
                    invalid = reason
                    break scanning
                }
            }
            if let invalid {
                let badPosition = position + cursor
                guard isNewest, try !segment.hasValidRecord(after: badPosition) else {
                    throw .corruptRecord(segment: segment.name, position: badPosition, expectedOffset: segment.nextOffset, reason: invalid)
                }
                let cut = file.size - badPosition
                do { try file.truncate(to: badPosition) } catch { throw .io(error) }
                return (segment, cut)
            }
            position += cursor
        }
        return (segment, 0)
    }

    /// Whether any intact record with an offset not yet seen starts after `position`: if so, the
    /// invalid bytes are damage inside the log, not an unfinished write at its end. Runs only at
    /// startup, over the rest of one segment, and only when something is already wrong.
    private func hasValidRecord(after position: Int) throws(LogRecoveryError) -> Bool {
        let tail: [UInt8]
        do { tail = try file.read(at: position + 1, count: file.size - position - 1) } catch { throw .io(error) }
        for candidate in tail.indices {
            if case .record(let offset, _, _) = RecordFrame.scan(tail, at: candidate), offset >= nextOffset { return true }
        }
        return false
    }

    private func noteRecord(offset: UInt64, position: Int, length: Int) {
        if bytesSinceIndexEntry >= Self.indexInterval {
            index.append((offset, position))
            bytesSinceIndexEntry = 0
        }
        bytesSinceIndexEntry += length
        nextOffset = offset + 1
    }

    /// Writes `payloads` as the next records, without syncing; returns the first offset.
    /// On a failed write the partial bytes are cut off again, so the segment is as before.
    func append(_ payloads: [[UInt8]]) throws(LogIOError) -> UInt64 {
        let first = nextOffset
        var buffer: [UInt8] = []
        buffer.reserveCapacity(payloads.reduce(0) { $0 + $1.count + RecordFrame.headerSize + 8 })
        var positions: [(Int, Int)] = []
        for (index, payload) in payloads.enumerated() {
            let start = buffer.count
            RecordFrame.append(offset: first + UInt64(index), payload: payload, to: &buffer)
            positions.append((start, buffer.count - start))
        }
        let base = file.size
        do {
            try file.append(buffer)
        } catch {
            // Part of the batch may be in the file: cut it, or a shorter later batch would leave
            // stale copies of these offsets after its end.
            try file.truncate(to: base)
            throw error
        }
        for (index, (start, length)) in positions.enumerated() {
            noteRecord(offset: first + UInt64(index), position: base + start, length: length)
        }
        return first
    }

    func sync() throws(LogIOError) { try file.sync() }

    /// Records from `offset` on, up to about `maxBytes` (at least one record if any).
    func read(from offset: UInt64, maxBytes: Int) throws(LogIOError) -> [(offset: UInt64, payload: [UInt8])] {
        guard offset >= baseOffset, offset < nextOffset else { return [] }
        let entry = index.last { $0.offset <= offset } ?? (baseOffset, 0)
        var position = entry.position
        var records: [(offset: UInt64, payload: [UInt8])] = []
        var bytes = 0
        while position < file.size, records.isEmpty || bytes < maxBytes {
            let window = try file.read(at: position, count: max(Self.scanWindow, maxBytes))
            var cursor = 0
            while case .record(let found, let payload, let next) = RecordFrame.scan(window, at: cursor) {
                if found >= offset {
                    records.append((found, Array(payload)))
                    bytes += payload.count
                }
                cursor = next
                if !records.isEmpty && bytes >= maxBytes { break }
            }
            guard cursor > 0 else { break }
            position += cursor
        }
        return records
    }

    func close() { file.close() }
}
