import CourierProtocol
import TestSupport
import XCTest

/// Decoding is total: any bytes give a value or a `WireDecodingError`, never a trap.
final class GarbageDecodingTests: XCTestCase {
    func testRandomBytesNeverCrash() {
        var random = SplitMix64(seed: 0xC0_FFEE)
        for _ in 0..<3_000 {
            let bytes = random.bytes(count: Int(random.next(below: 96)))
            checkEveryType(bytes)
        }
    }

    /// Random sequences of well-formed tags reach the validation code, not just the Protobuf decoder.
    func testRandomProtobufShapedBytesNeverCrash() {
        var random = SplitMix64(seed: 42)
        var accepted = 0
        var rejected = 0
        for _ in 0..<3_000 {
            let bytes = random.protobufShaped(fields: Int(random.next(below: 8)), depth: 3)
            let (ok, failed) = checkEveryType(bytes)
            accepted += ok
            rejected += failed
        }
        // Both outcomes occur, so both the success path and the error path were exercised.
        XCTAssertGreaterThan(accepted, 0)
        XCTAssertGreaterThan(rejected, 0)
    }

    func testEveryTruncationAndBitFlipOfValidFramesIsHandled() {
        let encodings = Fixtures.serverFrames.map { $0.serializedBytes() }
            + Fixtures.clientFrames.map { $0.serializedBytes() }
            + Fixtures.chatLists.map { $0.serializedBytes() }
            + Fixtures.createChats.prefix(2).map { $0.serializedBytes() }
            + Fixtures.invites.map { $0.serializedBytes() }
            + Fixtures.searchResponses.map { $0.serializedBytes() }
        for bytes in encodings {
            for end in 0..<bytes.count {
                checkEveryType(Array(bytes[..<end]))
            }
            for index in bytes.indices {
                for bit in 0..<8 {
                    var flipped = bytes
                    flipped[index] ^= 1 << bit
                    checkEveryType(flipped)
                }
            }
        }
    }

    func testDeeplyNestedGroupsAreRejectedWithoutExhaustingTheStack() {
        // Field 15, wire type 3 (start group), a hundred thousand times.
        let bytes = [UInt8](repeating: 0x7B, count: 100_000)
        XCTAssertThrowsError(try ServerFrame(serializedBytes: bytes)) { error in
            guard case .malformed(type: "ServerFrame", _) = error as? WireDecodingError else {
                return XCTFail("expected malformed, got \(error)")
            }
        }
    }

    func testHugeLengthPrefixIsRejected() {
        // Field 1 (client_message_id) claiming 4 GiB of string.
        let bytes: [UInt8] = [0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0x61]
        XCTAssertThrowsError(try SendMessage(serializedBytes: bytes)) { error in
            guard case .malformed(type: "SendMessage", _) = error as? WireDecodingError else {
                return XCTFail("expected malformed, got \(error)")
            }
        }
    }

    func testTruncatedFieldIsRejected() {
        let bytes: [UInt8] = [0x0A, 0x05, 0x61, 0x62]
        XCTAssertThrowsError(try SendMessage(serializedBytes: bytes)) { error in
            XCTAssertEqual(
                error as? WireDecodingError,
                .malformed(type: "SendMessage", reason: "the data ends in the middle of a field")
            )
        }
    }

    func testInvalidUTF8IsRejected() {
        let bytes: [UInt8] = [0x0A, 0x02, 0xC3, 0x28, 0x10, 0x01]
        XCTAssertThrowsError(try SendMessage(serializedBytes: bytes)) { error in
            XCTAssertEqual(
                error as? WireDecodingError,
                .malformed(type: "SendMessage", reason: "a string field is not valid UTF-8")
            )
        }
    }

    func testInvalidWireTypeIsRejected() {
        // Field 2 with wire type 7, which does not exist.
        let bytes: [UInt8] = [0x0A, 0x01, 0x61, 0x17, 0x02]
        XCTAssertThrowsError(try SendMessage(serializedBytes: bytes)) { error in
            guard case .malformed(type: "SendMessage", _) = error as? WireDecodingError else {
                return XCTFail("expected malformed, got \(error)")
            }
        }
    }

    func testFieldWithTheWrongWireTypeIsNotTakenAsThatField() {
        // chat_id (field 2) sent length-delimited instead of as a varint: skipped, so chat_id is unset.
        let bytes: [UInt8] = [0x0A, 0x01, 0x61, 0x12, 0x01, 0x02]
        XCTAssertThrowsError(try SendMessage(serializedBytes: bytes)) { error in
            XCTAssertEqual(error as? WireDecodingError, .missingField(type: "SendMessage", field: "chat_id"))
        }
    }

    @discardableResult
    private func checkEveryType(_ bytes: [UInt8]) -> (accepted: Int, rejected: Int) {
        let outcomes = [
            check(SendMessage.self, bytes), check(SendResult.self, bytes), check(ChatMessage.self, bytes),
            check(ChatCursor.self, bytes), check(Push.self, bytes), check(DeliveryReceipt.self, bytes),
            check(PushAck.self, bytes), check(SyncRequest.self, bytes), check(SyncResponse.self, bytes),
            check(Hello.self, bytes), check(Welcome.self, bytes), check(Heartbeat.self, bytes),
            check(WireError.self, bytes), check(ClientFrame.self, bytes), check(ServerFrame.self, bytes),
            check(ChatInfo.self, bytes), check(ChatList.self, bytes), check(CreateChat.self, bytes),
            check(JoinChat.self, bytes), check(InviteToChat.self, bytes), check(HistoryRequest.self, bytes),
            check(HistoryResponse.self, bytes), check(SearchRequest.self, bytes), check(SearchHit.self, bytes),
            check(SearchResponse.self, bytes), check(RedeemInvite.self, bytes), check(SignedIn.self, bytes),
            check(ChatMembersRequest.self, bytes), check(ChatMembers.self, bytes), check(MessageChange.self, bytes),
            check(Presence.self, bytes), check(LeaveChat.self, bytes),
        ]
        let accepted = outcomes.filter { $0 }.count
        return (accepted, outcomes.count - accepted)
    }

    /// Decodes `bytes` as `T`; a value it accepts must survive a round trip, and an error must say something.
    private func check<T: WireMessage>(_: T.Type, _ bytes: [UInt8]) -> Bool {
        let value: T
        do {
            value = try T(serializedBytes: bytes)
        } catch {
            XCTAssertFalse(error.description.isEmpty)
            return false
        }
        do {
            let again = try T(serializedBytes: value.serializedBytes())
            XCTAssertEqual(again, value, "\(T.self) from \(bytes) changed in a round trip")
        } catch {
            XCTFail("\(T.self) decoded from \(bytes) but its own encoding did not: \(error)")
        }
        return true
    }
}

/// Protobuf-shaped garbage from the shared seeded generator.
extension SplitMix64 {
    mutating func next(below bound: UInt64) -> UInt64 {
        next() % bound
    }

    mutating func bytes(count: Int) -> [UInt8] {
        (0..<count).map { _ in UInt8(truncatingIfNeeded: next()) }
    }

    /// Fields with small numbers and mostly valid wire types, sometimes nested, sometimes broken.
    mutating func protobufShaped(fields: Int, depth: Int) -> [UInt8] {
        var out: [UInt8] = []
        for _ in 0..<fields {
            let field = next(below: 10) + 1
            let wireTypes: [UInt64] = [0, 0, 2, 2, 2, 1, 5, 3, 4, 7]
            let wireType = wireTypes[Int(next(below: UInt64(wireTypes.count)))]
            appendVarint(field << 3 | wireType, to: &out)
            switch wireType {
            case 0:
                // Mostly small values, sometimes zero (an unset id), sometimes huge.
                let choices: [UInt64] = [0, 1, next(below: 1000), next()]
                appendVarint(choices[Int(next(below: 4))], to: &out)
            case 1:
                out += bytes(count: 8)
            case 5:
                out += bytes(count: 4)
            case 2:
                let payload =
                    depth > 0 && next(below: 2) == 0
                    ? protobufShaped(fields: Int(next(below: 5)), depth: depth - 1)
                    : Array("c-\(next(below: 100))".utf8)
                // Occasionally lie about the length.
                let length = next(below: 10) == 0 ? UInt64(payload.count) + next(below: 4) : UInt64(payload.count)
                appendVarint(length, to: &out)
                out += payload
            default:
                break
            }
        }
        return out
    }

    private func appendVarint(_ value: UInt64, to out: inout [UInt8]) {
        var value = value
        while value >= 0x80 {
            out.append(UInt8(value & 0x7F) | 0x80)
            value >>= 7
        }
        out.append(UInt8(value))
    }
}
