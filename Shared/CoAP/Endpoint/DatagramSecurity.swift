import NIOCore

/// A layer between an endpoint's UDP socket and CoAP that secures its datagrams (DTLS, in the
/// DTLS target): CoAP reads and writes plaintext datagrams through it, as if it were the socket.
public protocol DatagramSecurity: Sendable {
    /// The layer for one channel; called on the channel's event loop while its pipeline is set up.
    func makeLayer(on eventLoop: any EventLoop) -> SecureDatagramLayer
}

/// What one channel's security layer gives CoAP.
public struct SecureDatagramLayer {
    /// Goes into the pipeline between the socket and the CoAP handler.
    public var handler: any ChannelHandler
    /// Who the peer at an address proved to be, asked on the event loop as its request is
    /// read (so the answer is the association the request came through); nil when unknown.
    public var peerIdentity: (SocketAddress) -> String?

    public init(handler: any ChannelHandler, peerIdentity: @escaping (SocketAddress) -> String?) {
        self.handler = handler
        self.peerIdentity = peerIdentity
    }
}
