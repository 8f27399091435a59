/// Server-internal: what one node of a cluster tells the others after its commits (see
/// cluster.proto). It only saves the others reads and time: a node that misses it finds the same
/// facts in the database.
public struct ClusterNews: Sendable, Hashable {
    /// A commit added messages to a chat.
    public struct Chat: Sendable, Hashable {
        public var chatID: UInt64
        /// The chat holds messages through here now.
        public var sequence: UInt64
        /// The chat's members as the commit saw them; nil when left out (the receiver reads them).
        public var members: [UInt64]?
        /// Push frames of some of the messages through `sequence`, in sequence order.
        public var messages: [Message]

        public init(chatID: UInt64, sequence: UInt64, members: [UInt64]? = nil, messages: [Message] = []) {
            self.chatID = chatID
            self.sequence = sequence
            self.members = members
            self.messages = messages
        }
    }

    /// One message as its encoded push frame.
    public struct Message: Sendable, Hashable {
        public var sequence: UInt64
        public var frame: [UInt8]

        public init(sequence: UInt64, frame: [UInt8]) {
            self.sequence = sequence
            self.frame = frame
        }
    }

    /// A device's stored delivery cursor in a chat moved from `from` to `to`.
    public struct Acknowledgement: Sendable, Hashable {
        public var chatID: UInt64
        public var userID: UInt64
        public var deviceID: UInt64
        public var from: UInt64
        public var to: UInt64

        public init(chatID: UInt64, userID: UInt64, deviceID: UInt64, from: UInt64, to: UInt64) {
            self.chatID = chatID
            self.userID = userID
            self.deviceID = deviceID
            self.from = from
            self.to = to
        }
    }

    public var chats: [Chat]
    public var acknowledgements: [Acknowledgement]
    /// Users whose presence changed on the sending node (came online or went offline there).
    public var presenceChanged: [UInt64]

    public init(chats: [Chat] = [], acknowledgements: [Acknowledgement] = [], presenceChanged: [UInt64] = []) {
        self.chats = chats
        self.acknowledgements = acknowledgements
        self.presenceChanged = presenceChanged
    }

    public var isEmpty: Bool { chats.isEmpty && acknowledgements.isEmpty && presenceChanged.isEmpty }
}
