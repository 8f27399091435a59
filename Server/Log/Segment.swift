import Foundation

/// One segment of a partition: a file of records named by its base offset, with a sparse
/// in-memory index rebuilt by the recovery scan.
///
/// One writer thread appends; a sync thread marks what fdatasync made durable; readers see
/// only durable records, so a consumer never acts on a record a crash could still take back.
final class Segment: @unchecked Sendable {
    // @unchecked: `index`, `written`, `durable` and `bytesSinceIndexEntry` are guarded by
    // `lock`. File reads (pread) and syncs run beside the writer's pwrite without it.

    /// Bytes between index entries: a read seeks to the nearest entry below, then scans.
    static let indexInterval = 4 * 1024
    /// A read window large enough for the largest record.
    static let scanWindow = 2 * RecordFrame.maxPayloadSize

    /// The next offset and the end of the file at one moment.
    struct Position: Equatable {
        var offset: UInt64
        var byte: Int
    }

    let baseOffset: UInt64
    let name: String
    private let file: any LogFile
    private let lock = NSLock()
    private var index: [(offset: UInt64, position: Int)] = []
    private var bytesSinceIndexEntry = Int.max
    private var written: Position
    private var durable: Position
    private var isClosed = false

    /// The offset the next appended record gets.
    var nextOffset: UInt64 { lock.withLock { written.offset } }
    /// Records below this offset are on stable storage.
    var durableNextOffset: UInt64 { lock.withLock { durable.offset } }
    /// Bytes written so far (writer thread only).
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
        self.written = Position(offset: baseOffset, byte: 0)
        self.durable = written
    }

    deinit {
        // Partitions drop segments rather than close them, so a reader holding one finishes
        // its read on a valid descriptor.
        if !isClosed { file.close() }
    }

    /// A new, empty segment.
    static func create(baseOffset: UInt64, file: any LogFile) -> Segment {
        Segment(baseOffset: baseOffset, name: fileName(baseOffset: baseOffset), file: file)
    }

    /// Opens an existing segment, checking every record. In the newest segment an invalid tail
    /// with nothing valid after it is a write that never finished (never acknowledged, since
    /// acknowledgement waits for sync): it is cut off. Anywhere else it is an error. A tail of
    /// zeros is the room written ahead of the records: not counted as cut. Only the newest
    /// segment has one (a segment is trimmed when it rolls), but one in an older segment is
    /// read the same way.
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
                    guard offset == segment.written.offset else {
                        invalid = "offset \(offset) where \(segment.written.offset) was expected"
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
                // Zeros from here to the end are room the file keeps written ahead
                // (`PosixLogFile`), not a torn write: the records end here. The newest segment
                // is cut there (and synced), so its writer appends from there.
                if try segment.isZero(from: badPosition) {
                    if isNewest {
                        do { try file.truncate(to: badPosition) } catch { throw .io(error) }
                    }
                    segment.durable = segment.written
                    return (segment, 0)
                }
                // Records after the invalid bytes make them damage, unless a page among them
                // still reads as before they were written: a write that a power cut stopped
                // before it all reached the disk (pages go out in any order), so nothing from
                // here was synced or acknowledged.
                guard isNewest, try segment.nextValidRecord(after: badPosition).map({ next throws(LogRecoveryError) in
                    try segment.containsZeroPage(from: badPosition, to: next)
                }) ?? true else {
                    throw .corruptRecord(segment: segment.name, position: badPosition, expectedOffset: segment.written.offset, reason: invalid)
                }
                let cut = file.size - badPosition
                do { try file.truncate(to: badPosition) } catch { throw .io(error) }
                segment.durable = segment.written
                return (segment, cut)
            }
            position += cursor
        }
        if isNewest {
            // A killed process leaves written but unsynced records in the page cache: sync them
            // before anyone reads them, so a power cut cannot take back what was read.
            do { try file.sync() } catch { throw .io(error) }
        }
        segment.durable = segment.written
        return (segment, 0)
    }

    /// Where the first intact record with an offset not yet seen starts after `position`, if
    /// one does: then the invalid bytes are damage inside the log, not an unfinished write at
    /// its end. Runs only at startup, over the rest of one segment, and only when something is
    /// already wrong.
    private func nextValidRecord(after position: Int) throws(LogRecoveryError) -> Int? {
        let tail: [UInt8]
        do { tail = try file.read(at: position + 1, count: file.size - position - 1) } catch { throw .io(error) }
        for candidate in tail.indices {
            if case .record(let offset, _, _) = RecordFrame.scan(tail, at: candidate), offset >= written.offset { return position + 1 + candidate }
        }
        return nil
    }

    /// Whether a page (4 KiB, aligned in the file, the page cache's unit of writeback) between
    /// `start` and `end` still reads as the disk had it before the writes from `start` on: the
    /// rest of `start`'s own page zero (a page that held synced records up to `start`), or a
    /// whole page zero. That is what a page the writer wrote, but the disk never got, reads as
    /// over the zeros written ahead (or past the file's synced end). The rest of the own page
    /// counts only when it holds a whole length field: a written record's length is never
    /// zero, but its low bytes alone may be (a length of 256), and damage after them must stay
    /// a loud error, not a cut.
    private func containsZeroPage(from start: Int, to end: Int) throws(LogRecoveryError) -> Bool {
        let page = 4096
        let ownPageEnd = (start / page + 1) * page
        guard ownPageEnd <= end else { return false }
        let bytes: [UInt8]
        do { bytes = try file.read(at: start, count: end - start) } catch { throw .io(error) }
        if ownPageEnd - start >= 4, bytes[..<(ownPageEnd - start)].allSatisfy({ $0 == 0 }) { return true }
        return stride(from: ownPageEnd - start, through: bytes.count - page, by: page).contains { offset in
            bytes[offset..<offset + page].allSatisfy { $0 == 0 }
        }
    }

    /// Whether every byte from `position` to the end of the file is zero. Reads in chunks and
    /// stops at the first other byte; runs only at startup.
    private func isZero(from position: Int) throws(LogRecoveryError) -> Bool {
        var start = position
        while start < file.size {
            let chunk: [UInt8]
            do { chunk = try file.read(at: start, count: min(1 << 20, file.size - start)) } catch { throw .io(error) }
            guard !chunk.isEmpty else { break }
            guard chunk.allSatisfy({ $0 == 0 }) else { return false }
            start += chunk.count
        }
        return true
    }

    /// Callers hold `lock` (or run before the segment is shared, during recovery).
    private func noteRecord(offset: UInt64, position: Int, length: Int) {
        if bytesSinceIndexEntry >= Self.indexInterval {
            index.append((offset, position))
            bytesSinceIndexEntry = 0
        }
        bytesSinceIndexEntry += length
        written = Position(offset: offset + 1, byte: position + length)
    }

    /// Writes `payloads` as the next records, without syncing; returns the first offset.
    /// On a failed write the partial bytes are cut off again, so the segment is as before.
    @discardableResult
    func append(_ payloads: [[UInt8]]) throws(LogIOError) -> UInt64 {
        let first = lock.withLock { written.offset }
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
        lock.withLock {
            for (index, (start, length)) in positions.enumerated() {
                noteRecord(offset: first + UInt64(index), position: base + start, length: length)
            }
        }
        return first
    }

    /// The byte position of the last index entry at or below `offset` (binary search; callers
    /// hold `lock`).
    private func indexPosition(atOrBelow offset: UInt64) -> Int {
        var low = 0
        var high = index.count
        while low < high {
            let middle = (low + high) / 2
            if index[middle].offset <= offset { low = middle + 1 } else { high = middle }
        }
        return low == 0 ? 0 : index[low - 1].position
    }

    /// Cuts whatever the file holds past its records (the zeros written ahead) and syncs that:
    /// for a segment that is full and takes no more appends.
    func trimToRecords() throws(LogIOError) {
        try file.truncate(to: file.size)
    }

    /// Where the written records end: what a sync started now will make durable.
    var writtenPosition: Position { lock.withLock { written } }

    /// Makes every written record durable; readers see them from then on.
    func sync() throws(LogIOError) {
        let target = writtenPosition
        try file.sync()
        markDurable(target)
    }

    /// Records up to `position` are on stable storage (a sync that covered them succeeded).
    private func markDurable(_ position: Position) {
        lock.withLock {
            if position.offset > durable.offset { durable = position }
        }
    }

    /// Durable records from `offset` on, up to about `maxBytes` (at least one record if any).
    func read(from offset: UInt64, maxBytes: Int) throws(LogIOError) -> [(offset: UInt64, payload: [UInt8])] {
        let (start, end) = lock.withLock { () -> (Int, Int) in
            guard offset >= baseOffset, offset < durable.offset else { return (0, 0) }
            return (indexPosition(atOrBelow: offset), durable.byte)
        }
        var position = start
        var records: [(offset: UInt64, payload: [UInt8])] = []
        var bytes = 0
        while position < end, records.isEmpty || bytes < maxBytes {
            let window = try file.read(at: position, count: min(end - position, max(Self.scanWindow, maxBytes)))
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

    /// Closes the file now (tests and recovery); partitions let `deinit` do it.
    func close() {
        lock.withLock {
            guard !isClosed else { return }
            isClosed = true
            file.close()
        }
    }
}
