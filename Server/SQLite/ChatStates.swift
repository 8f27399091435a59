import Synchronization

/// What the store transaction needs to know of a chat, its members and its last sequence,
/// kept between transactions so that each chat's part of a batch does not read them again
/// (two of the seven statements of a one-message part). Only the writer connection uses it:
///
/// - a transaction works on an overlay of its own (`StoreTransaction`) and merges it only once
///   it has committed, so a rolled-back one leaves nothing behind;
/// - the writes that change a chat's members or messages outside `storeBatch` forget the chat
///   inside their own transaction, before any later store transaction can read it;
/// - a commit by another process (an admin command) changes SQLite's `data_version`, and then
///   everything is forgotten.
///
/// Should a kept sequence be wrong anyway, one too low collides with the (chat, sequence)
/// uniqueness and the batch is written again from what the database says (`storeBatch`); one
/// too high, or wrong members, would go unnoticed, which is why every writer of members and
/// messages forgets. Bounded: at `capacity` chats it starts over empty.
final class ChatStates: Sendable {
    struct State: Sendable {
        var members: Set<UInt64>
        var lastSequence: UInt64
    }

    let capacity: Int
    private let cache = Mutex<(states: [UInt64: State], dataVersion: Int64?)>(([:], nil))

    init(capacity: Int = 65_536) {
        self.capacity = capacity
    }

    var count: Int { cache.withLock { $0.states.count } }

    /// Starts a store transaction that has read `dataVersion`: if another process committed
    /// since the last one, what is kept may be stale and is forgotten.
    func begin(dataVersion: Int64) -> StoreTransaction {
        cache.withLock { cache in
            if cache.dataVersion != dataVersion {
                cache.states.removeAll()
                cache.dataVersion = dataVersion
            }
        }
        return StoreTransaction(states: self)
    }

    func state(of chatID: UInt64) -> State? {
        cache.withLock { $0.states[chatID] }
    }

    /// A committed transaction's states.
    func merge(_ overlay: [UInt64: State]) {
        cache.withLock { cache in
            if cache.states.count + overlay.count > capacity { cache.states.removeAll(keepingCapacity: true) }
            cache.states.merge(overlay) { $1 }
        }
    }

    func forget(_ chatID: UInt64) {
        _ = cache.withLock { $0.states.removeValue(forKey: chatID) }
    }

    func forgetAll() {
        cache.withLock { $0.states.removeAll() }
    }

    /// One store transaction's view: the states it read or wrote, over what was kept.
    struct StoreTransaction {
        let states: ChatStates
        private(set) var overlay: [UInt64: State] = [:]

        init(states: ChatStates) {
            self.states = states
        }

        func state(of chatID: UInt64) -> State? {
            overlay[chatID] ?? states.state(of: chatID)
        }

        mutating func set(_ state: State, of chatID: UInt64) {
            overlay[chatID] = state
        }

        /// Call once the transaction has committed.
        func committed() {
            if !overlay.isEmpty { states.merge(overlay) }
        }
    }
}
