@testable import CourierActors
@testable import CourierCore
@testable import CourierIngest
import CourierLog
@testable import CourierSQLite
import Foundation
import Logging
import XCTest

/// A partition's consumer has one batch in flight; it reads the next when the store's linger
/// is over, so what arrives meanwhile shares a transaction instead of queueing one by one.
final class ChatConsumersBatchingTests: XCTestCase {
    typealias Fixture = ChatConsumersDurabilityTests

    func testWhatArrivesDuringTheLingerIsReadIntoOneBatch() async throws {
        let (storage, log) = try Fixture.storeAndLog(partitions: 1, for: self)
        let user = try await storage.createUser(name: "u")
        let device = try await storage.createDevice(userID: user.id, name: "d")
        let chat = try await storage.createChat(name: "c", memberIDs: [user.id])

        let journal = Fixture.Journal()
        var configuration = ChatConsumers.Configuration()
        // Long enough that the two appends below fall inside it on a slow machine.
        configuration.storeLinger = .milliseconds(500)
        let consumers = Fixture.consumers(of: log, storage: storage, journal: journal, configuration: configuration)
        let running = Task { await consumers.run() }
        let ids = MessageIDGenerator(nodeID: 0)
        func append(_ text: String) async throws -> UInt64 {
            let message = AcceptedMessage(
                serverMessageID: ids.next(), chatID: chat.id, senderUserID: user.id, senderDeviceID: device.id,
                clientMessageID: text, text: text, clientSentAtMs: 0, acceptedAtMs: 0
            )
            _ = try await log.append(message.serializedBytes(), partition: 0)
            return message.serverMessageID
        }
        func storedBatches() -> [[UInt64]] {
            journal.all.compactMap { if case .stored(let ids) = $0 { ids } else { nil } }
        }

        let first = try await append("first")
        try await waitUntil("the first message stored") { storedBatches() == [[first]] }
        // Both come while the first transaction's linger runs.
        let second = try await append("second")
        try await Task.sleep(for: .milliseconds(20))
        let third = try await append("third")
        try await waitUntil("every message stored") { storedBatches().joined().count == 3 }
        XCTAssertEqual(storedBatches(), [[first], [second, third]], "the two that came during the linger share one batch")

        consumers.stop()
        await running.value
    }
}
