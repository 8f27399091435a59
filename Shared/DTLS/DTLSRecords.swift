/// What the handler reads from DTLS 1.2 records before OpenSSL does (RFC 6347 4.1, 4.2.2): all
/// of it in plaintext epoch 0, bounds-checked, and never trusted beyond choosing what to do.
public enum DTLSRecords {
    static let recordHeaderLength = 13
    static let handshakeHeaderLength = 12
    static let contentHandshake: UInt8 = 22
    static let clientHello: UInt8 = 1
    static let clientKeyExchange: UInt8 = 16

    /// The shortest ClientHello that can be real: record and handshake headers, version,
    /// random, empty session id and cookie, one cipher suite, one compression method. Anything
    /// shorter is dropped unanswered, so that no answer (a HelloVerifyRequest is 44 bytes) is
    /// larger than what asked for it.
    public static let minimumClientHelloLength = recordHeaderLength + handshakeHeaderLength + 2 + 32 + 1 + 1 + 2 + 2 + 1 + 1

    /// Whether a datagram starts with what may be a ClientHello: a handshake record of epoch 0
    /// whose first message is a ClientHello, long enough to be a real one.
    public static func startsWithClientHello<Bytes: RandomAccessCollection>(_ datagram: Bytes) -> Bool where Bytes.Element == UInt8, Bytes.Index == Int {
        guard datagram.count >= minimumClientHelloLength else { return false }
        let base = datagram.startIndex
        return datagram[base] == contentHandshake && datagram[base + 1] == 0xFE
            && datagram[base + 3] == 0 && datagram[base + 4] == 0
            && datagram[base + recordHeaderLength] == clientHello
    }

    /// The PSK identity a client names in its ClientKeyExchange (RFC 4279 2), when this
    /// datagram carries one in epoch 0; nil otherwise, or when the message is malformed.
    public static func pskIdentity<Bytes: RandomAccessCollection>(in datagram: Bytes) -> String? where Bytes.Element == UInt8, Bytes.Index == Int {
        var record = datagram.startIndex
        while record + recordHeaderLength <= datagram.endIndex {
            let length = Int(datagram[record + 11]) << 8 | Int(datagram[record + 12])
            let body = record + recordHeaderLength
            guard body + length <= datagram.endIndex else { return nil }
            let epoch = Int(datagram[record + 3]) << 8 | Int(datagram[record + 4])
            if datagram[record] == contentHandshake && epoch == 0 {
                var message = body
                while message + handshakeHeaderLength <= body + length {
                    let fragmentOffset = Int(datagram[message + 6]) << 16 | Int(datagram[message + 7]) << 8 | Int(datagram[message + 8])
                    let fragmentLength = Int(datagram[message + 9]) << 16 | Int(datagram[message + 10]) << 8 | Int(datagram[message + 11])
                    let fragment = message + handshakeHeaderLength
                    guard fragment + fragmentLength <= body + length else { return nil }
                    if datagram[message] == clientKeyExchange && fragmentOffset == 0 && fragmentLength >= 2 {
                        let identityLength = Int(datagram[fragment]) << 8 | Int(datagram[fragment + 1])
                        guard identityLength > 0, identityLength <= 128, 2 + identityLength <= fragmentLength else { return nil }
                        let bytes = datagram[(fragment + 2)..<(fragment + 2 + identityLength)]
                        guard !bytes.contains(0), let identity = String(validating: bytes, as: UTF8.self) else { return nil }
                        return identity
                    }
                    message = fragment + fragmentLength
                }
            }
            record = body + length
        }
        return nil
    }
}
