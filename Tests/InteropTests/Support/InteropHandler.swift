import CoAP
import Foundation

/// Resources our server side offers to the real peers: POST /echo returns the body, GET /big a
/// 3000-byte text (more than one block), POST /slow answers after 1.5 s — past the piggyback
/// window, so the peer gets an empty ACK and then a separate response. GET /whoami names the
/// identity the peer proved over DTLS ("anonymous" on clear text).
struct InteropHandler: CoAPRequestHandler {
    static let big = Array((0..<100).map { "line \(String(format: "%04d", $0)) of the big resource\n" }.joined().utf8.prefix(2995))

    func handle(_ request: IncomingRequest) async -> CoAPMessage {
        switch (request.message.code, request.message.uriPath) {
        case (.post, ["echo"]):
            return .response(.changed, payload: request.message.payload, contentFormat: CoAPContentFormat.textPlain)
        case (.get, ["whoami"]):
            return .response(.content, payload: Array((request.peerIdentity ?? "anonymous").utf8), contentFormat: CoAPContentFormat.textPlain)
        case (.get, ["big"]):
            return .response(.content, payload: Self.big, contentFormat: CoAPContentFormat.textPlain)
        case (.post, ["slow"]):
            try? await Task.sleep(for: .milliseconds(1500))
            return .response(.changed, payload: Array("slow:".utf8) + request.message.payload, contentFormat: CoAPContentFormat.textPlain)
        default:
            return .response(.notFound, payload: Array("no such resource".utf8))
        }
    }
}

/// Text bodies, so the peers' command-line output can be compared directly.
enum InteropBodies {
    static func text(_ count: Int) -> [UInt8] {
        Array((0..<count).map { String(UnicodeScalar(UInt8(97 + $0 % 26))) }.joined().utf8)
    }
}
