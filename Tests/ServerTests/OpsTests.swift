import CoAP
import CourierProtocol
import Foundation
import TestSupport
import XCTest

/// The operations listener and graceful shutdown, on the real binary.
final class OpsTests: XCTestCase {
    /// Every thread of the server runs under SCHED_BATCH (`batchScheduling`), those started
    /// after the setting took effect included, unless `--normal-scheduling` says otherwise.
    func testServerThreadsRunUnderBatchSchedulingUnlessToldOtherwise() async throws {
        for (arguments, policy) in [([String](), 3), (["--normal-scheduling"], 0)] {
            let server = try await ServerProcess()
            defer { server.remove() }
            try await server.start(arguments)
            // Work that starts threads of its own (SQLite's, the consumers', dispatch's) first.
            let alice = try await server.account("alice")
            let chat = try await server.chat("general", members: ["alice"])
            try await withClient { client in
                let response = try await client.send(SendMessage(clientMessageID: "m", chatID: chat, text: "hi", clientSentAtMs: 0), token: alice.token, to: server.peer)
                XCTAssertEqual(response.code, .created)
            }
            _ = try await server.waitForHistory("general", count: 1)
            let policies = server.threadSchedulingPolicies()
            XCTAssertGreaterThan(policies.count, 4, "the server's threads were read")
            XCTAssertEqual(Set(policies), [policy], "arguments \(arguments): policies \(policies)")
            _ = await server.terminate()
        }
    }

    func testHealthReadyMetricsAndAGracefulStopThatKeepsEveryAcknowledgedMessage() async throws {
        let server = try await ServerProcess()
        defer { server.remove() }
        do {
            try await server.start()
            let alice = try await server.account("alice")
            let chat = try await server.chat("general", members: ["alice"])
            let peer = server.peer
            let sending = Date()
            try await withClient { client in
                for number in 0..<20 {
                    let response = try await client.send(SendMessage(clientMessageID: "m\(number)", chatID: chat, text: "hi \(number)", clientSentAtMs: 0), token: alice.token, to: peer)
                    XCTAssertEqual(response.code, .created)
                }
            }
            _ = try await server.waitForHistory("general", count: 20)
            // One sender's messages go to one partition, one by one: the consumer commits its
            // offset at most every 250 ms, not once per message.
            let commits = try await server.waitForMetric("courier_consumer_offset_commits_total", timeout: 5) { $0 >= 1 } ?? -1
            let elapsed = Date().timeIntervalSince(sending)
            XCTAssertGreaterThanOrEqual(commits, 1, "the consumer committed")
            XCTAssertLessThanOrEqual(commits, (elapsed / 0.25).rounded(.up) + 1, "commits are spaced (\(elapsed) s)")
            XCTAssertLessThan(commits, 20, "not one commit per message")

            let health = try await server.http("/health")
            XCTAssertEqual(health.status, 200)
            let ready = try await server.http("/ready")
            XCTAssertEqual(ready.status, 200, ready.body)
            let metrics = try await server.http("/metrics").body
            func value(_ series: String) -> Double? {
                metrics.components(separatedBy: "\n").first { $0.hasPrefix(series + " ") }.flatMap { Double($0.split(separator: " ").last!) }
            }
            XCTAssertEqual(value(#"courier_coap_requests_total{code="2.01"}"#), 20, metrics)
            XCTAssertEqual(value(#"courier_log_appends_total{result="ok"}"#), 20)
            XCTAssertEqual(value("courier_log_append_duration_seconds_count"), 20)
            XCTAssertTrue(metrics.contains(#"courier_consumer_lag_records{partition="0"}"#))
            XCTAssertTrue(metrics.contains(#"courier_live_actors{type="chat"}"#))

            // SIGTERM in the middle of a burst: in-flight sends are answered, the process exits 0,
            // and everything acknowledged is there after a restart. A device's open push session
            // does not hold the stop up: it is told (1001) and closed.
            let device = try await PushWitness(pushPort: server.pushPort, frames: [.hello(Hello(token: alice.token, have: [], clientName: "witness"))])
            let acknowledged = Acknowledged()
            let burst = Task {
                await withTaskGroup(of: Void.self) { group in
                    for sender in 0..<4 {
                        group.addTask {
                            guard let client = try? await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: false) else { return }
                            for number in 0..<10_000 {
                                let message = SendMessage(clientMessageID: "b\(sender)-\(number)", chatID: chat, text: "burst", clientSentAtMs: 0)
                                guard let response = try? await client.send(message, token: alice.token, to: peer), response.code == .created else { break }
                                acknowledged.add(message.clientMessageID)
                            }
                            await client.close()
                        }
                    }
                }
            }
            try await Task.sleep(for: .milliseconds(600))
            let status = await server.terminate()
            burst.cancel()  // sends to a stopped server would otherwise retransmit for 93 s
            await burst.value
            XCTAssertEqual(status, 0, "a graceful stop exits 0: \(server.serverLog().suffix(2000))")
            XCTAssertTrue(server.serverLog().contains("CoAP gateway stopped"))
            let session = await device.finish(awaitingClose: true)
            XCTAssertEqual(session.ending, "closed 1001 server shutting down", "the push session was told why it ends")

            let logBeforeRestart = server.serverLog()
            try await server.start()
            // The stop committed what the consumers had stored, however recent their last commit.
            let resumed = server.serverLog().dropFirst(logBeforeRestart.count).components(separatedBy: "\n").filter { $0.contains("consumer resumes") }
            XCTAssertFalse(resumed.isEmpty, "the consumers said where they resume")
            for line in resumed {
                let offset = line.components(separatedBy: "offset=").last?.split(separator: " ").first
                let end = line.components(separatedBy: "logEnd=").last?.split(separator: " ").first
                XCTAssertEqual(offset, end, "resumed at its log's end: \(line)")
            }
            let expected = acknowledged.all
            XCTAssertGreaterThan(expected.count, 0)
            let history = try await server.waitForHistory("general", count: 20 + expected.count)
            XCTAssertTrue(expected.isSubset(of: Set(history.map(\.clientMessageID))), "acknowledged before the stop, missing after it")
            XCTAssertEqual(Set(history.map(\.clientMessageID)).count, history.count)
            await server.kill9()
        } catch {
            await server.kill9()
            throw ServerTestError("\(error)\n--- server log ---\n\(server.serverLog().suffix(3000))")
        }
    }
}
