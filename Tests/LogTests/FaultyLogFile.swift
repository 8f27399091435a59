@testable import CourierLog

/// An in-memory segment file that knows which bytes were synced, and can "crash": everything
/// not yet synced is dropped, torn at a seeded point, or torn and followed by garbage, the way
/// a power cut leaves a file.
final class FaultyLogFile: LogFile {
    private(set) var durable: [UInt8]
    private var content: [UInt8]

    init(content: [UInt8] = []) {
        durable = content
        self.content = content
    }

    var size: Int { content.count }
    func append(_ bytes: [UInt8]) throws(LogIOError) { content += bytes }
    func sync() throws(LogIOError) { durable = content }
    func read(at position: Int, count: Int) throws(LogIOError) -> [UInt8] {
        guard position < content.count else { return [] }
        return Array(content[position..<min(content.count, position + count)])
    }
    func truncate(to length: Int) throws(LogIOError) {
        content = Array(content.prefix(length))
        durable = content
    }
    func close() {}

    /// What a crash now leaves on disk.
    func crash(using generator: inout some RandomNumberGenerator) -> [UInt8] {
        let unsynced = content[durable.count...]
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
