import CourierClient
import XCTest

/// The status bar says what a person can act on, in words, naming the server.
final class StatusTextTests: XCTestCase {
    func testEachConnectionStateReadsAsWhatToDo() {
        let now = ContinuousClock.now
        func text(_ connection: ClientEngine.Connection) -> String {
            var status = ClientEngine.Status()
            status.connection = connection
            return status.connectionText(server: "127.0.0.1:5683", now: now)
        }
        let libraryError = "cannot connect: Connection errors: SingleConnectionFailure(target: [IPv4]127.0.0.1/127.0.0.1:8080, error: connection reset (error set): Connection refused (errno: 111))"
        XCTAssertEqual(text(.disconnected(reason: libraryError, retryAt: now + .milliseconds(3_200))), "server unreachable (127.0.0.1:5683), retrying in 4 s")
        XCTAssertEqual(text(.disconnected(reason: libraryError, retryAt: now - .seconds(1))), "server unreachable (127.0.0.1:5683), retrying now")
        XCTAssertEqual(text(.refused(reason: "bad token")), "token refused: run courier login again")
        XCTAssertEqual(text(.refused(reason: "closed 1008 bad token")), "token refused: run courier login again")
        XCTAssertEqual(text(.refused(reason: "closed 1001 replaced by a newer session of this device")), "this device connected from elsewhere: restart courier here to take over")
        XCTAssertEqual(text(.connecting), "connecting to 127.0.0.1:5683")
        XCTAssertEqual(text(.connected), "connected")
        for connection in [ClientEngine.Connection.disconnected(reason: libraryError, retryAt: now), .refused(reason: libraryError)] {
            XCTAssertFalse(text(connection).contains("Connection errors"), "no library error text on the screen")
        }
    }
}
