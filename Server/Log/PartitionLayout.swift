import Foundation

/// How a log directory routes senders to partitions (the partition count and the users per
/// range), kept in `partitions/layout` from the directory's first start. Opening the log with
/// another layout would leave records unread in partitions it no longer opens, and put a
/// chat's later messages in another partition than its earlier ones (whose order then depends
/// on two consumers): so the layout of a directory that holds records never changes, and
/// asking for another one is an error that changes nothing.
struct PartitionLayout: Equatable, CustomStringConvertible {
    var partitionCount: Int
    var usersPerRange: UInt64

    static let fileName = "layout"
    /// Before the layout file, every directory was made with ranges of this size.
    static let legacyUsersPerRange: UInt64 = 64
    /// Numbered entries at or above this are not partitions (the server allows 1-1024).
    static let partitionLimit = 1024

    var description: String { "\(partitionCount) partitions of \(usersPerRange)-user ranges" }

    /// The layout `directory` (the log's `partitions` directory) was created with, recorded
    /// there when it has none yet. `partitionCount` nil asks for none in particular: a
    /// directory keeps what it has, a new one takes `newCount`; a count asked for must be the
    /// directory's. A directory from before the file existed is judged by its partitions'
    /// directories; one whose partitions hold no record (a first start cut short) takes the
    /// count asked for.
    static func settle(
        partitionCount requested: Int?, usersPerRange: UInt64, newCount: Int, in directory: String, logDirectory: String,
        partition: Partition.Configuration, fileSystem: any LogFileSystem
    ) throws(LogRecoveryError) -> PartitionLayout {
        let path = "\(directory)/\(fileName)"
        do { try fileSystem.createDirectory(directory) } catch { throw .io(error) }
        if let recorded = try read(path) {
            let wanted = PartitionLayout(partitionCount: requested ?? recorded.partitionCount, usersPerRange: usersPerRange)
            guard recorded == wanted else { throw .layoutChanged(directory: logDirectory, recorded: recorded.description, requested: wanted.description) }
            return recorded
        }
        let existing = partitionDirectories(in: directory).sorted()
        let legacy = PartitionLayout(partitionCount: existing.count, usersPerRange: legacyUsersPerRange)
        let complete = existing == Array(0..<existing.count)
        let wanted = PartitionLayout(partitionCount: requested ?? (complete && !existing.isEmpty ? existing.count : newCount), usersPerRange: usersPerRange)
        if !existing.isEmpty && !(complete && legacy == wanted) {
            guard try allEmpty(existing.map { "\(directory)/\($0)" }, partition: partition, fileSystem: fileSystem) else {
                let found = complete ? legacy.description : "the partition directories \(existing.map(String.init).joined(separator: ", ")) (not numbered from 0 without a gap)"
                throw .layoutChanged(directory: logDirectory, recorded: found, requested: requested == nil ? "any partition count" : wanted.description)
            }
        }
        // Written before any partition is created, so a first start cut short is finished
        // with the same layout by the next.
        do { try PosixLogFile.replace(path, in: directory, with: Array(wanted.rendered.utf8)) } catch { throw .io(error) }
        return wanted
    }

    /// The recorded layout; nil only when there is no file.
    private static func read(_ path: String) throws(LogRecoveryError) -> PartitionLayout? {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            if errno == ENOENT { return nil }
            throw .io(LogIOError(operation: .open, path: path, errno: errno))
        }
        let file = FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
        // A layout is two short lines and a checksum; a larger file is not one.
        guard let data = try? file.read(upToCount: 4097) ?? Data(), data.count <= 4096 else {
            throw .layoutUnreadable(path: path, reason: "it cannot be read, or is not a layout")
        }
        return try parse(String(decoding: data, as: UTF8.self), path: path)
    }

    private static func partitionDirectories(in directory: String) -> [Int] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).compactMap { name in
            guard let index = Int(name), String(index) == name, (0..<partitionLimit).contains(index) else { return nil }
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: "\(directory)/\(name)", isDirectory: &isDirectory), isDirectory.boolValue else { return nil }
            return index
        }
    }

    /// Whether none of these partitions holds a record (opening one recovers it, as the log's
    /// own start would).
    private static func allEmpty(_ directories: [String], partition configuration: Partition.Configuration, fileSystem: any LogFileSystem) throws(LogRecoveryError) -> Bool {
        for directory in directories {
            let partition = try Partition(directory: directory, configuration: configuration, fileSystem: fileSystem)
            let empty = partition.durableNextOffset == 0
            partition.close()
            if !empty { return false }
        }
        return true
    }

    // "partitions N", "users-per-range M" (`ChecksummedText`).
    private var rendered: String {
        ChecksummedText.render("partitions \(partitionCount)\nusers-per-range \(usersPerRange)\n")
    }

    private static func parse(_ text: String, path: String) throws(LogRecoveryError) -> PartitionLayout {
        guard let body = ChecksummedText.body(of: text) else { throw .layoutUnreadable(path: path, reason: "its checksum does not match") }
        let lines = body.split(separator: "\n")
        guard lines.count == 2, lines[0].hasPrefix("partitions "), let count = Int(lines[0].dropFirst("partitions ".count)), (1...partitionLimit).contains(count),
              lines[1].hasPrefix("users-per-range "), let range = UInt64(lines[1].dropFirst("users-per-range ".count)), range > 0
        else { throw .layoutUnreadable(path: path, reason: "its values are not a layout") }
        return PartitionLayout(partitionCount: count, usersPerRange: range)
    }
}
