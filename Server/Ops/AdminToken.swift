import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The admin API's bearer token: 32 random bytes written as 64 lowercase hex characters and a
/// newline in `<data directory>/admin.token`, mode 0600. Whoever can read that file is an admin.
/// Made once and then reused; `serve` and `courier-server admin-token` both make sure of it.
public enum AdminToken {
    public static func path(dataDirectory: String) -> String { "\(dataDirectory)/admin.token" }

    /// The token in the file, creating the file first when it is missing. Two processes that
    /// race here end with the same token: the file appears whole or not at all (a private
    /// temporary file hard-linked into place, which fails if another got there first).
    public static func ensure(dataDirectory: String) throws(AdminTokenError) -> String {
        let path = path(dataDirectory: dataDirectory)
        if let token = try read(path) { return token }
        let token = generate()
        let temporary = "\(path).\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw AdminTokenError(path: temporary, operation: "create", errno: errno) }
        defer { unlink(temporary) }
        let bytes = Array((token + "\n").utf8)
        let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) } == bytes.count && fsync(descriptor) == 0
        let writeError = errno
        close(descriptor)
        guard written else { throw AdminTokenError(path: temporary, operation: "write", errno: writeError) }
        if link(temporary, path) != 0 {
            guard errno == EEXIST, let theirs = try read(path) else { throw AdminTokenError(path: path, operation: "link", errno: errno) }
            return theirs
        }
        return token
    }

    /// Whether `presented` is `token`, compared in a time that does not depend on where they differ.
    public static func matches(_ presented: String, _ token: String) -> Bool {
        let a = Array(presented.utf8)
        let b = Array(token.utf8)
        var difference: UInt8 = a.count == b.count ? 0 : 1
        for index in 0..<b.count {
            difference |= (index < a.count ? a[index] : 0) ^ b[index]
        }
        return difference == 0
    }

    static func generate() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<32).map { _ in
            let byte = UInt8.random(in: 0...255, using: &generator)
            return String(byte >> 4, radix: 16) + String(byte & 0xF, radix: 16)
        }.joined()
    }

    /// The token in an existing file; nil when there is no file.
    private static func read(_ path: String) throws(AdminTokenError) -> String? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw AdminTokenError(path: path, operation: "read", detail: "\(error)")
        }
        let token = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !token.isEmpty, !token.contains(where: \.isWhitespace) else {
            throw AdminTokenError(path: path, operation: "read", detail: "not a token; remove the file to have a new one made")
        }
        return token
    }
}

/// The admin token file could not be read or made.
public struct AdminTokenError: Error, CustomStringConvertible {
    public var description: String

    init(path: String, operation: String, errno: Int32) {
        description = "\(path): \(operation) failed: \(String(cString: strerror(errno)))"
    }

    init(path: String, operation: String, detail: String) {
        description = "\(path): \(operation) failed: \(detail)"
    }
}
