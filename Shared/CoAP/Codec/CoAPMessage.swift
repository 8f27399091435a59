/// One CoAP message (RFC 7252 §3), independent of any transport.
public struct CoAPMessage: Sendable, Hashable {
    /// Message type (RFC 7252 §4): how the message layer treats it.
    public enum MessageType: UInt8, Sendable, Hashable {
        case confirmable = 0
        case nonConfirmable = 1
        case acknowledgement = 2
        case reset = 3
    }

    /// The longest token RFC 7252 allows (TKL 9-15 are reserved).
    public static let maxTokenLength = 8

    public var type: MessageType
    public var code: CoAPCode
    public var messageID: UInt16
    public var token: [UInt8]
    /// Options in transmission order; the encoder sorts by number, keeping repeated options in order.
    public var options: [CoAPOption]
    public var payload: [UInt8]

    public init(
        type: MessageType,
        code: CoAPCode,
        messageID: UInt16,
        token: [UInt8] = [],
        options: [CoAPOption] = [],
        payload: [UInt8] = []
    ) {
        self.type = type
        self.code = code
        self.messageID = messageID
        self.token = token
        self.options = options
        self.payload = payload
    }

    /// An Empty message (code 0.00): an empty ACK, a RST, or a CoAP ping.
    public static func empty(_ type: MessageType, messageID: UInt16) -> CoAPMessage {
        CoAPMessage(type: type, code: .empty, messageID: messageID)
    }

    public var isEmpty: Bool { code == .empty }
    public var isRequest: Bool { code.isRequest }
    public var isResponse: Bool { code.isResponse }

    /// Every value of `number`, in order.
    public func optionValues(_ number: CoAPOptionNumber) -> [[UInt8]] {
        options.filter { $0.number == number }.map(\.value)
    }

    /// The first value of `number`, if present.
    public func optionValue(_ number: CoAPOptionNumber) -> [UInt8]? {
        options.first { $0.number == number }?.value
    }

    /// The first value of `number` read as a CoAP uint (RFC 7252 §3.2), if present.
    public func uintOption(_ number: CoAPOptionNumber) -> UInt32? {
        optionValue(number).map(CoAPOption.decodeUInt)
    }

    /// Uri-Path segments, in order.
    public var uriPath: [String] {
        optionValues(.uriPath).map { String(decoding: $0, as: UTF8.self) }
    }

    /// Uri-Query arguments, in order.
    public var uriQuery: [String] {
        optionValues(.uriQuery).map { String(decoding: $0, as: UTF8.self) }
    }

    /// Replaces every value of `number` with `values`.
    public mutating func setOption(_ number: CoAPOptionNumber, values: [[UInt8]]) {
        options.removeAll { $0.number == number }
        options.append(contentsOf: values.map { CoAPOption(number: number, value: $0) })
    }

    /// Replaces every value of `number` with one uint value.
    public mutating func setUIntOption(_ number: CoAPOptionNumber, _ value: UInt32) {
        setOption(number, values: [CoAPOption.encodeUInt(value)])
    }

    /// Removes every value of `number`.
    public mutating func removeOption(_ number: CoAPOptionNumber) {
        options.removeAll { $0.number == number }
    }
}

extension CoAPMessage {
    /// This answer cut to at most `limit` bytes when sent with `token`: the payload is cut (and,
    /// once empty, its Content-Format goes), then Size1, which is advice only. An answer to an
    /// endpoint that has shown no credential is kept within the request's own size, so that a
    /// spoofed source cannot use the server to amplify traffic (RFC 7252 §11.3).
    public func fitting(within limit: Int, token: [UInt8]) -> CoAPMessage {
        var answer = self
        // Measured as it will be sent: the endpoint gives the answer the request's token.
        answer.token = token
        let size = answer.encode().count
        if size > limit {
            answer.payload = Array(answer.payload.prefix(max(0, answer.payload.count - (size - limit))))
            if answer.payload.isEmpty { answer.removeOption(.contentFormat) }
            if answer.encode().count > limit { answer.removeOption(.size1) }
        }
        answer.token = token
        return answer
    }
}
