import Foundation
@testable import CourierLog

/// An in-memory segment file that knows which bytes were synced, and can "crash": everything
/// not yet synced is dropped, torn at a seeded point, torn and followed by garbage, or kept
/// page by page in any order (4 KiB pages, as the page cache writes them back), the way a power
/// cut leaves a file. With a `preallocation` it keeps zeros written ahead of its records, as
/// `PosixLogFile` does, so appends overwrite bytes that were synced as zeros. Locked, since a
/// partition's writer and sync threads share it.
final class FaultyLogFile: LogFile, @unchecked Sendable {
    static let pageSize = 4096

    private let lock = NSLock()
    /// The file as the disk has it.
    private var durable: [UInt8]
    /// The file as the process sees it: the records, then any zeros written ahead.
    private var content: [UInt8]
    /// Where the records end and the next append goes.
    private var recordsEnd: Int
    /// Bumped by every change, so a sync that started before a later one does not undo it.
    private var version = 0
    private var durableVersion = 0

    /// How long a sync takes, so a partition's writer can get ahead of its sync thread.
    private let syncMicroseconds: UInt32
    private let preallocation: Int

    init(content: [UInt8] = [], syncMicroseconds: UInt32 = 0, preallocation: Int = 0) {
        durable = content
        self.content = content
        recordsEnd = content.count
        self.syncMicroseconds = syncMicroseconds
        self.preallocation = preallocation
    }

    var size: Int { lock.withLock { recordsEnd } }
    func append(_ bytes: [UInt8]) throws(LogIOError) {
        lock.withLock {
            let end = recordsEnd + bytes.count
            if preallocation > 0 && end > content.count {
                content += [UInt8](repeating: 0, count: (end / preallocation + 1) * preallocation - content.count)
            }
            if end > content.count { content += [UInt8](repeating: 0, count: end - content.count) }
            content.replaceSubrange(recordsEnd..<end, with: bytes)
            recordsEnd = end
            version += 1
        }
    }
    /// Like fdatasync: what was written before the call is durable once it returns.
    func sync() throws(LogIOError) {
        let (snapshot, snapshotVersion) = lock.withLock { (content, version) }
        if syncMicroseconds > 0 { usleep(syncMicroseconds) }
        lock.withLock {
            if snapshotVersion > durableVersion {
                durable = snapshot
                durableVersion = snapshotVersion
            }
        }
    }
    func read(at position: Int, count: Int) throws(LogIOError) -> [UInt8] {
        lock.withLock {
            guard position < content.count else { return [] }
            return Array(content[position..<min(content.count, position + count)])
        }
    }
    func truncate(to length: Int) throws(LogIOError) {
        lock.withLock {
            content = Array(content.prefix(length))
            recordsEnd = content.count
            version += 1
            durable = content
            durableVersion = version
        }
    }
    func close() {}

    /// What a crash now leaves on disk.
    func crash(using generator: inout some RandomNumberGenerator) -> [UInt8] {
        lock.withLock {
            // Where the process's view starts to differ from the disk's: nothing differs, and
            // the file comes back as it is (no write was under way to tear).
            guard let firstChange = (0..<max(content.count, durable.count)).first(where: { $0 >= content.count || $0 >= durable.count || content[$0] != durable[$0] }) else {
                return durable
            }
            switch Int.random(in: 0..<4, using: &generator) {
            case 0:
                return durable
            case 1:
                return Self.overlay(durable, with: content[firstChange..<Int.random(in: firstChange...content.count, using: &generator)])
            case 2:
                let kept = content[firstChange..<Int.random(in: firstChange...content.count, using: &generator)]
                let garbage = (0..<Int.random(in: 1...64, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
                return Self.overlay(Self.overlay(durable, with: kept), with: garbage[...], at: kept.endIndex)
            default:
                // Each page that changed reached the disk whole, or not at all, in any order.
                var survived = durable
                for page in stride(from: firstChange / Self.pageSize * Self.pageSize, to: content.count, by: Self.pageSize) where Bool.random(using: &generator) {
                    survived = Self.overlay(survived, with: content[page..<min(content.count, page + Self.pageSize)])
                }
                return survived
            }
        }
    }

    /// `base` with `bytes` written over it at `bytes`' own positions (or at `position`),
    /// zeros filling any gap past its end.
    private static func overlay(_ base: [UInt8], with bytes: ArraySlice<UInt8>, at position: Int? = nil) -> [UInt8] {
        let start = position ?? bytes.startIndex
        var result = base
        if result.count < start + bytes.count { result += [UInt8](repeating: 0, count: start + bytes.count - result.count) }
        result.replaceSubrange(start..<start + bytes.count, with: bytes)
        return result
    }
}

/// An in-memory file system whose directory entries, like a real one's, survive a crash only
/// once the directory was synced: a segment created but not yet synced into its directory
/// vanishes, a deleted one may come back.
final class FaultyFileSystem: LogFileSystem, @unchecked Sendable {
    private let lock = NSLock()
    /// path -> file, as the running process sees it.
    private var files: [String: FaultyLogFile]
    /// path -> file, as the directories say after a crash.
    private var durableEntries: [String: FaultyLogFile]

    private let syncMicroseconds: UInt32
    private let preallocation: Int

    init(files: [String: [UInt8]] = [:], syncMicroseconds: UInt32 = 0, preallocation: Int = 0) {
        self.files = files.mapValues { FaultyLogFile(content: $0, syncMicroseconds: syncMicroseconds, preallocation: preallocation) }
        durableEntries = self.files
        self.syncMicroseconds = syncMicroseconds
        self.preallocation = preallocation
    }

    func createDirectory(_ path: String) throws(LogIOError) {}

    func contentsOfDirectory(_ path: String) throws(LogIOError) -> [String] {
        lock.withLock { files.keys.filter { ($0 as NSString).deletingLastPathComponent == path }.map { ($0 as NSString).lastPathComponent } }
    }

    func openFile(_ path: String, create: Bool) throws(LogIOError) -> any LogFile {
        lock.lock()
        defer { lock.unlock() }
        if let existing = files[path] { return existing }
        guard create else { throw LogIOError(operation: .open, path: path, errno: ENOENT) }
        let file = FaultyLogFile(syncMicroseconds: syncMicroseconds, preallocation: preallocation)
        files[path] = file
        return file
    }

    func syncDirectory(_ path: String) throws(LogIOError) {
        lock.withLock {
            durableEntries = durableEntries.filter { ($0.key as NSString).deletingLastPathComponent != path }
            for (name, file) in files where (name as NSString).deletingLastPathComponent == path { durableEntries[name] = file }
        }
    }

    func deleteFile(_ path: String) throws(LogIOError) {
        _ = lock.withLock { files.removeValue(forKey: path) }
    }

    func modificationDate(_ path: String) -> Date? { .distantPast }

    /// What a crash now leaves: the durable entries, each file torn its own way (the files
    /// that come back keep zeros written ahead as the crashed ones did).
    func crash(using generator: inout some RandomNumberGenerator) -> FaultyFileSystem {
        let entries = lock.withLock { durableEntries }
        var survived: [String: [UInt8]] = [:]
        for path in entries.keys.sorted() { survived[path] = entries[path]!.crash(using: &generator) }
        return FaultyFileSystem(files: survived, preallocation: preallocation)
    }
}
