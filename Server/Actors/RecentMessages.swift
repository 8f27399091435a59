import CourierCore
import Synchronization

/// The last messages stored in each chat, as delivery receipts need them (sequence, sender, ids),
/// so that an acknowledgement is answered from memory instead of a history read. The consumers
/// add what each transaction stored; a Chat actor reads a range only when every sequence of it
/// is here (partitions may hand in a chat's messages out of order), else it reads storage.
///
/// Bounded: `perChat` messages per chat (the lowest sequences go first) and `maxChats` chats (at
/// the bound, an arbitrary chat is forgotten; its receipts come from storage again).
package final class RecentMessages: Sendable {
    package struct Entry: Sendable, Equatable {
        package var senderUserID: UInt64
        package var serverMessageID: UInt64
        package var clientMessageID: String

        package init(senderUserID: UInt64, serverMessageID: UInt64, clientMessageID: String) {
            self.senderUserID = senderUserID
            self.serverMessageID = serverMessageID
            self.clientMessageID = clientMessageID
        }
    }

    private let perChat: Int
    private let maxChats: Int
    private let chats = Mutex<[UInt64: [UInt64: Entry]]>([:])

    package init(perChat: Int = 32, maxChats: Int = 8_192) {
        self.perChat = perChat
        self.maxChats = maxChats
    }

    /// Remembers messages just stored in `chatID`.
    package func add(_ messages: [StoredMessage], chatID: UInt64) {
        add(messages.map { ($0.sequence, Entry(senderUserID: $0.senderUserID, serverMessageID: $0.serverMessageID, clientMessageID: $0.clientMessageID)) }, chatID: chatID)
    }

    /// Remembers messages of `chatID` by sequence (another node of a cluster stored them).
    package func add(_ entries: [(sequence: UInt64, entry: Entry)], chatID: UInt64) {
        guard !entries.isEmpty else { return }
        chats.withLock { chats in
            if chats[chatID] == nil, chats.count >= maxChats, let any = chats.keys.first { chats[any] = nil }
            // Changed where it is stored: a copy taken out would be copied again by its first
            // change (the dictionary still holds it), once per add.
            chats[chatID, default: [:]].remember(entries, keeping: perChat)
        }
    }

    /// The messages of `chatID` with sequence in `after+1 ... through`, in order; nil unless every
    /// one of them is here.
    package func range(of chatID: UInt64, after: UInt64, through: UInt64) -> [(sequence: UInt64, entry: Entry)]? {
        guard through > after else { return [] }
        guard through - after <= UInt64(perChat) else { return nil }
        return chats.withLock { chats in
            guard let recent = chats[chatID] else { return nil }
            var found: [(UInt64, Entry)] = []
            found.reserveCapacity(Int(through - after))
            for sequence in (after + 1)...through {
                guard let entry = recent[sequence] else { return nil }
                found.append((sequence, entry))
            }
            return found
        }
    }
}

private extension Dictionary where Key == UInt64, Value == RecentMessages.Entry {
    /// Adds `entries` by sequence, then forgets the lowest sequences past `limit`.
    mutating func remember(_ entries: [(sequence: UInt64, entry: Value)], keeping limit: Int) {
        for (sequence, entry) in entries { self[sequence] = entry }
        while count > limit, let lowest = keys.min() { self[lowest] = nil }
    }
}
