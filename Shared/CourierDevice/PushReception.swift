import CourierProtocol
import NIOCore
import NIOWebSocket

/// What a push session does with each frame from the server, apart from reading and writing:
/// it keeps each chat consecutive (the next sequence is stored, an older one is a duplicate, a
/// later one is a gap that a sync fills, never skipped) and says what to store and what to
/// answer: an acknowledgement for every push but the device's own messages, whose cursors go
/// with the next one. Both ways of running a session (`PushClient`) use it.
struct PushReception {
    enum Reaction: Equatable {
        /// Answer a ping.
        case pong(WebSocketFrame)
        /// The server closed the session (`PushClient.end(closeCode:reason:welcomed:)` says
        /// whether for good).
        case closed(code: UInt16, reason: String)
        case welcomed(Welcome)
        /// Store the messages (each follows what is held of its chat, in order), then send the
        /// replies: the acknowledgement of every chat touched by a push that is not the
        /// device's own (with the cursors its own moved), and a sync when a gap showed.
        case store([ChatMessage], replies: [ClientFrame])
        case delivered(DeliveryReceipt)
        case presence(Presence)
        /// The server will not take this device (an unauthorized error).
        case refused(String)
        case nothing
    }

    /// Per chat, the highest consecutive sequence held.
    private var held: [UInt64: UInt64]
    /// This device, from the Welcome: its own messages come back to it and need no
    /// acknowledgement of their own.
    private var deviceID: UInt64?
    /// Chats held further than acknowledged through this device's own messages only: their
    /// cursors go with the next acknowledgement, never alone (the server does not wait for them).
    /// At most one entry per chat in `held`.
    private var heldUnacknowledged: Set<UInt64> = []
    /// A sync request is out and not answered yet: a second one would only ask for the same.
    private var syncing = false

    init(cursors: [ChatCursor]) {
        held = Dictionary(cursors.map { ($0.chatID, $0.sequence) }, uniquingKeysWith: max)
    }

    /// What to do with a whole WebSocket message (fragments already joined) from the server.
    mutating func react(to frame: WebSocketFrame) -> Reaction {
        switch frame.opcode {
        case .ping:
            return .pong(WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: frame.unmaskedData))
        case .connectionClose:
            var data = frame.unmaskedData
            let code = data.readInteger(as: UInt16.self) ?? 1005
            return .closed(code: code, reason: data.readString(length: data.readableBytes) ?? "")
        case .binary:
            // A frame that does not decode is skipped, as an unknown one would be.
            guard let serverFrame = try? ServerFrame(serializedBytes: frame.unmaskedData.readableBytesView) else { return .nothing }
            return react(to: serverFrame)
        default:
            return .nothing
        }
    }

    mutating func react(to frame: ServerFrame) -> Reaction {
        switch frame {
        case .welcome(let welcome):
            deviceID = welcome.deviceID
            return .welcomed(welcome)
        case .push(.message(let pushed)):
            return incoming([pushed], moreToSync: false)
        case .push(.delivered(let receipt)):
            return .delivered(receipt)
        case .push(.presence(let presence)):
            return .presence(presence)
        case .sync(let response):
            syncing = false
            return incoming(response.messages, moreToSync: response.more)
        case .heartbeat:
            return .nothing
        case .error(let error):
            return error.code == .unauthorized ? .refused(error.message) : .nothing
        }
    }

    private mutating func incoming(_ messages: [ChatMessage], moreToSync: Bool) -> Reaction {
        guard !messages.isEmpty || moreToSync else { return .nothing }
        // A chat seen for the first time starts where the server starts it (after the
        // device's stored cursor).
        var accepted: [ChatMessage] = []
        var touched: Set<UInt64> = []
        var gap = false
        for pushed in messages {
            let have = held[pushed.chatID]
            if have == nil || pushed.chatSequence == have! + 1 {
                accepted.append(pushed)
                held[pushed.chatID] = pushed.chatSequence
                if pushed.senderDeviceID == deviceID {
                    heldUnacknowledged.insert(pushed.chatID)
                    continue
                }
            } else if pushed.chatSequence > have! + 1 {
                gap = true
            }
            // Duplicates are acknowledged again too, so the server's resend stops.
            touched.insert(pushed.chatID)
        }
        var replies: [ClientFrame] = []
        if !touched.isEmpty {
            let chats = touched.union(heldUnacknowledged)
            heldUnacknowledged = []
            replies.append(.ack(PushAck(cursors: chats.sorted().compactMap { chat in held[chat].map { ChatCursor(chatID: chat, sequence: $0) } })))
        }
        if (gap || moreToSync) && !syncing {
            syncing = true
            replies.append(.sync(SyncRequest(have: held.map { ChatCursor(chatID: $0.key, sequence: $0.value) })))
        }
        return .store(accepted, replies: replies)
    }
}
