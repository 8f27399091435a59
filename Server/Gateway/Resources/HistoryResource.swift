import CoAP
import CourierCore
import CourierProtocol

/// `POST /v1/history` and `POST /v1/search`: reading the caller's own chats. A page of history
/// goes backwards from a sequence; search finds whole words in the caller's chats only. Both
/// answers are bounded by a count and by the text they carry, so they stay well under what a
/// client assembles from Block2 blocks (1 MiB).
struct HistoryResource: Sendable {
    /// Message text (and search snippets) per answer; past it the answer is cut, but always
    /// holds at least one message.
    static let maxTextBytes = 256 * 1024

    let storage: any ServerStorage

    func history(_ context: RequestContext) async throws -> CoAPMessage {
        let identity = try context.device()
        let ask = try context.body(HistoryRequest.self)
        try await storage.requireMember(identity.userID, of: ask.chatID)
        let limit = Self.limit(ask.limit, default: HistoryRequest.defaultLimit, max: HistoryRequest.maxLimit)
        let found = try await storage.history(chatID: ask.chatID, beforeSequence: ask.beforeSequence == 0 ? .max : ask.beforeSequence, limit: limit)
        // The newest are kept: they join on to what the reader already has.
        let page = found.suffix(Self.fitting(found.reversed().lazy.map(\.text.utf8.count)))
        // Sequences start at 1 with no gap, so older messages exist exactly when the page starts above 1.
        let response = HistoryResponse(messages: page.map(ChatMessage.init), more: (page.first?.sequence ?? 1) > 1)
        return .response(.content, payload: response.serializedBytes(), contentFormat: CoAPContentFormat.protobuf)
    }

    func search(_ context: RequestContext) async throws -> CoAPMessage {
        let identity = try context.device()
        let ask = try context.body(SearchRequest.self)
        if ask.chatID != 0 { try await storage.requireMember(identity.userID, of: ask.chatID) }
        let limit = Self.limit(ask.limit, default: SearchRequest.defaultLimit, max: SearchRequest.maxLimit)
        let hits = try await storage.search(words: ask.words, userID: identity.userID, chatID: ask.chatID == 0 ? nil : ask.chatID, limit: limit)
        let best = hits.prefix(Self.fitting(hits.lazy.map { $0.message.text.utf8.count + $0.snippet.utf8.count })).map {
            CourierProtocol.SearchHit(message: ChatMessage($0.message), chatName: $0.chatName, senderName: $0.senderName, snippet: $0.snippet)
        }
        let response = SearchResponse(hits: best)
        return .response(.content, payload: response.serializedBytes(), contentFormat: CoAPContentFormat.protobuf)
    }

    /// The limit a request asked for: 0 is the default, and above the maximum counts as it.
    private static func limit(_ asked: UInt32, default standard: UInt32, max bound: UInt32) -> Int {
        Int(asked == 0 ? standard : min(asked, bound))
    }

    /// How many items of these sizes, in order, fit in `maxTextBytes`; at least one, so a
    /// reader moves on.
    static func fitting(_ sizes: some Sequence<Int>) -> Int {
        var count = 0
        var total = 0
        for size in sizes {
            total += size
            if total > maxTextBytes && count > 0 { break }
            count += 1
        }
        return count
    }
}
