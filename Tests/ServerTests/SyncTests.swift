import CoAP
import CourierProtocol
import Foundation
import TestSupport
import XCTest

/// `POST /v1/sync` on the real binary: a polling device gets what it lacks, chat by chat, in
/// order, with no gap, and never a chat its user is not in.
final class SyncTests: XCTestCase {
    func testSyncAnswersWhatTheDeviceLacksInItsOwnChatsOnly() async throws {
        try await withServer { server in
            let alice = try await server.account("alice")
            let bob = try await server.account("bob")
            let first = try await server.chat("first", members: ["alice", "bob"])
            let second = try await server.chat("second", members: ["alice", "bob"])
            let secret = try await server.chat("secret", members: ["bob"])
            let peer = server.peer
            try await withClient { client in
                for (chat, count) in [(first, 5), (second, 3), (secret, 2)] {
                    for number in 0..<count {
                        let response = try await client.send(SendMessage(clientMessageID: "\(chat)-\(number)", chatID: chat, text: "message \(number)", clientSentAtMs: 0), token: bob.token, to: peer)
                        XCTAssertEqual(response.code, .created)
                    }
                }
            }
            _ = try await server.waitForHistory("first", count: 5)
            _ = try await server.waitForHistory("second", count: 3)
            _ = try await server.waitForHistory("secret", count: 2)

            try await withClient { client in
                func sync(_ request: SyncRequest, token: String) async throws -> (CoAPCode, SyncResponse?) {
                    let response = try await client.request(.request(.post, path: "/v1/sync", query: ["t=\(token)"], payload: request.serializedBytes(), contentFormat: CoAPContentFormat.protobuf), to: peer)
                    return (response.code, try? SyncResponse(serializedBytes: response.payload))
                }
                let (code, everything) = try await sync(SyncRequest(have: []), token: alice.token)
                XCTAssertEqual(code, .content)
                let got = everything?.messages.map { "\($0.chatID):\($0.chatSequence)" }
                XCTAssertEqual(got, (1...5).map { "\(first):\($0)" } + (1...3).map { "\(second):\($0)" }, "both chats, in order; nothing of the secret chat")
                XCTAssertEqual(everything?.more, false)

                // Naming the secret chat does not open it.
                let (_, sneaky) = try await sync(SyncRequest(have: [ChatCursor(chatID: secret, sequence: 0)]), token: alice.token)
                XCTAssertFalse(sneaky?.messages.contains { $0.chatID == secret } ?? true)

                // From stated cursors, two at a time: no gap between pages.
                var have = [ChatCursor(chatID: first, sequence: 3), ChatCursor(chatID: second, sequence: 0)]
                var pages: [[String]] = []
                while true {
                    let (pageCode, page) = try await sync(SyncRequest(have: have, limit: 2), token: alice.token)
                    XCTAssertEqual(pageCode, .content)
                    guard let page else { return XCTFail("no SyncResponse") }
                    pages.append(page.messages.map { "\($0.chatID):\($0.chatSequence)" })
                    for message in page.messages {
                        have.removeAll { $0.chatID == message.chatID }
                        have.append(ChatCursor(chatID: message.chatID, sequence: message.chatSequence))
                    }
                    if !page.more { break }
                    XCTAssertLessThan(pages.count, 10, "more must end")
                }
                XCTAssertEqual(pages.flatMap { $0 }, ["\(first):4", "\(first):5"] + (1...3).map { "\(second):\($0)" })
                XCTAssertTrue(pages.allSatisfy { $0.count <= 2 }, "the limit holds")

                let (badCode, _) = try await sync(SyncRequest(have: []), token: "nope")
                XCTAssertEqual(badCode, .unauthorized)
                let garbage = try await client.request(.request(.post, path: "/v1/sync", query: ["t=\(alice.token)"], payload: [0xFF, 0xFF]), to: peer)
                XCTAssertEqual(garbage.code, .badRequest)
            }
        }
    }
}
