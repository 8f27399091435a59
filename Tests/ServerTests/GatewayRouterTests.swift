@testable import CoAP
import CourierCore
@testable import CourierGateway
import CourierLog
import CourierProtocol
import Logging
import NIOCore
import Synchronization
import XCTest

/// The gateway's router on its own: routes by path and method, runs the middleware in order
/// before device routes only, and answers every error once with its code, Error body and Max-Age.
final class GatewayRouterTests: XCTestCase {
    /// Records the order things ran in.
    final class Trace: Sendable {
        let steps = Mutex<[String]>([])
        func add(_ step: String) { steps.withLock { $0.append(step) } }
        var all: [String] { steps.withLock { $0 } }
    }

    /// Names the device from the token `t=N`; refuses the token `t=refuse` with 4.01.
    struct NamingStep: GatewayMiddleware {
        let trace: Trace
        func prepare(_ context: inout RequestContext) async throws {
            trace.add("name")
            let token = Authentication.token(of: context.message)
            guard let token, token != "refuse", let id = UInt64(token) else { throw Refusal(.unauthorized, .unauthorized, "bad token") }
            context.identity = TokenIdentity(userID: id, deviceID: id * 10, expiresAt: nil)
        }
    }

    /// Sees the identity the step before it set.
    struct CheckingStep: GatewayMiddleware {
        let trace: Trace
        func prepare(_ context: inout RequestContext) async throws {
            trace.add("check \(try context.device().deviceID)")
        }
    }

    private func router(_ trace: Trace) -> GatewayRouter {
        var router = GatewayRouter(middleware: [NamingStep(trace: trace), CheckingStep(trace: trace)], retryAfterSeconds: 7, logger: Logger(label: "test"))
        router.device(.post, "v1/echo") { context in
            trace.add("handler")
            return .response(.content, payload: Array("device \(try context.device().deviceID)".utf8))
        }
        router.device(.post, "v1/fails") { context in
            switch context.message.payload.first {
            case 1: throw StorageError.notFound("chat 9")
            case 2: throw StorageError.unavailable("busy")
            case 3: throw LogAppendError.overloaded(retryAfterSeconds: 3)
            default: _ = try context.body(SendMessage.self); return .response(.content)
            }
        }
        router.open(.get, "v1/open") { _ in
            trace.add("open")
            return .response(.content)
        }
        return router
    }

    private func ask(_ router: GatewayRouter, _ method: CoAPCode, _ path: String, token: String? = nil, payload: [UInt8] = []) async throws -> CoAPMessage {
        let message = CoAPMessage.request(method, path: path, query: token.map { ["t=\($0)"] } ?? [], payload: payload)
        return await router.handle(IncomingRequest(message: message, peer: try SocketAddress(ipAddress: "127.0.0.1", port: 5683)))
    }

    func testRoutesByPathAndMethodAndRunsTheMiddlewareInOrderBeforeDeviceRoutesOnly() async throws {
        let trace = Trace()
        let router = router(trace)
        let unknown = try await ask(router, .post, "v1/nothing", token: "1")
        XCTAssertEqual(unknown.code, .notFound)
        XCTAssertTrue(unknown.payload.isEmpty, "no body for a path that does not exist")
        let wrongMethod = try await ask(router, .get, "v1/echo", token: "1")
        XCTAssertEqual(wrongMethod.code, .methodNotAllowed)
        XCTAssertTrue(trace.all.isEmpty, "neither ran any middleware")

        let echoed = try await ask(router, .post, "v1/echo", token: "4")
        XCTAssertEqual(echoed.code, .content)
        XCTAssertEqual(String(decoding: echoed.payload, as: UTF8.self), "device 40")
        XCTAssertEqual(trace.all, ["name", "check 40", "handler"])

        let open = try await ask(router, .get, "v1/open")
        XCTAssertEqual(open.code, .content)
        XCTAssertEqual(trace.all.suffix(1), ["open"], "an open route runs no middleware")
    }

    func testARefusingMiddlewareStopsTheRequestBeforeTheHandler() async throws {
        let trace = Trace()
        let refused = try await ask(router(trace), .post, "v1/echo", token: "refuse")
        XCTAssertEqual(refused.code, .unauthorized)
        XCTAssertEqual(try WireError(serializedBytes: refused.payload).code, .unauthorized)
        XCTAssertEqual(trace.all, ["name"], "neither the next middleware nor the handler ran")
    }

    func testEveryErrorIsAnsweredOnceWithItsCodeBodyAndMaxAge() async throws {
        let router = router(Trace())
        let cases: [(UInt8, CoAPCode, WireErrorCode, UInt32?)] = [
            (1, .notFound, .notFound, nil),
            (2, .serviceUnavailable, .overloaded, 7),
            (3, .serviceUnavailable, .overloaded, 3),
            (9, .badRequest, .badRequest, nil),
        ]
        for (payload, code, wire, maxAge) in cases {
            let answer = try await ask(router, .post, "v1/fails", token: "1", payload: [payload])
            XCTAssertEqual(answer.code, code, "case \(payload)")
            XCTAssertEqual(try WireError(serializedBytes: answer.payload).code, wire, "case \(payload)")
            XCTAssertEqual(answer.uintOption(.maxAge), maxAge, "case \(payload)")
        }
    }

    /// An answer to an endpoint that showed no credential is no larger than its request: the
    /// Error body loses its text, then goes whole; it is never cut into bytes that do not decode.
    func testAnAnswerCutToTheRequestsSizeKeepsAWholeErrorBodyOrNone() throws {
        let refusal = Refusal(.unauthorized, .unauthorized, "a token is required for this resource").response
        var sizes: Set<Int> = []
        for tokenLength in 0...8 {
            for payloadLength in 0...12 {
                var request = CoAPMessage(type: .confirmable, code: .post, messageID: 1, payload: Array(repeating: 0x41, count: payloadLength))
                request.token = Array(repeating: 7, count: tokenLength)
                let answer = GatewayRouter.within(request, refusal)
                var sent = answer
                sent.token = request.token
                XCTAssertLessThanOrEqual(sent.encode().count, request.encode().count, "no amplification (token \(tokenLength), payload \(payloadLength))")
                XCTAssertEqual(answer.code, .unauthorized, "the code is always there")
                if answer.payload.isEmpty {
                    XCTAssertNil(answer.uintOption(.contentFormat), "no body, no Content-Format")
                } else {
                    let error = try? WireError(serializedBytes: answer.payload)
                    XCTAssertEqual(error?.code, .unauthorized, "a body that is there decodes whole (token \(tokenLength), payload \(payloadLength): \(answer.payload))")
                }
                sizes.insert(answer.payload.count)
            }
        }
        XCTAssertTrue(sizes.contains(0), "some requests are too small for any body")
        XCTAssertGreaterThan(sizes.count, 1, "larger ones carry the Error, without its text at first, then with it")
    }
}
