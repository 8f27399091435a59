import NIOCore
import XCTest
@testable import CoAP

final class BlockwiseServerTests: XCTestCase {
    let peer = try! SocketAddress(ipAddress: "127.0.0.1", port: 40000)
    let now = NIODeadline.uptimeNanoseconds(1_000_000_000)

    func block1Request(_ number: UInt32, more: Bool, payload: [UInt8], szx: UInt8 = 2) -> CoAPMessage {
        var message = CoAPMessage.request(.post, path: "/echo", payload: payload)
        message.setBlock1(BlockOption(number: number, more: more, sizeExponent: szx))
        return message
    }

    func testBlock1AssemblyContinuesThenDeliversTheWholeBody() throws {
        var server = BlockwiseServer(maxBodySize: 1000)
        let body = (0..<150).map { UInt8($0) }
        for (index, start) in stride(from: 0, to: 128, by: 64).enumerated() {
            guard case .respond(let proceed) = server.requestReceived(block1Request(UInt32(index), more: true, payload: Array(body[start..<start + 64])), from: peer, now: now) else {
                return XCTFail("expected 2.31 Continue")
            }
            XCTAssertEqual(proceed.code, .continue)
            XCTAssertEqual(try proceed.block1(), BlockOption(number: UInt32(index), more: true, sizeExponent: 2))
        }
        let last = block1Request(2, more: false, payload: Array(body[128...]))
        guard case .deliver(let whole) = server.requestReceived(last, from: peer, now: now) else { return XCTFail("expected delivery") }
        XCTAssertEqual(whole.payload, body)

        let response = server.prepareResponse(.response(.changed), to: whole, from: peer, now: now)
        XCTAssertEqual(try response.block1(), BlockOption(number: 2, more: false, sizeExponent: 2), "the final Block1 is echoed")
    }

    func testBlock1OutOfOrderIsIncomplete() {
        var server = BlockwiseServer(maxBodySize: 1000)
        guard case .respond(let answer) = server.requestReceived(block1Request(3, more: true, payload: Array(repeating: 0, count: 64)), from: peer, now: now) else {
            return XCTFail("expected an answer")
        }
        XCTAssertEqual(answer.code, .requestEntityIncomplete)
    }

    func testBlock1BeyondTheLimitIsTooLarge() {
        var server = BlockwiseServer(maxBodySize: 100)
        _ = server.requestReceived(block1Request(0, more: true, payload: Array(repeating: 0, count: 64)), from: peer, now: now)
        guard case .respond(let answer) = server.requestReceived(block1Request(1, more: true, payload: Array(repeating: 0, count: 64)), from: peer, now: now) else {
            return XCTFail("expected an answer")
        }
        XCTAssertEqual(answer.code, .requestEntityTooLarge)
        XCTAssertEqual(answer.uintOption(.size1), 100)

        var announced = block1Request(0, more: true, payload: Array(repeating: 0, count: 64))
        announced.setUIntOption(.size1, 5000)
        guard case .respond(let early) = server.requestReceived(announced, from: peer, now: now) else { return XCTFail("expected an answer") }
        XCTAssertEqual(early.code, .requestEntityTooLarge, "Size1 above the limit is refused before any block is stored")
    }

    func testNonFinalBlockOfWrongSizeIsBadRequest() {
        var server = BlockwiseServer(maxBodySize: 1000)
        guard case .respond(let answer) = server.requestReceived(block1Request(0, more: true, payload: [1, 2, 3]), from: peer, now: now) else {
            return XCTFail("expected an answer")
        }
        XCTAssertEqual(answer.code, .badRequest)
    }

    func testLargeResponseIsSlicedAndLaterBlocksServedFromCache() throws {
        var server = BlockwiseServer(maxBodySize: 1000, preferredBlockSize: 1024)
        let body = (0..<2500).map { UInt8(truncatingIfNeeded: $0) }
        let request = CoAPMessage.request(.post, path: "/report")
        let first = server.prepareResponse(.response(.content, payload: body), to: request, from: peer, now: now)
        XCTAssertEqual(first.payload, Array(body[0..<1024]))
        XCTAssertEqual(try first.block2(), BlockOption(number: 0, more: true, sizeExponent: 6))
        XCTAssertEqual(first.uintOption(.size2), 2500)

        var follow = request
        follow.setBlock2(BlockOption(number: 2, more: false, sizeExponent: 6))
        guard case .respond(let last) = server.requestReceived(follow, from: peer, now: now) else { return XCTFail("expected a cached block") }
        XCTAssertEqual(last.payload, Array(body[2048...]))
        XCTAssertEqual(try last.block2(), BlockOption(number: 2, more: false, sizeExponent: 6))

        follow.setBlock2(BlockOption(number: 9, more: false, sizeExponent: 6))
        guard case .respond(let past) = server.requestReceived(follow, from: peer, now: now) else { return XCTFail("expected an error") }
        XCTAssertEqual(past.code, .badOption)
    }

    func testClientMaySmallerBlocksForTheResponse() throws {
        var server = BlockwiseServer(maxBodySize: 1000)
        var request = CoAPMessage.request(.get, path: "/big")
        request.setBlock2(BlockOption(number: 0, more: false, sizeExponent: 2))
        let first = server.prepareResponse(.response(.content, payload: Array(repeating: 7, count: 200)), to: request, from: peer, now: now)
        XCTAssertEqual(first.payload.count, 64)
        XCTAssertEqual(try first.block2(), BlockOption(number: 0, more: true, sizeExponent: 2))
    }

    func testLaterBlockWithoutCacheIsRegeneratedForGetOnly() {
        var server = BlockwiseServer(maxBodySize: 1000)
        var get = CoAPMessage.request(.get, path: "/big")
        get.setBlock2(BlockOption(number: 1, more: false, sizeExponent: 6))
        XCTAssertEqual(server.requestReceived(get, from: peer, now: now), .deliver(get))
        var post = get
        post.code = .post
        guard case .respond(let answer) = server.requestReceived(post, from: peer, now: now) else { return XCTFail("expected an answer") }
        XCTAssertEqual(answer.code, .requestEntityIncomplete)
    }

    /// History and search answers reach about 450 KB: 1,024 of them cached would be 450 MB. The
    /// bytes held are bounded: the oldest answers go first, and their later blocks are answered
    /// again (GET) or refused with 4.08 (other methods); one answer above the bound alone is
    /// sliced but never cached.
    func testCachedAnswersAreBoundedInBytes() throws {
        var server = BlockwiseServer(maxBodySize: 1000, preferredBlockSize: 1024, maxBytes: 10_000)
        func peer(_ index: Int) -> SocketAddress { try! SocketAddress(ipAddress: "127.0.0.1", port: 20000 + index) }
        let body = Array(repeating: UInt8(7), count: 3000)
        for index in 0..<20 {
            let request = CoAPMessage.request(index % 2 == 0 ? .get : .post, path: "/history")
            let first = server.prepareResponse(.response(.content, payload: body), to: request, from: peer(index), now: now + .milliseconds(Int64(index)))
            XCTAssertEqual(first.payload.count, 1024)
            XCTAssertLessThanOrEqual(server.heldBytes, 10_000, "after answer \(index)")
        }
        XCTAssertEqual(server.heldBytes, 9000, "the three newest answers")
        XCTAssertEqual(server.activeTransfers, 3)

        func later(_ method: CoAPCode, _ index: Int) -> BlockwiseServer.Decision {
            var follow = CoAPMessage.request(method, path: "/history")
            follow.setBlock2(BlockOption(number: 1, more: false, sizeExponent: 6))
            return server.requestReceived(follow, from: peer(index), now: now + .milliseconds(30))
        }
        guard case .respond(let cached) = later(.post, 19) else { return XCTFail("the newest answer is cached") }
        XCTAssertEqual(cached.payload.count, 1024)
        guard case .respond(let dropped) = later(.post, 1) else { return XCTFail("an answer") }
        XCTAssertEqual(dropped.code, .requestEntityIncomplete, "a dropped POST answer cannot be run again")
        var regenerate = CoAPMessage.request(.get, path: "/history")
        regenerate.setBlock2(BlockOption(number: 1, more: false, sizeExponent: 6))
        XCTAssertEqual(later(.get, 0), .deliver(regenerate), "a dropped GET answer is answered again")

        let huge = server.prepareResponse(.response(.content, payload: Array(repeating: 1, count: 20_000)), to: .request(.get, path: "/search"), from: peer(50), now: now + .milliseconds(40))
        XCTAssertEqual(huge.payload.count, 1024, "sliced")
        XCTAssertEqual(server.heldBytes, 9000, "but not cached, and nothing dropped for it")

        _ = server.requestReceived(.request(.get, path: "/health"), from: peer(60), now: now + .seconds(61))
        XCTAssertEqual(server.heldBytes, 0, "expired answers free their bytes")
    }

    func testTransfersAreBounded() {
        var server = BlockwiseServer(maxBodySize: 10_000, maxTransfers: 10)
        for port in 0..<100 {
            let other = try! SocketAddress(ipAddress: "127.0.0.1", port: 20000 + port)
            _ = server.requestReceived(block1Request(0, more: true, payload: Array(repeating: 0, count: 64)), from: other, now: now)
        }
        XCTAssertLessThanOrEqual(server.activeTransfers, 10)
    }
}

extension BlockwiseServerTests {
    /// The block layer's own refusals go to anyone, token or not: none may be much larger than
    /// the request that drew it (UDP amplification).
    func testTheBlockLayersRefusalsAreNoLargerThanTheirRequests() {
        var server = BlockwiseServer(maxBodySize: 100)
        var outOfOrder = CoAPMessage.request(.post, path: "/m")
        outOfOrder.setBlock1(BlockOption(number: 5, more: true, sizeExponent: 0))
        outOfOrder.payload = Array(repeating: 0, count: 16)
        var announcedTooLarge = CoAPMessage.request(.post, path: "/m")
        announcedTooLarge.setUIntOption(.size1, 10_000_000)
        var laterBlock = CoAPMessage.request(.post, path: "/m")
        laterBlock.setBlock2(BlockOption(number: 3, more: false, sizeExponent: 0))
        var shortMiddle = CoAPMessage.request(.post, path: "/m")
        shortMiddle.setBlock1(BlockOption(number: 0, more: true, sizeExponent: 2))
        shortMiddle.payload = [1]
        for request in [outOfOrder, announcedTooLarge, laterBlock, shortMiddle] {
            guard case .respond(let answer) = server.requestReceived(request, from: peer, now: now) else {
                XCTFail("expected a refusal for \(request)")
                continue
            }
            XCTAssertLessThanOrEqual(answer.encode().count, 2 * request.encode().count, "\(answer.code) answering \(request.encode().count) bytes")
        }
    }
}
