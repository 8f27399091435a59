import NIOCore

/// A message's identity on the message layer: the peer and its Message ID (RFC 7252 §4.5).
public struct MessageKey: Hashable, Sendable {
    public var peer: SocketAddress
    public var messageID: UInt16

    public init(peer: SocketAddress, messageID: UInt16) {
        self.peer = peer
        self.messageID = messageID
    }
}
