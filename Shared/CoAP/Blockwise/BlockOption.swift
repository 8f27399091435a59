/// The value of a Block1 or Block2 option (RFC 7959 §2.2).
///
///   0 1 2 3 4 5 6 7      (one byte; two and three byte forms widen NUM)
///  +-+-+-+-+-+-+-+-+
///  |  NUM  |M| SZX |
///  +-+-+-+-+-+-+-+-+
public struct BlockOption: Sendable, Hashable, CustomStringConvertible {
    /// The largest block number a 3-byte option can carry.
    public static let maxNumber: UInt32 = (1 << 20) - 1
    /// SZX 7 is reserved for BERT (RFC 8323), which UDP does not use.
    public static let maxSizeExponent: UInt8 = 6

    public var number: UInt32
    public var more: Bool
    /// Block size is 2^(szx + 4): 16 ... 1024 bytes.
    public var sizeExponent: UInt8

    public init(number: UInt32, more: Bool, sizeExponent: UInt8) {
        precondition(number <= Self.maxNumber && sizeExponent <= Self.maxSizeExponent)
        self.number = number
        self.more = more
        self.sizeExponent = sizeExponent
    }

    /// The block size in bytes.
    public var size: Int { 1 << (Int(sizeExponent) + 4) }
    /// Where this block starts in the whole body.
    public var offset: Int { Int(number) * size }

    /// The exponent for the largest block not above `bytes` (at least 16, at most 1024).
    public static func sizeExponent(forBlockSize bytes: Int) -> UInt8 {
        var exponent: UInt8 = 0
        while exponent < maxSizeExponent && 1 << (Int(exponent) + 5) <= bytes { exponent += 1 }
        return exponent
    }

    /// Parses an option value; nil when it is longer than 3 bytes or uses the reserved SZX 7.
    public init?(optionValue bytes: [UInt8]) {
        guard bytes.count <= 3 else { return nil }
        let raw = CoAPOption.decodeUInt(bytes)
        let exponent = UInt8(raw & 0x7)
        guard exponent <= Self.maxSizeExponent else { return nil }
        self.init(number: raw >> 4, more: raw & 0x8 != 0, sizeExponent: exponent)
    }

    /// The option value, in its shortest form.
    public var optionValue: [UInt8] {
        CoAPOption.encodeUInt(number << 4 | (more ? 0x8 : 0) | UInt32(sizeExponent))
    }

    public var description: String { "\(number)/\(more ? 1 : 0)/\(size)" }
}

extension CoAPMessage {
    /// The Block1 option, nil when absent; throws when present but malformed.
    public func block1() throws(BlockOptionError) -> BlockOption? { try block(.block1) }
    /// The Block2 option, nil when absent; throws when present but malformed.
    public func block2() throws(BlockOptionError) -> BlockOption? { try block(.block2) }

    private func block(_ number: CoAPOptionNumber) throws(BlockOptionError) -> BlockOption? {
        guard let value = optionValue(number) else { return nil }
        guard let block = BlockOption(optionValue: value) else { throw BlockOptionError(option: number) }
        return block
    }

    public mutating func setBlock1(_ block: BlockOption) { setOption(.block1, values: [block.optionValue]) }
    public mutating func setBlock2(_ block: BlockOption) { setOption(.block2, values: [block.optionValue]) }
}

/// A Block1 or Block2 option that cannot be parsed.
public struct BlockOptionError: Error, Sendable, Hashable {
    public var option: CoAPOptionNumber
}
