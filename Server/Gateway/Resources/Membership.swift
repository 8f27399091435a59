import CourierCore

extension ServerStorage {
    /// Goes on only if the chat exists (else 4.04) and `userID` is a member (else 4.03).
    func requireMember(_ userID: UInt64, of chatID: UInt64) async throws {
        guard try await members(ofChat: chatID).contains(userID) else {
            do {
                _ = try await chat(id: chatID)
            } catch .notFound {
                throw Refusal(.notFound, .notFound, "no chat \(chatID)")
            }
            throw Refusal(.forbidden, .forbidden, "not a member of chat \(chatID)")
        }
    }
}
