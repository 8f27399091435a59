// libFuzzer target: the CoAP codec (RFC 7252 §3) and the Block1/Block2 option values (RFC 7959).
//
// Any datagram must decode or throw `CoAPFormatError`, never trap. What decodes must re-encode
// to the same bytes (the RFC's option encoding leaves no choice: deltas and lengths use the
// shortest nibble form, and the decoder keeps options in the order they came) and decode again
// to an equal message. A Block option that parses must round-trip through its shortest form.
import CoAP
import FuzzerDriver

runFuzzer { input in
    let bytes = Array(input)
    let message: CoAPMessage
    do throws(CoAPFormatError) {
        message = try CoAPMessage.decode(bytes)
    } catch {
        // A CON that fails to parse is answered with RST: the header fields must be the input's.
        if let messageID = error.messageID {
            precondition(bytes.count >= 4 && messageID == UInt16(bytes[2]) << 8 | UInt16(bytes[3]), "CoAPFormatError carries a Message ID the datagram does not")
        }
        return
    }
    let encoded = message.encode()
    precondition(encoded == bytes, "CoAP round trip: \(message) re-encodes to \(encoded), not the \(bytes) it was decoded from")
    do throws(CoAPFormatError) {
        let again = try CoAPMessage.decode(encoded)
        precondition(again == message, "CoAP round trip: \(message) decodes back as \(again)")
    } catch {
        preconditionFailure("CoAP round trip: \(message) re-encodes to \(encoded), which does not decode: \(error)")
    }

    for number in [CoAPOptionNumber.block1, .block2] {
        for value in message.optionValues(number) {
            guard let block = BlockOption(optionValue: value) else { continue }
            precondition(block.size >= 16 && block.size <= 1024, "Block option \(value) gives size \(block.size)")
            let shortest = block.optionValue
            precondition(shortest.count <= 3, "Block option \(block) encodes to \(shortest.count) bytes")
            precondition(BlockOption(optionValue: shortest) == block, "Block option \(block) does not survive its own encoding \(shortest)")
        }
    }
    _ = try? message.block1()
    _ = try? message.block2()
    _ = message.uriPath
    _ = message.uriQuery
    _ = message.uintOption(.contentFormat)
}
