/// A Courier value that crosses the wire as one Protobuf message of package `courier.v1`.
public protocol WireMessage: Sendable, Hashable {
    /// Encodes the value as Protobuf binary.
    func serializedBytes() -> [UInt8]

    /// Decodes and validates a value from Protobuf binary; never traps, whatever the bytes.
    init(serializedBytes bytes: some Collection<UInt8>) throws(WireDecodingError)
}
