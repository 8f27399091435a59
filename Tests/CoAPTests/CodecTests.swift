import TestSupport
import XCTest
@testable import CoAP

final class CodecTests: XCTestCase {
    // RFC 7252 Appendix A, Figure 16: CON GET /temperature, MID 0x7d34, no token.
    let rfcGetRequest: [UInt8] = [0x40, 0x01, 0x7D, 0x34, 0xBB] + Array("temperature".utf8)
    // ... and its piggybacked ACK 2.05 "22.3 C".
    let rfcGetResponse: [UInt8] = [0x60, 0x45, 0x7D, 0x34, 0xFF] + Array("22.3 C".utf8)
    // Figure 17: the same GET with the 1-byte token 0x20, MID 0x7d35.
    let rfcTokenRequest: [UInt8] = [0x41, 0x01, 0x7D, 0x35, 0x20, 0xBB] + Array("temperature".utf8)

    func testRFCExamplesDecode() throws {
        let request = try CoAPMessage.decode(rfcGetRequest)
        XCTAssertEqual(request.type, .confirmable)
        XCTAssertEqual(request.code, .get)
        XCTAssertEqual(request.messageID, 0x7D34)
        XCTAssertEqual(request.token, [])
        XCTAssertEqual(request.uriPath, ["temperature"])
        XCTAssertEqual(request.payload, [])

        let response = try CoAPMessage.decode(rfcGetResponse)
        XCTAssertEqual(response.type, .acknowledgement)
        XCTAssertEqual(response.code, .content)
        XCTAssertEqual(response.code.description, "2.05")
        XCTAssertEqual(response.payload, Array("22.3 C".utf8))

        let tokenRequest = try CoAPMessage.decode(rfcTokenRequest)
        XCTAssertEqual(tokenRequest.token, [0x20])
        XCTAssertEqual(tokenRequest.messageID, 0x7D35)
    }

    func testRFCExamplesEncodeByteForByte() {
        let request = CoAPMessage(type: .confirmable, code: .get, messageID: 0x7D34, options: [CoAPOption(number: .uriPath, string: "temperature")])
        XCTAssertEqual(request.encode(), rfcGetRequest)
        let response = CoAPMessage(type: .acknowledgement, code: .content, messageID: 0x7D34, payload: Array("22.3 C".utf8))
        XCTAssertEqual(response.encode(), rfcGetResponse)
        let tokenRequest = CoAPMessage(type: .confirmable, code: .get, messageID: 0x7D35, token: [0x20], options: [CoAPOption(number: .uriPath, string: "temperature")])
        XCTAssertEqual(tokenRequest.encode(), rfcTokenRequest)
        XCTAssertEqual(CoAPMessage.empty(.reset, messageID: 0x7D34).encode(), [0x70, 0x00, 0x7D, 0x34])
    }

    func testOptionDeltaAndLengthEncodings() throws {
        // Delta 0-12 in the nibble, 13-268 in one extended byte, 269+ in two; the same for lengths.
        let longValue = [UInt8](repeating: 0xAB, count: 300)
        let message = CoAPMessage(
            type: .nonConfirmable, code: .post, messageID: 1, token: [1, 2, 3, 4, 5, 6, 7, 8],
            options: [
                CoAPOption(number: .size1, uint: 2048),  // delta 60 -> nibble 13, extended 47
                CoAPOption(number: .contentFormat, value: []),  // delta 12, empty value
                CoAPOption(number: CoAPOptionNumber(rawValue: 2000), value: longValue),  // delta 1940 -> nibble 14; length 300 -> nibble 14
                CoAPOption(number: CoAPOptionNumber(rawValue: 2000), value: Array(repeating: 1, count: 13)),  // delta 0, length 13 -> nibble 13
            ],
            payload: [0x42]
        )
        let bytes = message.encode()
        // Header, 8-byte token, then Content-Format (12): delta 12 length 0.
        XCTAssertEqual(Array(bytes[0..<4]), [0x58, 0x02, 0x00, 0x01])
        XCTAssertEqual(bytes[12], 0xC0)
        // Size1 (60): delta 48 -> 0xD2 with extended byte 35, length 2, value 0x08 0x00.
        XCTAssertEqual(Array(bytes[13..<17]), [0xD2, 48 - 13, 0x08, 0x00])
        // Option 2000: delta 1940 -> nibble 14 (1940-269 = 0x0687), length 300 -> nibble 14 (31 = 0x001F).
        XCTAssertEqual(Array(bytes[17..<22]), [0xEE, 0x06, 0x87, 0x00, 0x1F])
        let decoded = try CoAPMessage.decode(bytes)
        XCTAssertEqual(decoded.options.map(\.number), [.contentFormat, .size1, CoAPOptionNumber(rawValue: 2000), CoAPOptionNumber(rawValue: 2000)])
        XCTAssertEqual(decoded.uintOption(.size1), 2048)
        XCTAssertEqual(decoded.optionValues(CoAPOptionNumber(rawValue: 2000)), [longValue, Array(repeating: 1, count: 13)])
        XCTAssertEqual(decoded.payload, [0x42])
    }

    func testRepeatedOptionsKeepTheirOrder() throws {
        let message = CoAPMessage.request(.get, path: "/v1/chats/42/history", query: ["t=abc", "limit=5"])
        let decoded = try CoAPMessage.decode(message.encode())
        XCTAssertEqual(decoded.uriPath, ["v1", "chats", "42", "history"])
        XCTAssertEqual(decoded.uriQuery, ["t=abc", "limit=5"])
    }

    func testUIntOptionsUseTheShortestForm() {
        XCTAssertEqual(CoAPOption.encodeUInt(0), [])
        XCTAssertEqual(CoAPOption.encodeUInt(255), [0xFF])
        XCTAssertEqual(CoAPOption.encodeUInt(256), [0x01, 0x00])
        XCTAssertEqual(CoAPOption.encodeUInt(65_001), [0xFD, 0xE9])
        XCTAssertEqual(CoAPOption.decodeUInt([0x00, 0x01, 0x00]), 256)
    }

    func testRandomMessagesRoundTrip() throws {
        var generator = SplitMix64(seed: 7)
        for _ in 0..<2_000 {
            let message = CoAPMessage.random(using: &generator)
            let decoded = try CoAPMessage.decode(message.encode())
            XCTAssertEqual(decoded.type, message.type)
            XCTAssertEqual(decoded.code, message.code)
            XCTAssertEqual(decoded.messageID, message.messageID)
            XCTAssertEqual(decoded.token, message.token)
            XCTAssertEqual(decoded.options, message.options.enumerated().sorted { ($0.element.number, $0.offset) < ($1.element.number, $1.offset) }.map(\.element))
            XCTAssertEqual(decoded.payload, message.payload)
        }
    }

    // MARK: - Format errors (RFC 7252 §3)

    func assertFormatError(_ bytes: [UInt8], _ reason: CoAPFormatError.Reason, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try CoAPMessage.decode(bytes), file: file, line: line) { error in
            XCTAssertEqual((error as? CoAPFormatError)?.reason, reason, file: file, line: line)
        }
    }

    func testTruncatedHeader() {
        for length in 0..<4 { assertFormatError(Array([0x40, 0x01, 0x00, 0x01].prefix(length)), .truncatedHeader) }
    }

    func testReservedTokenLengths() {
        for length in UInt8(9)...15 {
            let bytes = [0x40 | length, 0x01, 0x00, 0x01] + [UInt8](repeating: 0, count: 15)
            assertFormatError(bytes, .reservedTokenLength(length))
        }
    }

    func testMalformedDatagrams() {
        assertFormatError([0x80, 0x01, 0x00, 0x01], .unsupportedVersion(2))
        assertFormatError([0x44, 0x01, 0x00, 0x01, 0xAA, 0xBB], .truncatedToken)
        assertFormatError([0x40, 0x01, 0x00, 0x01, 0xF1, 0x00], .reservedOptionDelta)
        assertFormatError([0x40, 0x01, 0x00, 0x01, 0x1F], .reservedOptionLength)
        assertFormatError([0x40, 0x01, 0x00, 0x01, 0xFF], .emptyPayloadAfterMarker)
        assertFormatError([0x40, 0x01, 0x00, 0x01, 0xD1], .truncatedOption)  // extended delta byte missing
        assertFormatError([0x40, 0x01, 0x00, 0x01, 0xE1, 0x01], .truncatedOption)  // second extended byte missing
        assertFormatError([0x40, 0x01, 0x00, 0x01, 0x13, 0x61], .truncatedOption)  // value shorter than its length
        assertFormatError([0x40, 0x01, 0x00, 0x01, 0xE0, 0xFF, 0x00, 0xE0, 0xFF, 0x00], .optionNumberOverflow)
        assertFormatError([0x41, 0x00, 0x00, 0x01, 0x20], .emptyMessageNotEmpty)
        assertFormatError([0x60, 0x00, 0x00, 0x01, 0xFF, 0x01], .emptyMessageNotEmpty)
        assertFormatError([0x40, 0x21, 0x00, 0x01], .reservedCodeClass(1))
        assertFormatError([0x40, 0xC1, 0x00, 0x01], .reservedCodeClass(6))
        assertFormatError([0x40, 0xE1, 0x00, 0x01], .reservedCodeClass(7))
    }

    func testFormatErrorKeepsTheHeaderForRST() {
        XCTAssertThrowsError(try CoAPMessage.decode([0x4F, 0x01, 0x12, 0x34])) { error in
            let formatError = error as? CoAPFormatError
            XCTAssertEqual(formatError?.type, .confirmable)
            XCTAssertEqual(formatError?.messageID, 0x1234)
        }
    }

    func testArbitraryBytesNeverTrapAndDecodedOnesReencode() {
        var generator = SplitMix64(seed: 42)
        var decodedCount = 0
        for _ in 0..<20_000 {
            let length = Int(generator.next() % 40)
            var bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            if !bytes.isEmpty { bytes[0] = 0x40 | (bytes[0] & 0x3F) }  // mostly version 1, to reach deeper
            if let message = try? CoAPMessage.decode(bytes) {
                decodedCount += 1
                XCTAssertEqual(try? CoAPMessage.decode(message.encode()), message)
            }
        }
        XCTAssertGreaterThan(decodedCount, 100, "the generator should reach valid messages too")
    }

    // MARK: - Block option (RFC 7959 §2.2)

    func testBlockOptionValues() throws {
        let block = BlockOption(number: 5, more: true, sizeExponent: 6)
        XCTAssertEqual(block.optionValue, [0x5E])  // NUM 5, M 1, SZX 6
        XCTAssertEqual(block.size, 1024)
        XCTAssertEqual(block.offset, 5 * 1024)
        XCTAssertEqual(BlockOption(optionValue: [0x5E]), block)
        XCTAssertEqual(BlockOption(optionValue: []), BlockOption(number: 0, more: false, sizeExponent: 0))
        let wide = BlockOption(number: 0xFFFFF, more: false, sizeExponent: 2)
        XCTAssertEqual(wide.optionValue, [0xFF, 0xFF, 0xF2])
        XCTAssertEqual(BlockOption(optionValue: wide.optionValue), wide)
        XCTAssertNil(BlockOption(optionValue: [0x07]), "SZX 7 is reserved")
        XCTAssertNil(BlockOption(optionValue: [0, 0, 0, 1]), "Block options are at most 3 bytes")
        XCTAssertEqual(BlockOption.sizeExponent(forBlockSize: 1024), 6)
        XCTAssertEqual(BlockOption.sizeExponent(forBlockSize: 4096), 6)
        XCTAssertEqual(BlockOption.sizeExponent(forBlockSize: 64), 2)
        XCTAssertEqual(BlockOption.sizeExponent(forBlockSize: 100), 2)
        XCTAssertEqual(BlockOption.sizeExponent(forBlockSize: 1), 0)
    }
}


extension CoAPMessage {
    static func random(using generator: inout SplitMix64) -> CoAPMessage {
        let type = MessageType(rawValue: UInt8(generator.next() % 4))!
        let codes: [CoAPCode] = [.get, .post, .put, .delete, .content, .changed, .badRequest, .serviceUnavailable]
        let code = codes[Int(generator.next() % UInt64(codes.count))]
        let token = (0..<Int(generator.next() % 9)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        let options = (0..<Int(generator.next() % 6)).map { _ -> CoAPOption in
            let number = CoAPOptionNumber(rawValue: UInt16(generator.next() % 3000))
            let length = [0, 1, 12, 13, 14, 268, 269, 400][Int(generator.next() % 8)]
            return CoAPOption(number: number, value: (0..<length).map { _ in UInt8(truncatingIfNeeded: generator.next()) })
        }
        let payload = (0..<Int(generator.next() % 50)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        return CoAPMessage(type: type, code: code, messageID: UInt16(truncatingIfNeeded: generator.next()), token: token, options: options, payload: payload)
    }
}
