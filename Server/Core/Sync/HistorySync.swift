import CourierProtocol

/// Answers a SyncRequest, for CoAP (`POST /v1/sync`) and for a push session alike: for each
/// chat of the device's user, the messages after the device's cursor (the one it states, else
/// its stored delivery cursor), in sequence order with no gaps, up to a count and a byte
/// budget; `more` says to ask again. Chats the user is not a member of are never answered,
/// whatever the request names.
package enum HistorySync {
    /// Messages per response when the device names no limit, and the most it may ask for.
    static let defaultLimit = 100
    static let maxLimit = 500
    /// Text bytes per response, so that a response fits a WebSocket frame a device accepts.
    static let maxTextBytes = 256 * 1024

    package static func answer(_ request: SyncRequest, for identity: TokenIdentity, storage: any ServerStorage) async throws -> SyncResponse {
        let limit = request.limit == 0 ? defaultLimit : min(Int(request.limit), maxLimit)
        var stated: [UInt64: UInt64] = [:]
        for cursor in request.have { stated[cursor.chatID] = max(stated[cursor.chatID] ?? 0, cursor.sequence) }
        let stored = try await storage.deliveryCursors(deviceID: identity.deviceID)

        var messages: [ChatMessage] = []
        var textBytes = 0
        var more = false
        for chat in try await storage.chats(ofUser: identity.userID) {
            let after = stated[chat.id] ?? stored[chat.id] ?? 0
            guard chat.lastSequence > after else { continue }
            let room = limit - messages.count
            guard room > 0, textBytes < maxTextBytes else {
                more = true
                break
            }
            var found = try await storage.history(chatID: chat.id, afterSequence: after, limit: room)
            // Within the byte budget, but always at least one message so a device moves on.
            if let cut = budgetCut(found, used: textBytes, first: messages.isEmpty) { found.removeSubrange(cut...) }
            textBytes += found.reduce(0) { $0 + $1.text.utf8.count }
            messages += found.map(ChatMessage.init)
            if UInt64(found.count) < chat.lastSequence - after { more = true }
        }
        return SyncResponse(messages: messages, more: more)
    }

    /// The index from which `found` no longer fits the byte budget, if it does not all fit.
    private static func budgetCut(_ found: [StoredMessage], used: Int, first: Bool) -> Int? {
        var total = used
        for (index, message) in found.enumerated() {
            total += message.text.utf8.count
            if total > maxTextBytes && !(first && index == 0) { return index }
        }
        return nil
    }
}
