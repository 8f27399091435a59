/// One thing the server pushes to a device over its WebSocket session.
public enum Push: Hashable, Sendable {
    /// A new message in one of the device's chats, pushed in sequence order.
    case message(ChatMessage)
    /// A message this device sent now has its place in the chat's history.
    case delivered(DeliveryReceipt)
    /// Users of the device's chats who came online or went offline (coalesced).
    case presence(Presence)
}
