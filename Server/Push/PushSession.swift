import CourierActors
import CourierCore
import CourierProtocol
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOWebSocket

/// One device's WebSocket session. The first binary frame must be a `Hello`, within the hello
/// timeout, with a valid token (in Hello or in the upgrade's query `?t=`); the session then attaches to the device's Device actor (which
/// stays loaded while it lasts), is answered `Welcome`, and receives pushes from the actor.
/// Acknowledgements advance the device's cursors, sync requests are answered from history,
/// heartbeats are answered. The session is closed when it stays silent for three heartbeat
/// intervals, or when its outbound queue has been stalled for the slow-reader timeout (a
/// reader that does not read); in both cases the device catches up by replay on reconnect.
///
/// Control frames follow RFC 6455: a ping gets a pong, a close gets a close. Fragmented
/// messages are joined by NIO's `NIOWebSocketFrameAggregator` up to the frame limit; anything
/// larger closes the session (1009), and fragments out of order close it too (1002).
struct PushSession {
    let service: PushService
    let channel: any Channel
    let outbound: NIOAsyncChannelOutboundWriter<WebSocketFrame>
    /// The token of the upgrade request's query (`?t=TOKEN`), if it had one.
    let queryToken: String?

    private var configuration: PushService.Configuration { service.configuration }
    private var logger: Logger { service.logger }

    /// What the watchdog and the frame loop share.
    private final class State: @unchecked Sendable {
        // @unchecked: guarded by `lock`.
        let lock = NSLock()
        var identity: TokenIdentity?
        var device: DeviceEntity?
        var lastHeard = ContinuousClock.now
    }

    /// A whole message from the device, or the end of the session.
    private enum Incoming {
        case message([UInt8])
        case ended
    }

    func run(_ inbound: NIOAsyncChannelInboundStream<WebSocketFrame>) async throws {
        let state = State()
        let link = SessionLink(capacityBytes: configuration.maxOutboundBytes)
        let writer = Task { await writeFrames(from: link) }
        let started = ContinuousClock.now
        let watched = service.watchdog.watch { now, resendsDue in
            self.check(link, state, startedAt: started, now: now, resendsDue: resendsDue)
        }
        defer {
            service.watchdog.unwatch(watched)
            link.close(code: WebSocketErrorCode.normalClosure.code, reason: "")
        }

        var frames = inbound.makeAsyncIterator()
        guard case .message(let first) = try await nextMessage(&frames, link, state) else { return }
        guard let (identity, hello) = await open(first, link) else {
            await writer.value
            return
        }
        state.lock.withLock { state.identity = identity }
        service.metrics.changePushSessions(by: 1)
        defer { service.metrics.changePushSessions(by: -1) }

        do {
            try await service.devices.withEntity(identity.deviceID) { device in
                link.offer(.welcome(Welcome(
                    userID: identity.userID, deviceID: identity.deviceID,
                    heartbeatIntervalMs: UInt32(configuration.heartbeatInterval.components.seconds * 1000),
                    serverTimeMs: Date().milliseconds, maxFrameBytes: UInt32(configuration.maxFrameBytes)
                )))
                // Registered first, so no message stored from here on misses it: what comes
                // while the replay is being set up waits for it inside the actor.
                service.live.register(device)
                defer { service.live.unregister(device) }
                try await device.attach(link, have: hello.have)
                state.lock.withLock { state.device = device }
                var ended: (any Error)?
                do {
                    while case .message(let bytes) = try await nextMessage(&frames, link, state) {
                        guard await handle(bytes, identity, device, link) else { break }
                    }
                } catch {
                    ended = error
                }
                state.lock.withLock { state.device = nil }
                await device.detach(link)
                if let ended { throw ended }
            }
        } catch {
            logger.warning("push session failed", metadata: ["device": "\(identity.deviceID)", "error": "\(error)"])
            close(link, .unknown(1011), "server error", metric: "server_error",
                  saying: WireError(code: .overloaded, message: "the server cannot serve this session now; reconnect later"))
        }
        link.close(code: WebSocketErrorCode.normalClosure.code, reason: "")
        await writer.value
    }

    /// Authenticates the first message, which must be a Hello; nil (and the session closing)
    /// otherwise.
    private func open(_ bytes: [UInt8], _ link: SessionLink) async -> (TokenIdentity, Hello)? {
        guard case .hello(let hello)? = try? ClientFrame(serializedBytes: bytes) else {
            close(link, .policyViolation, "Hello must come first", metric: "no_hello", saying: WireError(code: .unauthorized, message: "send Hello first"))
            return nil
        }
        // The token comes in Hello, or in the upgrade's query; when both, they must agree.
        let token = hello.token.isEmpty ? queryToken ?? "" : hello.token
        guard queryToken == nil || queryToken == token, let identity = try? await service.authenticator.authenticate(token) else {
            close(link, .policyViolation, "bad token", metric: "bad_token", saying: WireError(code: .unauthorized, message: "bad token"))
            return nil
        }
        return (identity, hello)
    }

    /// One whole message after Hello; false once the session is closing.
    private func handle(_ bytes: [UInt8], _ identity: TokenIdentity, _ device: DeviceEntity, _ link: SessionLink) async -> Bool {
        let frame: ClientFrame
        do {
            frame = try ClientFrame(serializedBytes: bytes)
        } catch {
            link.offer(.error(WireError(code: .badRequest, message: "ClientFrame: \(error)")))
            return true
        }
        switch frame {
        case .heartbeat:
            link.offer(.heartbeat(Heartbeat(sentAtMs: Date().milliseconds)))
        case .hello:
            link.offer(.error(WireError(code: .badRequest, message: "already authenticated")))
        case .ack(let ack):
            do {
                let advances = try await device.acknowledge(ack.cursors)
                if !advances.isEmpty { await service.receipts.acknowledged(advances, userID: identity.userID, deviceID: identity.deviceID) }
            } catch {
                // The cursor stays where it was: the device is pushed these again and acks again.
                logger.warning("acknowledgement not stored", metadata: ["device": "\(identity.deviceID)", "error": "\(error)"])
            }
        case .sync(let request):
            do {
                link.offer(.sync(try await HistorySync.answer(request, for: identity, storage: service.storage)))
            } catch {
                link.offer(.error(WireError(code: .overloaded, message: "sync failed; try again")))
            }
        }
        return !link.isClosed
    }

    /// The next whole binary message (NIO's `NIOWebSocketFrameAggregator` has joined its
    /// fragments); control frames are answered on the way. `.ended` once the peer closed, broke
    /// the framing rules, or the session is closing.
    private func nextMessage(_ frames: inout NIOAsyncChannelInboundStream<WebSocketFrame>.AsyncIterator, _ link: SessionLink, _ state: State) async throws -> Incoming {
        do {
            while let frame = try await frames.next() {
                state.lock.withLock { state.lastHeard = ContinuousClock.now }
                switch frame.opcode {
                case .ping:
                    // Straight to the channel: a pong is due even when pushes are queued.
                    try await outbound.write(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData))
                case .pong:
                    break
                case .connectionClose:
                    link.close(code: WebSocketErrorCode.normalClosure.code, reason: "")
                    return .ended
                case .binary:
                    return .message(Array(buffer: frame.unmaskedData))
                case .text:
                    close(link, .unacceptableData, "binary Protobuf frames only", metric: "bad_frame")
                    return .ended
                default:
                    close(link, .protocolError, "unknown opcode", metric: "bad_frame")
                    return .ended
                }
                if link.isClosed { return .ended }
            }
        } catch let error as NIOWebSocketFrameAggregator.Error {
            switch error {
            case .accumulatedFrameSizeIsTooLarge:
                close(link, .messageTooLarge, "message above \(configuration.maxFrameBytes) bytes", metric: "too_large")
            case .tooManyFragments:
                close(link, .messageTooLarge, "message in more than \(PushService.maxFragments) fragments", metric: "too_large")
            default:
                close(link, .protocolError, "fragments out of order", metric: "bad_frame")
            }
            return .ended
        }
        return .ended
    }

    /// The session's only writer of pushes and answers: frames in the order the link took them,
    /// everything queued at once in one write and one flush, then the close frame, then the
    /// connection closes.
    private func writeFrames(from link: SessionLink) async {
        while true {
            let items = await link.next()
            var frames: [WebSocketFrame] = []
            frames.reserveCapacity(items.count)
            var closing: (code: UInt16, reason: String)?
            for item in items {
                switch item {
                case .frame(let bytes):
                    frames.append(WebSocketFrame(fin: true, opcode: .binary, data: ByteBuffer(bytes: bytes)))
                case .close(let code, let reason):
                    closing = (code, reason)
                }
            }
            if !frames.isEmpty {
                do {
                    try await outbound.write(contentsOf: frames)
                } catch {
                    // The connection is gone; drain nothing more.
                    link.close(code: WebSocketErrorCode.goingAway.code, reason: "connection lost")
                    _ = try? await channel.close()
                    return
                }
            }
            if let (code, reason) = closing {
                var data = ByteBuffer()
                data.writeInteger(code)
                data.writeString(String(reason.utf8.prefix(120)) ?? "")
                try? await outbound.write(WebSocketFrame(fin: true, opcode: .connectionClose, data: data))
                try? await channel.close()
                return
            }
        }
    }

    /// The watchdog's look at this session (every 500 ms): the hello timeout, the heartbeat
    /// window, the slow-reader timeout, and when due the device's acknowledgement timeout.
    private func check(_ link: SessionLink, _ state: State, startedAt started: ContinuousClock.Instant, now: ContinuousClock.Instant, resendsDue: Bool) -> SessionWatchdog.Verdict {
        guard !link.isClosed else { return .ended }
        let (identity, device, lastHeard) = state.lock.withLock { (state.identity, state.device, state.lastHeard) }
        if identity == nil && now - started > configuration.helloTimeout {
            close(link, .policyViolation, "no Hello within the hello timeout", metric: "no_hello")
            return .ended
        }
        if identity != nil && now - lastHeard > configuration.heartbeatInterval * 3 {
            close(link, .goingAway, "heartbeat timeout", metric: "heartbeat")
            return .ended
        }
        if let stalled = link.stalled(now: now), stalled > configuration.slowReaderTimeout {
            logger.info("push session closed: reader too slow", metadata: ["device": "\(identity?.deviceID ?? 0)", "stalled": "\(stalled)"])
            close(link, .policyViolation, "reader too slow: pushes not read for \(configuration.slowReaderTimeout)", metric: "slow_reader")
            // The device catches up by replay when it reconnects.
            return .endedClosingChannel(channel)
        }
        if resendsDue, let device, device.mayAwaitAcknowledgement { return .checkResends(device) }
        return .fine
    }

    /// Closes the session with `code`; an `error` frame saying why goes in the same write.
    private func close(_ link: SessionLink, _ code: WebSocketErrorCode, _ reason: String, metric: String, saying error: WireError? = nil) {
        guard !link.isClosed else { return }
        service.metrics.countPushClose(reason: metric)
        link.close(code: code.code, reason: reason, lastFrame: error.map { .error($0) })
    }
}

extension WebSocketErrorCode {
    /// The code as sent on the wire.
    var code: UInt16 {
        var buffer = ByteBuffer()
        buffer.write(webSocketErrorCode: self)
        return buffer.readInteger(as: UInt16.self) ?? 1000
    }
}
