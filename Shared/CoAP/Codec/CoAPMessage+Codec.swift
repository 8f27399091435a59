extension CoAPMessage {
    //  0                   1                   2                   3
    //  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    // +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    // |Ver| T |  TKL  |      Code     |          Message ID           |
    // +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    // |   Token (if any, TKL bytes) ...
    // +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    // |   Options (if any) ...
    // +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    // |1 1 1 1 1 1 1 1|    Payload (if any) ...
    // +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    //                  RFC 7252 Figure 7: Message Format
    //
    //   0   1   2   3   4   5   6   7
    // +---------------+---------------+
    // |  Option Delta | Option Length |   1 byte
    // +---------------+---------------+
    // /         Option Delta          /   0-2 bytes
    // \          (extended)           \
    // +-------------------------------+
    // /         Option Length         /   0-2 bytes
    // \          (extended)           \
    // +-------------------------------+
    // /         Option Value          /   0 or more bytes
    // +-------------------------------+
    //                  RFC 7252 Figure 8: Option Format
    // Nibble 13: one extended byte holds value - 13; 14: two bytes hold value - 269; 15: reserved
    // (0xFF as a whole byte is the payload marker).

    private static let payloadMarker: UInt8 = 0xFF

    /// The datagram for this message. Options are sorted by number; repeated options keep their order.
    public func encode() -> [UInt8] {
        precondition(token.count <= Self.maxTokenLength, "token longer than 8 bytes")
        var bytes: [UInt8] = []
        bytes.reserveCapacity(4 + token.count + payload.count + options.reduce(0) { $0 + $1.value.count + 3 } + 1)
        bytes.append(1 << 6 | type.rawValue << 4 | UInt8(token.count))
        bytes.append(code.rawValue)
        bytes.append(UInt8(messageID >> 8))
        bytes.append(UInt8(messageID & 0xFF))
        bytes.append(contentsOf: token)

        var previous: UInt16 = 0
        // A stable sort keeps repeated options (Uri-Path segments) in the order given.
        let sorted = options.enumerated().sorted {
            ($0.element.number.rawValue, $0.offset) < ($1.element.number.rawValue, $1.offset)
        }
        for (_, option) in sorted {
            let delta = Int(option.number.rawValue - previous)
            let length = option.value.count
            precondition(length <= 65_535 + 269, "option value too long to encode")
            let (deltaNibble, deltaExtended) = Self.nibble(for: delta)
            let (lengthNibble, lengthExtended) = Self.nibble(for: length)
            bytes.append(deltaNibble << 4 | lengthNibble)
            bytes.append(contentsOf: deltaExtended)
            bytes.append(contentsOf: lengthExtended)
            bytes.append(contentsOf: option.value)
            previous = option.number.rawValue
        }
        if !payload.isEmpty {
            bytes.append(Self.payloadMarker)
            bytes.append(contentsOf: payload)
        }
        return bytes
    }

    private static func nibble(for value: Int) -> (UInt8, [UInt8]) {
        switch value {
        case ..<13:
            return (UInt8(value), [])
        case ..<269:
            return (13, [UInt8(value - 13)])
        default:
            let extended = value - 269
            return (14, [UInt8(extended >> 8), UInt8(extended & 0xFF)])
        }
    }

    /// Parses one datagram. Every RFC 7252 format error is thrown, never trapped on.
    public static func decode(_ bytes: some Collection<UInt8>) throws(CoAPFormatError) -> CoAPMessage {
        let data = Array(bytes)
        guard data.count >= 4 else { throw CoAPFormatError(.truncatedHeader) }
        let version = data[0] >> 6
        guard let type = MessageType(rawValue: (data[0] >> 4) & 0x3) else {
            preconditionFailure("two bits always form a message type")
        }
        let messageID = UInt16(data[2]) << 8 | UInt16(data[3])
        func failure(_ reason: CoAPFormatError.Reason) -> CoAPFormatError {
            CoAPFormatError(reason, type: type, messageID: messageID)
        }
        // RFC 7252 §3: an unknown version is silently ignored, so no header is handed on for a RST.
        guard version == 1 else { throw CoAPFormatError(.unsupportedVersion(version)) }
        let tokenLength = Int(data[0] & 0x0F)
        guard tokenLength <= maxTokenLength else { throw failure(.reservedTokenLength(UInt8(tokenLength))) }
        let code = CoAPCode(rawValue: data[1])

        if code == .empty {
            // RFC 7252 §4.1: an Empty message is the 4-byte header and nothing else.
            guard data.count == 4, tokenLength == 0 else { throw failure(.emptyMessageNotEmpty) }
            return CoAPMessage(type: type, code: code, messageID: messageID)
        }
        guard !code.isReserved else { throw failure(.reservedCodeClass(code.codeClass)) }
        guard data.count >= 4 + tokenLength else { throw failure(.truncatedToken) }
        let token = Array(data[4..<4 + tokenLength])

        var index = 4 + tokenLength
        var options: [CoAPOption] = []
        var number = 0
        var payload: [UInt8] = []
        while index < data.count {
            let head = data[index]
            index += 1
            if head == payloadMarker {
                guard index < data.count else { throw failure(.emptyPayloadAfterMarker) }
                payload = Array(data[index...])
                break
            }
            let delta = try readExtended(nibble: head >> 4, data: data, index: &index, isDelta: true, failure: failure)
            let length = try readExtended(nibble: head & 0x0F, data: data, index: &index, isDelta: false, failure: failure)
            number += delta
            guard number <= Int(UInt16.max) else { throw failure(.optionNumberOverflow) }
            guard data.count - index >= length else { throw failure(.truncatedOption) }
            options.append(CoAPOption(number: CoAPOptionNumber(rawValue: UInt16(number)), value: Array(data[index..<index + length])))
            index += length
        }
        return CoAPMessage(type: type, code: code, messageID: messageID, token: token, options: options, payload: payload)
    }

    private static func readExtended(
        nibble: UInt8,
        data: [UInt8],
        index: inout Int,
        isDelta: Bool,
        failure: (CoAPFormatError.Reason) -> CoAPFormatError
    ) throws(CoAPFormatError) -> Int {
        switch nibble {
        case 13:
            guard index < data.count else { throw failure(.truncatedOption) }
            defer { index += 1 }
            return Int(data[index]) + 13
        case 14:
            guard data.count - index >= 2 else { throw failure(.truncatedOption) }
            defer { index += 2 }
            return (Int(data[index]) << 8 | Int(data[index + 1])) + 269
        case 15:
            throw failure(isDelta ? .reservedOptionDelta : .reservedOptionLength)
        default:
            return Int(nibble)
        }
    }
}
