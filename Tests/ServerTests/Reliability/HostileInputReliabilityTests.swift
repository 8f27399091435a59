import CoAP
import CourierProtocol
import Foundation
import NIOCore
import TestSupport
import XCTest

/// Guarantees 6 and 7 under hostile input, against the real server: crafted datagrams, oversized
/// and block-wise bodies, Protobuf built to hurt a decoder, a flood of new endpoints, and
/// requests that try to draw large answers to an address that never proved itself.
final class HostileInputReliabilityTests: ReliabilityTestCase {
    /// One crafted request and what it must draw. `then` rows follow it from the same socket.
    struct Row {
        var name: String
        var datagrams: [[UInt8]]
        var expected: RawOutcome
        /// A 4.00 must carry a Protobuf `Error` naming BAD_REQUEST (guarantee 7).
        var wireError: WireErrorCode?
    }

    func testMalformedAndOversizedInputIsRefusedAndChangesNothing() async throws {
        fault = "malformed CoAP, oversized and block-wise bodies, hostile Protobuf"
        try await withServer { server in
            let alice = try await server.account("alice")
            let bob = try await server.account("bob")
            let chat = try await server.chat("general", members: ["alice", "bob"])
            let witness = try await PushWitness(pushPort: server.pushPort, frames: [.hello(Hello(token: bob.token, have: [], clientName: "witness"))])
            let rows = Self.malformedRows() + Self.blockRows(token: alice.token) + Self.protobufRows(token: alice.token, chat: chat)
            var outcomes: [String] = []
            try await withRawSocket { socket in
                for row in rows {
                    var last: RawOutcome?
                    for (index, datagram) in row.datagrams.enumerated() {
                        let replies = try await socket.exchange(datagram, with: server.peer, timeout: row.expected == .silence ? .milliseconds(300) : .seconds(3))
                        last = RawOutcome.of(replies)
                        // Blocks before the last must each be asked for (2.31 Continue).
                        if index < row.datagrams.count - 1 { XCTAssertEqual(last, .code(.continue), "\(row.name): block \(index)") }
                        if index == row.datagrams.count - 1, let wire = row.wireError {
                            let body = replies.first.flatMap { try? CoAPMessage.decode($0) }?.payload ?? []
                            XCTAssertEqual((try? WireError(serializedBytes: body))?.code, wire, "\(row.name): \(String(decoding: body, as: UTF8.self))")
                        }
                    }
                    XCTAssertEqual(last, row.expected, row.name)
                    outcomes.append("\(row.name): \(last.map { "\($0)" } ?? "undecodable")")
                }
            }
            // Only the two well-formed messages carrying unknown fields are taken.
            let accepted = ["unknown-nested", "unknown-repeated"]
            let history = try await server.waitForHistory("general", count: accepted.count, timeout: 10)
            XCTAssertEqual(history.map(\.clientMessageID).sorted(), accepted, "nothing else was stored")
            XCTAssertEqual(history.map(\.text), ["kept", "kept"], "the unknown fields were dropped, the text kept")
            try await Task.sleep(for: .milliseconds(500))
            let pushed = await witness.finish()
            XCTAssertEqual(pushed.messages.map(\.clientMessageID).sorted(), accepted, "another member was pushed only what was stored")
            let count = try await server.messageCount()
            XCTAssertEqual(count, accepted.count)
            try await Self.assertServing(server)
            figure = "\(rows.count) cases, each with its code; \(count) stored (the 2 well-formed ones with unknown fields); server serving"
            print(outcomes.joined(separator: "\n"))
        }
    }

    func testAFloodOfNewEndpointsKeepsTheDedupCacheBounded() async throws {
        // A small bound, so even the short level floods well past it (per CoAP socket).
        let capacity = 2_000
        let channels = 2
        let (sockets, perSocket) = level.pick(short: (1_000, 6), full: (4_000, 10), soak: (12_000, 10))
        fault = "\(sockets) new endpoints × \(perSocket) CONs each (\(sockets * perSocket) (peer, MID) pairs)"
        let configFile = FileManager.default.temporaryDirectory.appendingPathComponent("courier-flood-\(UUID().uuidString).json").path
        try Data(#"{"coapDedupCapacity": \#(capacity), "coapChannels": \#(channels)}"#.utf8).write(to: URL(fileURLWithPath: configFile))
        defer { try? FileManager.default.removeItem(atPath: configFile) }
        try await withServer(["--config", configFile]) { server in
            let idle = try await server.metric("courier_coap_dedup_entries")
            XCTAssertNotNil(idle, "the gauge is exposed")
            let residentBefore = server.residentKiB() ?? 0
            var flooders: [RawUDPSocket] = []
            defer { for socket in flooders { Task { await socket.close() } } }
            for index in 0..<sockets {
                // Several loopback addresses: more endpoints than one address has ports for.
                flooders.append(try await RawUDPSocket.bind(host: "127.0.\(2 + index / 10_000).\(1 + index % 200)"))
            }
            var sent = 0
            for round in 0..<perSocket {
                for chunk in stride(from: 0, to: sockets, by: 500) {
                    for socket in flooders[chunk..<min(chunk + 500, sockets)] {
                        let ping = CoAPMessage.raw(.get, path: "/v1/health", messageID: UInt16(round + 1), token: [UInt8(round)])
                        try await socket.send(ping.encode(), to: server.peer)
                        sent += 1
                    }
                    // Paced by the answers, so the kernel's receive buffer is not what bounds it.
                    let deadline = ContinuousClock.now + .seconds(3)
                    while flooders.reduce(0, { $0 + $1.received }) < sent * 95 / 100 && ContinuousClock.now < deadline {
                        try await Task.sleep(for: .milliseconds(10))
                    }
                }
            }
            let answered = flooders.reduce(0) { $0 + $1.received }
            let entries = Int(try await server.metric("courier_coap_dedup_entries") ?? -1)
            let residentAfter = server.residentKiB() ?? 0
            let growthMiB = Double(residentAfter - residentBefore) / 1024
            figure = "dedup cache \(entries) entries (bound \(channels) × \(capacity)) after \(answered) answered of \(sent) from \(sockets) endpoints; RSS \(residentBefore / 1024) -> \(residentAfter / 1024) MiB"
            XCTAssertGreaterThan(answered, channels * capacity, "the flood went past the bound (\(answered) answered)")
            XCTAssertLessThanOrEqual(entries, channels * capacity, "the cache stays within its bound")
            // Past the bound at least one socket's cache is full: the gauge measures the real cache.
            XCTAssertGreaterThanOrEqual(entries, capacity, "the gauge counts what the cache holds")
            XCTAssertLessThan(growthMiB, 64, "memory stays flat under a flood of endpoints")
            try await Self.assertServing(server)
        }
    }

    /// RFC 7252 §11.3: a response to an endpoint that never proved itself must not be larger
    /// than the request, or a spoofed source turns the server into an amplifier. The rule here:
    /// no more bytes than the request (a 4.01 once reached 1.82x; libcoap's example server 7.52x).
    static let amplificationLimit = 1.0

    func testNoResponseToAnUnverifiedEndpointIsLargerThanItsRequest() async throws {
        fault = "requests from an address that never sent a valid token"
        try await withServer { server in
            let alice = try await server.account("alice")
            let chat = try await server.chat("big", members: ["alice"])
            // Large resources exist (a history of ~20 KiB), so Block2 has something to slice.
            try await withClient { client in
                for index in 0..<20 {
                    let text = String(repeating: "w", count: 1000)
                    let response = try await client.send(SendMessage(clientMessageID: "big-\(index)", chatID: chat, text: text, clientSentAtMs: 0), token: alice.token, to: server.peer)
                    XCTAssertEqual(response.code, .created)
                }
            }
            _ = try await server.waitForHistory("big", count: 20)
            var id: UInt16 = 0x4000
            func next() -> UInt16 { id += 1; return id }
            func blockwise(_ method: CoAPCode, _ path: String, query: [String] = [], payload: [UInt8] = [], block2: UInt32? = nil, block1: BlockOption? = nil, size1: UInt32? = nil) -> CoAPMessage {
                var message = CoAPMessage.raw(method, path: path, query: query, payload: payload, messageID: next(), token: [])
                if let block2 { message.setBlock2(BlockOption(number: block2, more: false, sizeExponent: 6)) }
                if let block1 { message.setBlock1(block1) }
                if let size1 { message.setUIntOption(.size1, size1) }
                return message
            }
            let history = HistoryRequest(chatID: chat, beforeSequence: 0, limit: 500).serializedBytes()
            let requests: [(String, CoAPMessage)] = [
                ("GET /v1/health", blockwise(.get, "/v1/health")),
                ("GET /.well-known/core", blockwise(.get, "/.well-known/core")),
                ("GET an unknown path", blockwise(.get, "/x")),
                ("DELETE /v1/health", blockwise(.delete, "/v1/health")),
                ("POST /v1/msg, no token (4.01)", blockwise(.post, "/v1/msg")),
                ("POST /v1/msg, forged token (4.01)", blockwise(.post, "/v1/msg", query: ["t=x"], payload: [0x0A])),
                ("GET /v1/chats, no token (4.01)", blockwise(.get, "/v1/chats")),
                ("POST /v1/history Block2 #0, no token", blockwise(.post, "/v1/history", payload: history, block2: 0)),
                ("POST /v1/history Block2 #3, no token", blockwise(.post, "/v1/history", block2: 3)),
                ("GET /v1/chats Block2 #7, no token", blockwise(.get, "/v1/chats", block2: 7)),
                ("GET /.well-known/core Block2 #9", blockwise(.get, "/.well-known/core", block2: 9)),
                ("POST /v1/search Block2 #1, no token", blockwise(.post, "/v1/search", block2: 1)),
                ("Block1 block 7 out of order", blockwise(.post, "/v1/msg", payload: [1], block1: BlockOption(number: 7, more: true, sizeExponent: 0))),
                ("Block1 short middle block", blockwise(.post, "/v1/msg", payload: [1], block1: BlockOption(number: 0, more: true, sizeExponent: 6))),
                ("Size1 announcing 10 MB", blockwise(.post, "/v1/msg", size1: 10_000_000)),
                ("malformed Block2 option", {
                    var message = blockwise(.get, "/v1/health")
                    message.options.append(CoAPOption(number: .block2, value: [1, 2, 3, 4]))
                    return message
                }()),
                ("unknown critical option", {
                    var message = blockwise(.get, "/x")
                    message.options.append(CoAPOption(number: CoAPOptionNumber(rawValue: 2049), value: []))
                    return message
                }()),
                ("CoAP ping", .empty(.confirmable, messageID: next())),
            ]
            var worst = (ratio: 0.0, name: "")
            var lines: [String] = []
            try await withRawSocket(host: "127.0.0.2") { socket in
                for (name, request) in requests {
                    let sent = request.encode()
                    let replies = try await socket.exchange(sent, with: server.peer)
                    guard let reply = replies.first else { return XCTFail("\(name): no answer") }
                    XCTAssertEqual(replies.count, 1, "\(name): one datagram answers one")
                    let ratio = Double(reply.count) / Double(sent.count)
                    lines.append("\(name): \(sent.count) -> \(reply.count) bytes (\((try? CoAPMessage.decode(reply)).map { "\($0.code)" } ?? "?"))")
                    XCTAssertLessThanOrEqual(ratio, Self.amplificationLimit, "\(name): \(sent.count) bytes drew \(reply.count)")
                    if ratio > worst.ratio { worst = (ratio, name) }
                }
            }
            print(lines.joined(separator: "\n"))
            try await Self.assertServing(server)
            figure = "\(requests.count) requests; largest response/request \(String(format: "%.2f", worst.ratio))× (\(worst.name)); limit \(Self.amplificationLimit)×"
        }
    }

    // MARK: - The table

    static func datagram(_ message: CoAPMessage) -> [UInt8] { message.encode() }

    /// A CON GET /v1/health with a raw tail spliced in after the header and token.
    static func header(_ first: UInt8, _ code: UInt8, _ messageID: UInt16) -> [UInt8] {
        [first, code, UInt8(messageID >> 8), UInt8(messageID & 0xFF)]
    }

    static func malformedRows() -> [Row] {
        var id: UInt16 = 0x1000
        func next() -> UInt16 { id += 1; return id }
        var rows: [Row] = [
            Row(name: "empty datagram", datagrams: [[]], expected: .silence),
            Row(name: "truncated header (3 bytes)", datagrams: [[0x40, 0x01, 0x10]], expected: .silence),
            Row(name: "version 2", datagrams: [header(0x80, 0x01, next())], expected: .silence),
            Row(name: "version 0, CON", datagrams: [header(0x00, 0x01, next())], expected: .silence),
        ]
        for length in 9...15 {
            rows.append(Row(name: "token length \(length)", datagrams: [header(0x40 | UInt8(length), 0x01, next()) + [UInt8](repeating: 7, count: length)], expected: .reset))
        }
        let health: [UInt8] = [0xB2, 0x76, 0x31, 0x06] + Array("health".utf8)  // Uri-Path v1, health
        rows += [
            Row(name: "token cut short", datagrams: [header(0x48, 0x01, next()) + [1, 2]], expected: .reset),
            Row(name: "option delta 15 (not the marker)", datagrams: [header(0x40, 0x01, next()) + [0xF1, 0x00]], expected: .reset),
            Row(name: "option length 15", datagrams: [header(0x40, 0x01, next()) + [0xBF]], expected: .reset),
            Row(name: "extended option delta cut off", datagrams: [header(0x40, 0x01, next()) + [0xD0]], expected: .reset),
            Row(name: "option value past the end", datagrams: [header(0x40, 0x01, next()) + [0xB5, 0x76, 0x31]], expected: .reset),
            Row(name: "option number past 65535", datagrams: [header(0x40, 0x01, next()) + [0xE0, 0xFF, 0xFF]], expected: .reset),
            Row(name: "payload marker, no payload", datagrams: [header(0x40, 0x02, next()) + health + [0xFF]], expected: .reset),
            Row(name: "reserved code class 1.00", datagrams: [header(0x40, 0x20, next()) + health], expected: .reset),
            Row(name: "Empty message with a token", datagrams: [header(0x41, 0x00, next()) + [9]], expected: .reset),
            Row(name: "Empty message with a payload", datagrams: [header(0x40, 0x00, next()) + [0xFF, 1]], expected: .reset),
            Row(name: "CoAP ping (Empty CON)", datagrams: [header(0x40, 0x00, next())], expected: .reset),
            Row(name: "malformed NON", datagrams: [header(0x58, 0x01, next()) + [1]], expected: .silence),
            Row(name: "CON with a response code (2.05)", datagrams: [header(0x42, 0x45, next()) + [1, 2, 0xFF, 0x61]], expected: .reset),
            Row(name: "NON with a response code (2.05)", datagrams: [header(0x52, 0x45, next()) + [1, 2, 0xFF, 0x61]], expected: .silence),
            Row(name: "unsolicited ACK", datagrams: [header(0x60, 0x00, next())], expected: .silence),
            Row(name: "unsolicited RST", datagrams: [header(0x70, 0x00, next())], expected: .silence),
            Row(name: "2,000 bytes of noise", datagrams: [[UInt8](repeating: 0xAB, count: 2000)], expected: .silence),
            Row(name: "64 KiB of noise", datagrams: [[UInt8](repeating: 0xAB, count: 65_507)], expected: .silence),
        ]
        var critical = CoAPMessage.raw(.get, path: "/v1/health", messageID: next())
        critical.options.append(CoAPOption(number: CoAPOptionNumber(rawValue: 2049), value: [1]))
        rows.append(Row(name: "unknown critical option 2049", datagrams: [datagram(critical)], expected: .code(.badOption)))
        var elective = CoAPMessage.raw(.get, path: "/v1/health", messageID: next())
        elective.options.append(CoAPOption(number: CoAPOptionNumber(rawValue: 2048), value: [1]))
        rows.append(Row(name: "unknown elective option 2048 (ignored)", datagrams: [datagram(elective)], expected: .code(.content)))
        var notUTF8 = CoAPMessage.raw(.get, path: "/", messageID: next())
        notUTF8.options = [CoAPOption(number: .uriPath, value: [0xFF, 0xFE, 0x80])]
        rows.append(Row(name: "Uri-Path not UTF-8", datagrams: [datagram(notUTF8)], expected: .code(.notFound)))
        var badBlock2 = CoAPMessage.raw(.get, path: "/v1/health", messageID: next())
        badBlock2.options.append(CoAPOption(number: .block2, value: [1, 2, 3, 4]))
        rows.append(Row(name: "Block2 option of 4 bytes", datagrams: [datagram(badBlock2)], expected: .code(.badOption)))
        return rows
    }

    /// Oversized and block-wise bodies (the plain ones are in BadInputTests).
    static func blockRows(token: String) -> [Row] {
        var id: UInt16 = 0x2000
        func next() -> UInt16 { id += 1; return id }
        func block(_ number: UInt32, more: Bool, size: Int = 1024, payload: Int, size1: UInt32? = nil) -> [UInt8] {
            var message = CoAPMessage.raw(.post, path: "/v1/msg", query: ["t=\(token)"], payload: [UInt8](repeating: 0x41, count: payload), messageID: next())
            message.setBlock1(BlockOption(number: number, more: more, sizeExponent: BlockOption.sizeExponent(forBlockSize: size)))
            if let size1 { message.setUIntOption(.size1, size1) }
            return message.encode()
        }
        var reservedSize = CoAPMessage.raw(.post, path: "/v1/msg", query: ["t=\(token)"], payload: [1], messageID: next())
        reservedSize.options.append(CoAPOption(number: .block1, value: [0x0F]))  // SZX 7 is reserved
        return [
            Row(name: "Block1 announcing 10 MB in Size1", datagrams: [block(0, more: true, payload: 1024, size1: 10_000_000)], expected: .code(.requestEntityTooLarge)),
            Row(name: "Block1 block 5 with nothing before it", datagrams: [block(5, more: true, payload: 1024)], expected: .code(.requestEntityIncomplete)),
            Row(name: "Block1 middle block of the wrong size", datagrams: [block(0, more: true, payload: 1000)], expected: .code(.badRequest)),
            Row(name: "Block1 blocks past 64 KiB", datagrams: (0...64).map { block(UInt32($0), more: true, payload: 1024) }, expected: .code(.requestEntityTooLarge)),
            Row(name: "Block1 size exponent 7 (reserved)", datagrams: [datagram(reservedSize)], expected: .code(.badOption)),
            Row(name: "one 9,000-byte datagram (past the receive buffer)", datagrams: [datagram(.raw(.post, path: "/v1/msg", query: ["t=\(token)"], payload: [UInt8](repeating: 0x41, count: 9000), messageID: next()))], expected: .code(.requestEntityTooLarge)),
            Row(name: "one 64 KiB datagram", datagrams: [datagram(.raw(.post, path: "/v1/msg", query: ["t=\(token)"], payload: [UInt8](repeating: 0x41, count: 65_400), messageID: next()))], expected: .code(.requestEntityTooLarge)),
        ]
    }

    static func varint(_ value: Int) -> [UInt8] {
        var value = UInt64(value)
        var bytes: [UInt8] = []
        repeat {
            bytes.append(UInt8(value & 0x7F) | (value >= 0x80 ? 0x80 : 0))
            value >>= 7
        } while value > 0
        return bytes
    }

    static func protobufRows(token: String, chat: UInt64) -> [Row] {
        var id: UInt16 = 0x3000
        func next() -> UInt16 { id += 1; return id }
        func send(_ body: [UInt8], path: String = "/v1/msg") -> [[UInt8]] {
            [CoAPMessage.raw(.post, path: path, query: ["t=\(token)"], payload: body, messageID: next()).encode()]
        }
        // client_message_id (1) and chat_id (2), the fields a SendMessage needs besides its text.
        func known(_ clientMessageID: String) -> [UInt8] {
            [0x0A] + varint(clientMessageID.utf8.count) + Array(clientMessageID.utf8) + [0x10] + varint(Int(chat))
        }
        let text: [UInt8] = [0x1A, 4] + Array("kept".utf8)
        var nested: [UInt8] = []
        for _ in 0..<1000 { nested = [0x0A] + varint(nested.count) + nested }  // field 1, 1,000 deep
        let deepGroups = [UInt8](repeating: 0x7B, count: 2000) + [UInt8](repeating: 0x7C, count: 2000)  // field 15 groups
        let repeatedUnknown = (0..<2000).flatMap { _ in [0xF8, 0x07, 0x01] as [UInt8] }  // field 127, 2,000 times
        return [
            Row(name: "Protobuf field claiming 2 GB", datagrams: send(known("p-2gb") + [0x1A, 0x80, 0x80, 0x80, 0x80, 0x08] + Array("x".utf8)), expected: .code(.badRequest), wireError: .badRequest),
            Row(name: "Protobuf 2,000 nested unknown groups", datagrams: send(known("p-groups") + text + deepGroups), expected: .code(.badRequest), wireError: .badRequest),
            Row(name: "Protobuf text not UTF-8", datagrams: send(known("p-utf8") + [0x1A, 2, 0xC3, 0x28]), expected: .code(.badRequest), wireError: .badRequest),
            Row(name: "Protobuf 11-byte varint", datagrams: send(known("p-varint") + text + [0x20] + [UInt8](repeating: 0xFF, count: 10) + [0x01]), expected: .code(.badRequest), wireError: .badRequest),
            Row(name: "Protobuf end-group with no start", datagrams: send(known("p-endgroup") + text + [0x7C]), expected: .code(.badRequest), wireError: .badRequest),
            Row(name: "Protobuf field cut short", datagrams: send(known("p-cut") + [0x1A, 10, 0x61]), expected: .code(.badRequest), wireError: .badRequest),
            Row(name: "Protobuf field number 0", datagrams: send(known("p-zero") + text + [0x00, 0x01]), expected: .code(.badRequest), wireError: .badRequest),
            Row(name: "SyncRequest with 2,000 nested groups", datagrams: send([0x7B] + deepGroups, path: "/v1/sync"), expected: .code(.badRequest), wireError: .badRequest),
            Row(name: "HistoryRequest with a 2 GB field", datagrams: send([0x08] + varint(Int(chat)) + [0x22, 0x80, 0x80, 0x80, 0x80, 0x08], path: "/v1/history"), expected: .code(.badRequest), wireError: .badRequest),
            // Unknown fields are skipped by design (the schema may grow); nothing parses into them.
            Row(name: "unknown message nested 1,000 deep (accepted, never parsed)", datagrams: send(known("unknown-nested") + text + [0xA2, 0x06] + varint(nested.count) + nested), expected: .code(.created)),
            Row(name: "unknown field repeated 2,000 times (accepted, dropped)", datagrams: send(known("unknown-repeated") + text + repeatedUnknown), expected: .code(.created)),
        ]
    }

    /// The server still runs and answers.
    static func assertServing(_ server: ServerProcess, file: StaticString = #filePath, line: UInt = #line) async throws {
        XCTAssertTrue(server.isRunning, "no input crashed the server", file: file, line: line)
        let health = try await withClient { client in try await client.request(.request(.get, path: "/v1/health"), to: server.peer) }
        XCTAssertEqual(health.code, .content, "the server still answers", file: file, line: line)
    }
}
