import NIOCore

/// A request the message layer hands to the application, with what is needed to answer it.
public struct IncomingRequest: Sendable, Hashable {
    public var message: CoAPMessage
    public var peer: SocketAddress
    /// Who the peer proved to be through the endpoint's security layer (DTLS); nil on clear text.
    public var peerIdentity: String? = nil

    public var key: MessageKey { MessageKey(peer: peer, messageID: message.messageID) }
}
