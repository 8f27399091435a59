import NIOCore

/// A request the message layer hands to the application, with what is needed to answer it.
public struct IncomingRequest: Sendable, Hashable {
    public var message: CoAPMessage
    public var peer: SocketAddress

    public var key: MessageKey { MessageKey(peer: peer, messageID: message.messageID) }
}
