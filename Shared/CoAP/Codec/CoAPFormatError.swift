/// Why a datagram is not a well-formed CoAP message (RFC 7252 §3).
public struct CoAPFormatError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Reason: Sendable, Hashable {
        case truncatedHeader
        case unsupportedVersion(UInt8)
        case reservedTokenLength(UInt8)
        case truncatedToken
        case reservedOptionDelta
        case reservedOptionLength
        case truncatedOption
        case optionNumberOverflow
        case emptyPayloadAfterMarker
        case emptyMessageNotEmpty
        case reservedCodeClass(UInt8)
    }

    public var reason: Reason
    /// The header's type and Message ID when they could be read, so a CON can be answered with RST.
    public var type: CoAPMessage.MessageType?
    public var messageID: UInt16?

    public init(_ reason: Reason, type: CoAPMessage.MessageType? = nil, messageID: UInt16? = nil) {
        self.reason = reason
        self.type = type
        self.messageID = messageID
    }

    public var description: String {
        switch reason {
        case .truncatedHeader: "datagram shorter than the 4-byte CoAP header"
        case .unsupportedVersion(let version): "unsupported CoAP version \(version)"
        case .reservedTokenLength(let length): "token length \(length) is reserved (must be 0-8)"
        case .truncatedToken: "datagram ends inside the token"
        case .reservedOptionDelta: "option delta nibble 15 outside the payload marker"
        case .reservedOptionLength: "option length nibble 15 is reserved"
        case .truncatedOption: "datagram ends inside an option"
        case .optionNumberOverflow: "option number above 65535"
        case .emptyPayloadAfterMarker: "payload marker followed by no payload"
        case .emptyMessageNotEmpty: "Empty message (0.00) carries a token, options or payload"
        case .reservedCodeClass(let codeClass): "code class \(codeClass) is reserved"
        }
    }
}
