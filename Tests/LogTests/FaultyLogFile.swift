import Foundation
@testable import CourierLog

/// An in-memory segment file that knows which bytes were synced, and can "crash": everything
/// not yet synced is dropped, torn at a seeded point, or torn and followed by garbage, the way
/// a power cut leaves a file. Locked, since a partition's writer and sync threads share it.
final class FaultyLogFile: LogFile, @unchecked Sendable {
    private let lock = NSLock()
    private var durable: [UInt8]
    private var content: [UInt8]

    /// How long a sync takes, so a partition's writer can get ahead of its sync thread.
    private let syncMicroseconds: UInt32

    init(content: [UInt8] = [], syncMicroseconds: UInt32 = 0) {
        durable = content
        self.content = content
        self.syncMicroseconds = syncMicroseconds
    }

    var size: Int { lock.withLock { content.count } }
    func append(_ bytes: [UInt8]) throws(LogIOError) { lock.withLock { content += bytes } }
    /// Like fdatasync: what was written before the call is durable once it returns.
    func sync() throws(LogIOError) {
        let target = lock.withLock { content.count }
        if syncMicroseconds > 0 { usleep(syncMicroseconds) }
        lock.withLock {
            if target > durable.count { durable = Array(content.prefix(target)) }
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
            durable = content
        }
    }
    func close() {}

    /// What a crash now leaves on disk.
    func crash(using generator: inout some RandomNumberGenerator) -> [UInt8] {
        lock.withLock {
            let unsynced = content[durable.count...]
            // A file with nothing unsynced comes back as it is: no write was under way to tear.
            guard !unsynced.isEmpty else { return durable }
            switch Int.random(in: 0..<3, using: &generator) {
            case 0:
                return durable
            case 1:
                return durable + unsynced.prefix(Int.random(in: 0...unsynced.count, using: &generator))
            default:
                let kept = unsynced.prefix(Int.random(in: 0...unsynced.count, using: &generator))
                let garbage = (0..<Int.random(in: 1...64, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
                return durable + kept + garbage
            }
        }
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

    init(files: [String: [UInt8]] = [:], syncMicroseconds: UInt32 = 0) {
        self.files = files.mapValues { FaultyLogFile(content: $0, syncMicroseconds: syncMicroseconds) }
        durableEntries = self.files
        self.syncMicroseconds = syncMicroseconds
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
        let file = FaultyLogFile(syncMicroseconds: syncMicroseconds)
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

    /// What a crash now leaves: the durable entries, each file torn its own way.
    func crash(using generator: inout some RandomNumberGenerator) -> FaultyFileSystem {
        let entries = lock.withLock { durableEntries }
        var survived: [String: [UInt8]] = [:]
        for path in entries.keys.sorted() { survived[path] = entries[path]!.crash(using: &generator) }
        return FaultyFileSystem(files: survived)
    }
}
