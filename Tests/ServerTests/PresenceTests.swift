import CoAP
import CourierDevice
import CourierProtocol
import Foundation
import TestSupport
import XCTest

/// Presence: member lists say who is online, and changes reach the chats' other devices as
/// coalesced Presence pushes (read here by Python's websockets, a client no one here wrote).
final class PresenceTests: XCTestCase {
    /// A device's store that keeps nothing: these devices only need to be online.
    private final class NothingKept: PushStore {
        func cursors() async throws -> [ChatCursor] { [] }
        func store(_ messages: [ChatMessage]) async throws {}
        func delivered(_ receipt: DeliveryReceipt) async {}
    }

    private func members(_ server: ServerProcess, chat: UInt64, token: String) async throws -> [String: Bool] {
        try await withClient { client in
            let request = CoAPMessage.request(.post, path: "/v1/chats/members", query: ["t=\(token)"], payload: ChatMembersRequest(chatID: chat).serializedBytes(), contentFormat: CoAPContentFormat.protobuf)
            let answer = try await client.request(request, to: server.peer)
            XCTAssertEqual(answer.code, .content)
            return Dictionary(uniqueKeysWithValues: try ChatMembers(serializedBytes: answer.payload).members.map { ($0.name, $0.online) })
        }
    }

    func testAFleetComingOnlineAndLeavingReachesAMemberInAFewCoalescedFramesAndMemberListsSayWhoIsOnline() async throws {
        let others = 60
        try await withServer { server in
            let (status, json) = try await server.provision(["prefix": "p", "users": others + 1, "devices_per_user": 1, "chats": 1, "members_per_chat": others + 1, "token_days": 1])
            XCTAssertEqual(status, 200, "\(json)")
            let fleet = AdminAPITests.Fleet(json)
            let chat = fleet.chats[0].id
            let watcher = fleet.users[0]
            let crowd = Array(fleet.users.dropFirst())

            // The watcher listens for 9 s; the crowd comes online after 1 s and leaves after 4 s.
            async let heard = PushTests.run(server, [.hello(Hello(token: watcher.devices[0].token, have: [], clientName: "websockets"))], listen: 9)
            try await Task.sleep(for: .seconds(1))
            let clients = crowd.map { user in
                PushClient(configuration: PushClient.Configuration(host: "127.0.0.1", port: server.pushPort, token: user.devices[0].token), store: NothingKept())
            }
            let sessions = clients.map { client in Task { await client.run() } }
            try await Task.sleep(for: .seconds(3))
            let during = try await members(server, chat: chat, token: watcher.devices[0].token)
            XCTAssertEqual(during.count, others + 1)
            XCTAssertEqual(during.filter(\.value).count, others + 1, "everyone online, the watcher too: \(during.filter { !$0.value })")
            for session in sessions { session.cancel() }
            for session in sessions { await session.value }

            let frames = try await heard.compactMap(PushTests.serverFrame).compactMap { frame -> Presence? in
                if case .push(.presence(let presence)) = frame { presence } else { nil }
            }
            let crowdIDs = Set(crowd.map(\.id))
            XCTAssertEqual(Set(frames.flatMap(\.onlineUserIDs)), crowdIDs, "each of the crowd came online: \(frames)")
            XCTAssertEqual(Set(frames.flatMap(\.offlineUserIDs)), crowdIDs, "and went offline")
            // 120 changes in a few seconds: a frame per round (every 2 s), not one per change.
            XCTAssertLessThanOrEqual(frames.count, 6, "coalesced: \(frames.map { ($0.onlineUserIDs.count, $0.offlineUserIDs.count) })")

            let after = try await members(server, chat: chat, token: watcher.devices[0].token)
            XCTAssertEqual(after.filter(\.value).count, 0, "the watcher's session is over and the crowd left: \(after.filter(\.value))")
        }
    }
}
