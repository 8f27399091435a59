import CourierActors
import CourierCore
import CourierProtocol
import Foundation
import Logging
import NIOCore
import NIOWebSocket
import Synchronization
import WebSocketFraming

/// One device's WebSocket session. The first binary message must be a `Hello`, within the
/// hello timeout, with a valid token (in Hello or in the upgrade's query `?t=`); the session
/// then attaches to the device's Device (which stays loaded while it lasts), is answered
/// `Welcome`, and receives pushes from the Device. Acknowledgements advance the device's
/// cursors, sync requests are answered from history, heartbeats are answered. The session is
/// closed when it stays silent for three heartbeat intervals, or when its outbound link has
/// been stalled for the slow-reader timeout (a reader that does not read); in both cases the
/// device catches up by replay on reconnect.
///
/// The per-message work runs on the connection's event loop with no task in between: a frame
/// is read by `PushSessionHandler` and handled here at once (an acknowledgement moves the
/// Device's window and is recorded for the cursor writer), and pushes leave through the
/// `SessionLink`, whose writer is one write and one flush on the event loop per batch. Only
/// what waits on storage (the Hello's token, the attach, a sync answer) runs in a task; the
/// messages that arrive meanwhile wait in a bounded backlog and are handled in order after it.
///
/// Control frames follow RFC 6455: a ping gets a pong, a close gets a close. Fragmented
/// messages are joined by NIO's `NIOWebSocketFrameAggregator` up to the frame limit; anything
/// larger closes the session (1009), and fragments out of order close it too (1002).
final class PushSession: Sendable {
    let service: PushService
    let channel: any Channel
    /// The token of the upgrade request's query (`?t=TOKEN`), if it had one.
    let queryToken: String?
    /// The connection's ticket among the strangers, given up once Hello is authenticated.
    let stranger: UInt64
    let link: SessionLink
    /// The connection's WebSocket encoder, whose context a batch is written from: the batch's
    /// frames are encoded here into one buffer, so no frame passes the pipeline on its own.
    private let frameWriter: NIOLoopBound<ChannelHandlerContext>

    private enum Phase {
        /// Before the first message; `waiter` is the task waiting for it.
        case awaitingHello(waiter: CheckedContinuation<[UInt8]?, Never>?, first: [UInt8]?)
        /// Hello came; its token is being checked and the Device attached.
        case opening(TokenIdentity?)
        case attached(TokenIdentity, DeviceEntity)
        case ended
    }

    private struct State {
        var phase = Phase.awaitingHello(waiter: nil, first: nil)
        var lastHeard = ContinuousClock.now
        /// A message is being handled (or a task handles one): later ones wait in `backlog`.
        var busy = true
        var backlog: [[UInt8]] = []
        var backlogBytes = 0

        var identity: TokenIdentity? {
            switch phase {
            case .opening(let identity): identity
            case .attached(let identity, _): identity
            default: nil
            }
        }

        var device: DeviceEntity? {
            if case .attached(_, let device) = phase { return device }
            return nil
        }
    }

    private let state = Mutex(State())

    private var configuration: PushService.Configuration { service.configuration }
    private var logger: Logger { service.logger }

    /// Messages that may wait while the session answers a sync or opens: a device that sends
    /// this much faster than it is answered is closed (1008).
    static let maxBacklogBytes = 256 * 1024

    /// On the channel's event loop, once the upgrade has put the WebSocket handlers in place.
    init(service: PushService, channel: any Channel, queryToken: String?, stranger: UInt64 = 0) throws {
        self.stranger = stranger
        self.service = service
        self.channel = channel
        self.queryToken = queryToken
        frameWriter = NIOLoopBound(try channel.pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self), eventLoop: channel.eventLoop)
        link = SessionLink(capacityBytes: service.configuration.maxOutboundBytes)
        link.start { [weak self] in
            guard let self else { return }
            self.channel.eventLoop.execute { self.writeBatch() }
        }
    }

    /// The session's opening, from the connection to the attached Device: the Hello, its
    /// token, the Device checked out and attached. From then on the session lives on its
    /// connection's event loop with no task of its own (a suspended task per device was a
    /// third of a connected device's memory), and the connection's end releases the Device
    /// (`ended`). Cancelled (the server shutting down) while opening, it goes away (1001).
    func run() async {
        await withTaskCancellationHandler {
            await open()
        } onCancel: {
            goAway()
        }
    }

    /// Tells the device the server is shutting down (1001) and closes the connection: at once
    /// once the close frame is written, after a second whatever happens (a reader that does
    /// not read would hold the close frame back).
    func goAway() {
        link.close(code: WebSocketErrorCode.goingAway.code, reason: "server shutting down")
        let channel = self.channel
        channel.eventLoop.scheduleTask(in: .seconds(1)) { channel.close(promise: nil) }
    }

    private func open() async {
        let watched = service.watchdog.watch { now, resendsDue in self.check(now: now, resendsDue: resendsDue) }
        // A session that is not attached is over once its link closes (as the connection's
        // end closes it): it is watched no more.
        guard let first = await firstMessage(), let (identity, hello) = await authenticate(first) else {
            service.watchdog.unwatch(watched)
            return
        }
        let device: DeviceEntity
        do {
            device = try await attachDevice(identity, hello)
        } catch {
            logger.warning("push session failed", metadata: ["device": "\(identity.deviceID)", "error": "\(error)"])
            close(.unknown(1011), "server error", metric: "server_error",
                  saying: WireError(code: .overloaded, message: "the server cannot serve this session now; reconnect later"))
            service.watchdog.unwatch(watched)
            return
        }
        service.metrics.changePushSessions(by: 1)
        let attached = state.withLock { state -> Bool in
            guard case .opening = state.phase else { return false }
            state.phase = .attached(identity, device)
            return true
        }
        // Registered once attached, so `ended` never runs before; a connection closed already
        // runs it at once.
        channel.closeFuture.whenComplete { _ in self.ended(identity, device, watched: watched) }
        // What came after Hello is handled now, in order.
        if attached { resume() }
    }

    /// Checks out the device's Device, says Welcome and attaches the link (the Device replays
    /// what the device lacks); a failed attach is undone.
    private func attachDevice(_ identity: TokenIdentity, _ hello: Hello) async throws -> DeviceEntity {
        let device = try await service.devices.checkOut(identity.deviceID)
        link.offer(.welcome(Welcome(
            userID: identity.userID, deviceID: identity.deviceID,
            heartbeatIntervalMs: UInt32(configuration.heartbeatInterval.components.seconds * 1000),
            serverTimeMs: Date().milliseconds, maxFrameBytes: UInt32(configuration.maxFrameBytes)
        )))
        // Registered first, so no message stored from here on misses it: what comes while the
        // replay is being set up waits for it inside the Device.
        service.live.register(device)
        do {
            try await device.attach(link, have: hello.have)
        } catch {
            device.detach(link)
            service.live.unregister(device)
            service.devices.checkIn(identity.deviceID)
            throw error
        }
        return device
    }

    /// The connection of an attached session closed: the Device is released.
    private func ended(_ identity: TokenIdentity, _ device: DeviceEntity, watched: Int) {
        link.close(code: WebSocketErrorCode.normalClosure.code, reason: "")
        state.withLock { $0.phase = .ended }
        device.detach(link)
        service.live.unregister(device)
        service.devices.checkIn(identity.deviceID)
        service.metrics.changePushSessions(by: -1)
        service.watchdog.unwatch(watched)
    }

    /// The first whole message, or nil when the connection ended before one came.
    private func firstMessage() async -> [UInt8]? {
        await withCheckedContinuation { (continuation: CheckedContinuation<[UInt8]?, Never>) in
            let ready: [UInt8]?? = state.withLock { state in
                guard case .awaitingHello(_, let first) = state.phase else { return .some(nil) }
                if let first {
                    state.phase = .opening(nil)
                    return .some(first)
                }
                state.phase = .awaitingHello(waiter: continuation, first: nil)
                return .none
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }

    /// Authenticates the first message, which must be a Hello; nil (and the session closing)
    /// otherwise.
    private func authenticate(_ bytes: [UInt8]) async -> (TokenIdentity, Hello)? {
        guard case .hello(let hello)? = try? ClientFrame(serializedBytes: bytes) else {
            close(.policyViolation, "Hello must come first", metric: "no_hello", saying: WireError(code: .unauthorized, message: "send Hello first"))
            return nil
        }
        // The token comes in Hello, or in the upgrade's query; when both, they must agree.
        let token = hello.token.isEmpty ? queryToken ?? "" : hello.token
        guard queryToken == nil || queryToken == token, let identity = try? await service.authenticator.authenticate(token) else {
            close(.policyViolation, "bad token", metric: "bad_token", saying: WireError(code: .unauthorized, message: "bad token"))
            return nil
        }
        state.withLock { state in
            if case .opening = state.phase { state.phase = .opening(identity) }
        }
        service.strangers.leave(stranger)
        return (identity, hello)
    }

    // MARK: - Inbound, on the event loop

    /// One frame from the aggregator. Control frames are answered here; a whole binary message
    /// is handled at once, or waits in the backlog while the session is busy.
    func received(_ frame: WebSocketFrame) {
        state.withLock { $0.lastHeard = ContinuousClock.now }
        switch frame.opcode {
        case .ping:
            // Straight to the channel: a pong is due even when pushes are queued.
            channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData), promise: nil)
        case .pong:
            break
        case .connectionClose:
            link.close(code: WebSocketErrorCode.normalClosure.code, reason: "")
        case .binary:
            message(Array(buffer: frame.unmaskedData))
        case .text:
            close(.unacceptableData, "binary Protobuf frames only", metric: "bad_frame")
        default:
            close(.protocolError, "unknown opcode", metric: "bad_frame")
        }
    }

    /// The aggregator refused what the peer sent.
    func failed(_ error: any Error) {
        switch error as? NIOWebSocketFrameAggregator.Error {
        case .accumulatedFrameSizeIsTooLarge?:
            close(.messageTooLarge, "message above \(configuration.maxFrameBytes) bytes", metric: "too_large")
        case .tooManyFragments?:
            close(.messageTooLarge, "message in more than \(PushService.maxFragments) fragments", metric: "too_large")
        default:
            close(.protocolError, "fragments out of order", metric: "bad_frame")
        }
    }

    /// The connection is gone: whoever waits for the first message hears there is none.
    func connectionEnded() {
        let waiter: CheckedContinuation<[UInt8]?, Never>? = state.withLock { state in
            guard case .awaitingHello(let waiter, _) = state.phase else { return nil }
            state.phase = .ended
            return waiter
        }
        waiter?.resume(returning: nil)
        link.close(code: WebSocketErrorCode.normalClosure.code, reason: "")
    }

    private enum Arrival {
        case hello(CheckedContinuation<[UInt8]?, Never>?)
        case handleNow
        case waits
        case overflow
        case ignored
    }

    private func message(_ bytes: [UInt8]) {
        let arrival = state.withLock { state -> Arrival in
            switch state.phase {
            case .awaitingHello(let waiter, nil):
                state.phase = waiter == nil ? .awaitingHello(waiter: nil, first: bytes) : .opening(nil)
                return .hello(waiter)
            case .ended:
                return .ignored
            case .awaitingHello, .opening, .attached:
                if !state.busy, case .attached = state.phase {
                    state.busy = true
                    return .handleNow
                }
                guard state.backlogBytes + bytes.count <= Self.maxBacklogBytes else { return .overflow }
                state.backlog.append(bytes)
                state.backlogBytes += bytes.count
                return .waits
            }
        }
        switch arrival {
        case .hello(let waiter):
            // Protected from eviction from the moment it arrives, not from when the opening
            // task gets to it: under a flood of accepts that task can lag behind the flood.
            service.strangers.startChecking(stranger)
            waiter?.resume(returning: bytes)
        case .handleNow: handle(from: bytes)
        case .waits, .ignored: break
        case .overflow: close(.policyViolation, "messages sent faster than they are answered", metric: "backlog")
        }
    }

    /// Handles `first` and then the backlog, in order, while holding `busy`; stops when a
    /// message's answer waits on storage (its task resumes the backlog after it).
    private func handle(from first: [UInt8]) {
        var next: [UInt8]? = first
        while let bytes = next {
            guard handleNow(bytes) else { return }
            next = nextFromBacklog()
        }
    }

    /// Handles what waited while the session was busy; called by whoever held `busy`.
    private func resume() {
        if let next = nextFromBacklog() { handle(from: next) }
    }

    /// The oldest message waiting, or nil and `busy` given up when none waits.
    private func nextFromBacklog() -> [UInt8]? {
        state.withLock { state in
            guard !state.backlog.isEmpty else {
                state.busy = false
                return nil
            }
            let bytes = state.backlog.removeFirst()
            state.backlogBytes -= bytes.count
            return bytes
        }
    }

    /// One whole message after Hello; false when its answer went to a task, which resumes the
    /// backlog when done.
    private func handleNow(_ bytes: [UInt8]) -> Bool {
        let phase = state.withLock { $0.phase }
        guard case .attached(let identity, let device) = phase else { return true }
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
            service.cursors.record(device.acknowledge(ack.cursors), userID: identity.userID, deviceID: identity.deviceID)
        case .sync(let request):
            Task {
                do {
                    link.offer(.sync(try await HistorySync.answer(request, for: identity, storage: service.storage)))
                } catch {
                    link.offer(.error(WireError(code: .overloaded, message: "sync failed; try again")))
                }
                resume()
            }
            return false
        }
        return true
    }

    // MARK: - Outbound, on the event loop

    /// Writes what the link holds: its frames in one buffer, one write and one flush, then,
    /// when the session is closing, the close frame and the connection's close. The link hears
    /// when the batch has reached the socket (its bytes then leave the bound).
    ///
    /// The frames are encoded here (`WebSocketFraming`) and written from the WebSocket encoder's
    /// context, past the encoder: through the pipeline each frame was a `WebSocketFrame`, a
    /// pipeline pass, a header buffer of its own and an entry in the pending writes (about 5%
    /// of the event loops' time at bench-mqtt's load).
    private func writeBatch() {
        let batch = link.take()
        var closing = false
        var buffer = channel.allocator.buffer(capacity: batch.items.reduce(0) { total, item in
            switch item {
            case .frame(let bytes): total + ByteBuffer.maxWebSocketFrameHeaderBytes + bytes.count
            case .close: total + ByteBuffer.maxWebSocketFrameHeaderBytes + 2 + Self.maxCloseReasonBytes
            }
        })
        // A server's frames are not masked (RFC 6455 §5.1).
        for item in batch.items {
            switch item {
            case .frame(let bytes):
                buffer.writeWholeWebSocketFrameHeader(opcode: .binary, length: bytes.count)
                buffer.writeBytes(bytes)
            case .close(let code, let reason):
                let reason = Self.closeReason(reason)
                buffer.writeWholeWebSocketFrameHeader(opcode: .connectionClose, length: 2 + reason.utf8.count)
                buffer.writeInteger(code)
                buffer.writeSubstring(reason)
                closing = true
            }
        }
        guard buffer.readableBytes > 0 else {
            link.finished(batch)
            return
        }
        let written = channel.eventLoop.makePromise(of: Void.self)
        frameWriter.value.writeAndFlush(NIOAny(buffer), promise: written)
        let link = self.link
        let channel = self.channel
        let isClosing = closing
        written.futureResult.whenComplete { result in
            link.finished(batch)
            if case .failure = result {
                // The connection is gone; nothing more is written.
                link.close(code: WebSocketErrorCode.goingAway.code, reason: "connection lost")
                channel.close(promise: nil)
            } else if isClosing {
                channel.close(promise: nil)
            }
        }
    }

    /// A close frame's payload is at most 125 bytes (RFC 6455 §5.5), its code 2 of them.
    static let maxCloseReasonBytes = 120

    /// `reason` cut to whole characters of at most `maxCloseReasonBytes`.
    static func closeReason(_ reason: String) -> Substring {
        var cut = Substring(reason)
        while cut.utf8.count > maxCloseReasonBytes { cut = cut.dropLast() }
        return cut
    }

    // MARK: - Watchdog and closing

    /// The connection's hello deadline (`helloTimeout` after its accept, kept by the push
    /// service's strangers) passed before its Hello was authenticated.
    func helloTimedOut() {
        close(.policyViolation, "no Hello within the hello timeout", metric: "no_hello")
    }

    /// The watchdog's look at this session (every 500 ms): the heartbeat window, the
    /// slow-reader timeout, and when due the device's acknowledgement timeout.
    private func check(now: ContinuousClock.Instant, resendsDue: Bool) -> SessionWatchdog.Verdict {
        guard !link.isClosed else { return .ended }
        let (identity, device, lastHeard) = state.withLock { ($0.identity, $0.device, $0.lastHeard) }
        if identity != nil && now - lastHeard > configuration.heartbeatInterval * 3 {
            close(.goingAway, "heartbeat timeout", metric: "heartbeat")
            return .ended
        }
        if let stalled = link.stalled(now: now), stalled > configuration.slowReaderTimeout {
            logger.info("push session closed: reader too slow", metadata: ["device": "\(identity?.deviceID ?? 0)", "stalled": "\(stalled)"])
            close(.policyViolation, "reader too slow: pushes not read for \(configuration.slowReaderTimeout)", metric: "slow_reader")
            // The device catches up by replay when it reconnects.
            return .endedClosingChannel(channel)
        }
        if resendsDue, let device, device.mayAwaitAcknowledgement { return .checkResends(device) }
        return .fine
    }

    /// Closes the session with `code`; an `error` frame saying why goes in the same write.
    private func close(_ code: WebSocketErrorCode, _ reason: String, metric: String, saying error: WireError? = nil) {
        guard !link.isClosed else { return }
        service.metrics.countPushClose(reason: metric)
        link.close(code: code.code, reason: reason, lastFrame: error.map { .error($0) })
    }
}

/// Hands a session's frames to it on the event loop, and tells it when the connection ends.
final class PushSessionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame

    let session: PushSession

    init(session: PushSession) {
        self.session = session
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        session.received(unwrapInboundIn(data))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is NIOWebSocketFrameAggregator.Error {
            session.failed(error)
        } else {
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        session.connectionEnded()
        context.fireChannelInactive()
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
