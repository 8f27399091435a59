// libFuzzer target: the Protobuf decode path, Courier's wire types from bytes a peer chose.
//
// Each input is decoded as every type a device sends the server (the CoAP request bodies and the
// push session's ClientFrame) and every type a device decodes from the server. Decoding must give
// a value or a `WireDecodingError`, never trap; a value must survive its own encoding.
import CourierProtocol
import FuzzerDriver

/// Decodes `bytes` as `T`; what decodes must encode and decode back to an equal value.
func check<T: WireMessage>(_: T.Type, _ bytes: [UInt8]) {
    let value: T
    do throws(WireDecodingError) {
        value = try T(serializedBytes: bytes)
    } catch {
        precondition(!error.description.isEmpty, "\(T.self): a WireDecodingError with no description")
        return
    }
    let encoded = value.serializedBytes()
    do throws(WireDecodingError) {
        let again = try T(serializedBytes: encoded)
        precondition(again == value, "\(T.self) round trip: \(value) decodes back as \(again)")
    } catch {
        preconditionFailure("\(T.self) round trip: \(value) encodes to \(encoded), which does not decode: \(error)")
    }
}

runFuzzer { input in
    let bytes = Array(input)
    // Device to server: CoAP request bodies, then the push session's frames.
    check(SendMessage.self, bytes)
    check(SyncRequest.self, bytes)
    check(CreateChat.self, bytes)
    check(JoinChat.self, bytes)
    check(InviteToChat.self, bytes)
    check(HistoryRequest.self, bytes)
    check(SearchRequest.self, bytes)
    check(RedeemInvite.self, bytes)
    check(ChatMembersRequest.self, bytes)
    check(MessageChange.self, bytes)
    check(LeaveChat.self, bytes)
    check(ClientFrame.self, bytes)
    // Server to device: what a device decodes from a server it does not trust either.
    check(SendResult.self, bytes)
    check(WireError.self, bytes)
    check(SignedIn.self, bytes)
    check(ChatMembers.self, bytes)
    check(Presence.self, bytes)
    check(ServerFrame.self, bytes)
}
