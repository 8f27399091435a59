// libFuzzer target: datagrams arriving on the DTLS port (coaps://), what reaches OpenSSL from
// the network.
//
// They go through the server's DTLS handler (from `DTLSServerSecurity`, as the gateway builds
// it) in an EmbeddedChannel: the ClientHello pre-filter, the listening SSL's DTLSv1_listen and
// its HelloVerifyRequest, and for a peer that gets an association, OpenSSL's handshake and
// record layer; the PSK identity parser reads every datagram too. Without a valid cookie no
// association is made, so the seeds hold a real client's datagrams and most mutations end at
// the cookie, which is the point: that is where a stranger's bytes stop.
//
// Input: datagrams, each as [peer 0-3][length, 2 bytes big-endian][bytes]; a short tail is one
// last datagram from peer 0.
import CoAP
import DTLS
import FuzzerDriver
import NIOCore
import NIOEmbedded

let context = try! DTLSContext(role: .server, credentials: .init(psk: true))
let peers = (0..<4).map { try! SocketAddress(ipAddress: "127.0.0.\($0 + 1)", port: 40_000 + $0) }

/// The datagrams of one input, split as the header above says.
func datagrams(_ input: [UInt8]) -> [(peer: Int, bytes: [UInt8])] {
    var result: [(Int, [UInt8])] = []
    var index = 0
    while index + 3 <= input.count {
        let peer = Int(input[index] % 4)
        let length = Int(input[index + 1]) << 8 | Int(input[index + 2])
        let start = index + 3
        let end = min(start + length, input.count)
        result.append((peer, Array(input[start..<end])))
        index = end
    }
    if index < input.count { result.append((0, Array(input[index...]))) }
    return result
}

runFuzzer { raw in
    let input = Array(raw)
    for datagram in datagrams(input) { _ = DTLSRecords.pskIdentity(in: datagram.bytes) }
    let channel = EmbeddedChannel()
    // No key source: a PSK handshake that got this far is refused (unknown identity) at once,
    // instead of waiting on a lookup that an EmbeddedChannel cannot run.
    let layer = DTLSServerSecurity(DTLSServerConfiguration(context: context)).makeLayer(on: channel.embeddedEventLoop)
    try! channel.pipeline.syncOperations.addHandler(layer.handler)
    for datagram in datagrams(input) {
        let envelope = AddressedEnvelope(remoteAddress: peers[datagram.peer], data: ByteBuffer(bytes: datagram.bytes))
        try? channel.writeInbound(envelope)
        while let answer = try? channel.readOutbound(as: AddressedEnvelope<ByteBuffer>.self) {
            // The amplification rule: what a peer without an association draws is no larger
            // than what it sent.
            if layer.peerIdentity(answer.remoteAddress) == nil, DTLSRecords.startsWithClientHello(datagram.bytes) {
                precondition(answer.data.readableBytes <= datagram.bytes.count, "a \(answer.data.readableBytes)-byte answer to a \(datagram.bytes.count)-byte ClientHello")
            }
        }
        while (try? channel.readInbound(as: AddressedEnvelope<ByteBuffer>.self)) != nil {}
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
    }
    _ = try? channel.finish()
}
