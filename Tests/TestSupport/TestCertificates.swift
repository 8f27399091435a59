import Foundation

/// The project's test certificate authority (`scripts/test-ca`), made once per test process in
/// a temporary directory: `ca.pem`, `server.pem`/`.key` (localhost, 127.0.0.1), client
/// certificates for `alice` and `alice/phone` (`client-alice.pem`, `client-alice-phone.pem`),
/// and `rogue-ca.pem` with `rogue-client.pem`, which the CA did not sign.
public enum TestCertificates {
    public static let directory: String = {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("courier-test-ca-\(getpid())-\(UUID().uuidString.prefix(8))").path
        do {
            try TestPostgres.run("\(TestPostgres.repositoryRoot)/scripts/test-ca", [directory, "alice", "alice/phone"])
        } catch {
            fatalError("scripts/test-ca failed (is openssl installed? scripts/install-deps): \(error)")
        }
        atexit { try? FileManager.default.removeItem(atPath: TestCertificates.directory) }
        return directory
    }()

    public static func path(_ file: String) -> String { "\(directory)/\(file)" }
}
