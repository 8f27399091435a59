import CourierProtocol
import CourierStorage
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOWebSocket

/// One device's WebSocket session (work in progress, issue 5): the first binary frame must be
/// a `Hello` with a valid token, within the hello timeout; then heartbeats are answered, and a
/// session silent for three heartbeat intervals is closed. Control frames follow RFC 6455:
/// a ping gets a pong, a close gets a close; fragmented messages are reassembled up to the
/// frame limit, and anything larger closes the session (1009).
struct PushSession {
    let configuration: PushService.Configuration
    let authenticator: TokenAuthenticator
    let channel: any Channel
    let outbound: NIOAsyncChannelOutboundWriter<WebSocketFrame>
    let logger: Logger

    private final class State: @unchecked Sendable {
        // @unchecked: guarded by `lock`.
        let lock = NSLock()
        var identity: TokenIdentity?
        var lastHeard = ContinuousClock.now
        var closing = false
    }

    func run(_ inbound: NIOAsyncChannelInboundStream<WebSocketFrame>) async throws {
        let state = State()
        let started = ContinuousClock.now
        let watchdog = Task {
            while !Task.isCancelled {
                try await Task.sleep(for: .milliseconds(200))
                let (identity, lastHeard) = state.lock.withLock { (state.identity, state.lastHeard) }
                if identity == nil && ContinuousClock.now - started > configuration.helloTimeout {
                    try await close(.policyViolation, "no Hello within the hello timeout", state)
                    return
                }
                if identity != nil && ContinuousClock.now - lastHeard > configuration.heartbeatInterval * 3 {
                    try await close(.goingAway, "heartbeat timeout", state)
                    return
                }
            }
        }
        defer { watchdog.cancel() }

        var message: ByteBuffer?
        for try await frame in inbound {
            state.lock.withLock { state.lastHeard = ContinuousClock.now }
            switch frame.opcode {
            case .ping:
                try await outbound.write(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData))
            case .pong:
                break
            case .connectionClose:
                try await close(.normalClosure, "", state)
                return
            case .text:
                try await close(.unacceptableData, "binary Protobuf frames only", state)
                return
            case .binary, .continuation:
                var data = frame.unmaskedData
                if frame.opcode == .binary { message = ByteBuffer() }
                guard message != nil else {
                    try await close(.protocolError, "continuation without a start", state)
                    return
                }
                guard message!.readableBytes + data.readableBytes <= configuration.maxFrameBytes else {
                    try await close(.messageTooLarge, "message above \(configuration.maxFrameBytes) bytes", state)
                    return
                }
                message!.writeBuffer(&data)
                if frame.fin, let whole = message {
                    message = nil
                    guard try await handle(Array(buffer: whole), state) else { return }
                }
            default:
                try await close(.protocolError, "unknown opcode", state)
                return
            }
        }
    }

    /// One whole client message; false once the session is closing.
    private func handle(_ bytes: [UInt8], _ state: State) async throws -> Bool {
        let frame: ClientFrame
        do {
            frame = try ClientFrame(serializedBytes: bytes)
        } catch {
            try await send(.error(WireError(code: .badRequest, message: "ClientFrame: \(error)")))
            return true
        }
        let identity = state.lock.withLock { state.identity }
        switch (frame, identity) {
        case (.hello(let hello), nil):
            guard let found = try? await authenticator.authenticate(hello.token) else {
                try await send(.error(WireError(code: .unauthorized, message: "bad token")))
                try await close(.policyViolation, "bad token", state)
                return false
            }
            state.lock.withLock { state.identity = found }
            try await send(.welcome(Welcome(
                userID: found.userID, deviceID: found.deviceID,
                heartbeatIntervalMs: UInt32(configuration.heartbeatInterval.components.seconds * 1000),
                serverTimeMs: Date().milliseconds, maxFrameBytes: UInt32(configuration.maxFrameBytes)
            )))
            return true
        case (_, nil):
            try await send(.error(WireError(code: .unauthorized, message: "send Hello first")))
            try await close(.policyViolation, "Hello must come first", state)
            return false
        case (.heartbeat, _?):
            try await send(.heartbeat(Heartbeat(sentAtMs: Date().milliseconds)))
            return true
        case (.hello, _?):
            try await send(.error(WireError(code: .badRequest, message: "already authenticated")))
            return true
        case (.ack, _?), (.sync, _?):
            // Issue 5: acknowledgements advance delivery cursors; sync replays history.
            try await send(.error(WireError(code: .badRequest, message: "not implemented yet")))
            return true
        }
    }

    private func send(_ frame: ServerFrame) async throws {
        try await outbound.write(WebSocketFrame(fin: true, opcode: .binary, data: ByteBuffer(bytes: frame.serializedBytes())))
    }

    private func close(_ code: WebSocketErrorCode, _ reason: String, _ state: State) async throws {
        let first = state.lock.withLock { () -> Bool in
            defer { state.closing = true }
            return !state.closing
        }
        guard first else { return }
        var data = ByteBuffer()
        data.write(webSocketErrorCode: code)
        data.writeString(String(reason.prefix(120)))
        try? await outbound.write(WebSocketFrame(fin: true, opcode: .connectionClose, data: data))
        try? await channel.close()
    }
}
