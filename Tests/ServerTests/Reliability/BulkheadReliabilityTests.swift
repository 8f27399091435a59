import CoAP
import CourierProtocol
import Foundation
import NIOCore
import TestSupport
import XCTest

/// One part in trouble does not take the rest down: a flooding device is turned away with 4.29
/// while the others keep their latency, a flood into one chat leaves the other chats flowing,
/// and a chat whose storage fails waits alone, retried, while every other chat goes on.
final class BulkheadReliabilityTests: ReliabilityTestCase {
    /// The well-behaved fleet: 40 devices (20 users with 2 each, chats of 4), 1 msg/s each.
    private func wellBehaved(prefix: String, seconds: Int) -> [String] {
        [
            "--prefix", prefix, "--users", "20", "--devices-per-user", "2", "--members", "4", "--rate", "1",
            "--duration", "\(seconds)", "--ramp-up", "1", "--warmup", "2", "--seed", "8",
        ]
    }

    func testAFloodingDeviceGets429WhileOthersKeepTheirLatency() async throws {
        let seconds = level.pick(short: 10, full: 30, soak: 120)
        let floodRate = 1_000
        fault = "one device sends \(floodRate) msgs/s (limit 50/s, burst 100)"
        try await withServer { server in
            // A first short run warms the new server up (storage, actors); the baseline follows.
            _ = try await Simulator.run(server, wellBehaved(prefix: "prime", seconds: 3))
            let baseline = try await Simulator.run(server, wellBehaved(prefix: "calm", seconds: seconds))
            let flooderAccount = try await server.account("flooder")
            _ = try await server.account("listener")
            let floodChat = try await server.chat("flooded", members: ["flooder", "listener"])
            let flooder = try await UDPFlooder.start()
            let arguments = wellBehaved(prefix: "busy", seconds: seconds)
            async let loaded = Simulator.run(server, arguments)
            let sent = try await flooder.flood(to: server.peer, token: flooderAccount.token, chatID: floodChat, ratePerSecond: floodRate, for: .seconds(seconds + 3))
            let run = try await loaded
            try await Task.sleep(for: .seconds(1))
            await flooder.close()
            let answers = flooder.answersByCode
            let stored = try await server.history("flooded").count
            let calm = try XCTUnwrap(baseline.latency("send_to_delivery", "p99"))
            let busy = try XCTUnwrap(run.latency("send_to_delivery", "p99"))
            // Stated margin: the others' p99 at most three times its unloaded value plus 100 ms.
            // Every refused request still costs the server a decode and an answer, on the same
            // 2 cores as this fleet, in a debug build.
            let margin = calm * 3 + 100
            figure = String(format: "flooder: %d sent, %d × 4.29, %d × 2.01, %d stored; others' p99 %.1f ms unloaded, %.1f ms loaded (margin ≤ %.0f ms)",
                            sent, answers["4.29"] ?? 0, answers["2.01"] ?? 0, stored, calm, busy, margin)
            XCTAssertEqual(baseline.status, 0, baseline.table)
            XCTAssertEqual(run.status, 0, run.table)
            XCTAssertGreaterThan(answers["4.29"] ?? 0, sent / 2, "most of the flood is turned away: \(answers)")
            // What the bucket lets through: its burst plus its rate over the flood, and a little slack.
            XCTAssertLessThanOrEqual(stored, 100 + 50 * (seconds + 4) + 50, "the flood is held to the device's rate")
            XCTAssertEqual(stored, answers["2.01"] ?? 0, "every accepted flood message is stored once")
            XCTAssertLessThanOrEqual(busy, margin, "others' p99 \(busy) ms against \(calm) ms unloaded\n\(run.table)")
        }
    }

    /// 20 devices flood one chat (its single writer numbers every message) while a judged
    /// fleet sends into its own chats: the fleet's p99 stays within the margin of its unloaded
    /// value, and every flood message acknowledged is stored in the hot chat.
    func testAFloodIntoOneChatDoesNotStallOtherChats() async throws {
        let seconds = level.pick(short: 10, full: 30, soak: 120)
        let flooders = 20
        let ratePerDevice = 20
        fault = "\(flooders) devices send \(flooders * ratePerDevice) msgs/s into one chat of \(flooders) members"
        try await withServer { server in
            _ = try await Simulator.run(server, wellBehaved(prefix: "prime", seconds: 3))
            let baseline = try await Simulator.run(server, wellBehaved(prefix: "calm", seconds: seconds))
            let (status, plan) = try await server.provision(["prefix": "hot", "users": flooders, "devices_per_user": 1, "chats": 1, "members_per_chat": flooders])
            XCTAssertEqual(status, 200)
            let chat = try XCTUnwrap(((plan["chats"] as? [[String: Any]])?.first?["id"] as? NSNumber)?.uint64Value)
            let tokens = try XCTUnwrap((plan["users"] as? [[String: Any]])?.compactMap { ($0["devices"] as? [[String: Any]])?.first?["token"] as? String })
            var sockets: [UDPFlooder] = []
            for _ in tokens { sockets.append(try await UDPFlooder.start()) }
            let arguments = wellBehaved(prefix: "busy", seconds: seconds)
            async let loaded = Simulator.run(server, arguments)
            let sent = try await withThrowingTaskGroup(of: Int.self) { group in
                for (token, flooder) in zip(tokens, sockets) {
                    group.addTask { try await flooder.flood(to: server.peer, token: token, chatID: chat, ratePerSecond: ratePerDevice, for: .seconds(seconds + 3)) }
                }
                return try await group.reduce(0, +)
            }
            let run = try await loaded
            try await Task.sleep(for: .seconds(1))
            for flooder in sockets { await flooder.close() }
            let acknowledged = sockets.map { $0.answersByCode["2.01"] ?? 0 }.reduce(0, +)
            let stored = try await server.waitForHistory("hot-c0", count: acknowledged, timeout: 120).count
            let calm = try XCTUnwrap(baseline.latency("send_to_delivery", "p99"))
            let busy = try XCTUnwrap(run.latency("send_to_delivery", "p99"))
            let margin = calm * 3 + 100
            figure = String(format: "hot chat: %d sent, %d acknowledged, %d stored; other chats' p99 %.1f ms unloaded, %.1f ms beside it (margin ≤ %.0f ms)",
                            sent, acknowledged, stored, calm, busy, margin)
            XCTAssertEqual(baseline.status, 0, baseline.table)
            XCTAssertEqual(run.status, 0, run.table)
            XCTAssertGreaterThan(acknowledged, sent / 2, "the server takes the hot chat's flood")
            XCTAssertGreaterThanOrEqual(stored, acknowledged, "every acknowledged flood message is stored")
            XCTAssertLessThanOrEqual(busy, margin, "other chats' p99 \(busy) ms against \(calm) ms unloaded\n\(run.table)")
        }
    }

    /// Two chats whose senders share a log partition; every store into one of them fails for a
    /// while. The other's messages are stored at once; the failing one's wait, are retried with
    /// backoff through a Chat actor reloaded from storage, and arrive complete and in order.
    func testAChatWhoseStorageFailsIsIsolatedRetriedAndRecovered() async throws {
        let failFor = level.pick(short: 6, full: 10, soak: 30)
        fault = "every store into one chat fails for \(failFor) s"
        try await withServer { server in
            // Consecutive users share a 64-user range, so one log partition.
            let alice = try await server.account("alice")
            _ = try await server.account("bob")
            let carol = try await server.account("carol")
            _ = try await server.account("dave")
            let failing = try await server.chat("failing", members: ["alice", "bob"])
            let flowingID = try await server.chat("flowing", members: ["carol", "dave"])
            await server.kill9()
            try await server.start(["--test-fail-chat-store", "\(failing):\(failFor)"])
            let started = ContinuousClock.now
            try await withClient { client in
                for index in 0..<5 {
                    for (account, chat) in [(alice, failing), (carol, flowingID)] {
                        let message = SendMessage(clientMessageID: "m\(index)-\(chat)", chatID: chat, text: "message \(index)", clientSentAtMs: 0)
                        let response = try await client.send(message, token: account.token, to: server.peer)
                        XCTAssertEqual(response.code, .created, "the log takes every message, failing chat or not")
                    }
                }
            }
            let flowed = try await server.waitForHistory("flowing", count: 5, timeout: 10)
            let flowedAfter = ContinuousClock.now - started
            let stuck = try await server.history("failing")
            XCTAssertEqual(flowed.map(\.text), (0..<5).map { "message \($0)" })
            XCTAssertTrue(stuck.isEmpty, "the failing chat stores nothing while it fails")
            let recovered = try await server.waitForHistory("failing", count: 5, timeout: Double(failFor + 30))
            let recoveredAfter = ContinuousClock.now - started
            figure = "other chat stored in \(flowedAfter.formatted(.units(allowed: [.seconds, .milliseconds], width: .narrow))); failing chat stored after \(recoveredAfter.formatted(.units(allowed: [.seconds, .milliseconds], width: .narrow))), 5/5 in order"
            XCTAssertEqual(recovered.map(\.text), (0..<5).map { "message \($0)" }, "complete and in order")
            XCTAssertEqual(recovered.map(\.sequence), [1, 2, 3, 4, 5])
            XCTAssertLessThan(flowedAfter, .seconds(failFor), "the other chat did not wait for the failing one")
            let log = server.serverLog()
            XCTAssertTrue(log.contains("chat parked"), "the failure was isolated")
            XCTAssertTrue(log.contains("chat still failing; retrying with backoff"), "retried with backoff")
            XCTAssertTrue(log.contains("chat recovered"), "and recovered")
        }
    }
}
