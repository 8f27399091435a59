import Foundation
import Logging
import Synchronization

/// How a shard region is laid out and bounded (the same for every kind of entity).
public struct ShardRegionConfiguration: Sendable {
    public var shardCount = 64
    public var maxEntitiesPerShard = 4096
    public var idleTimeout: Duration = .seconds(120)
    public init() {}
}

/// An entity that lives in a shard region: one live instance per id, started on first use
/// from storage and stopped (passivated) when idle: an actor, or a class whose state is behind a lock (a Device, which the push path reaches
/// from event loops without an executor hop).
public protocol ShardedEntity: AnyObject, Sendable {
    associatedtype Context: Sendable
    /// Loads the entity's state; a thrown error leaves no instance behind (the next use retries).
    static func activate(id: UInt64, context: Context) async throws -> Self
}

/// Why an entity could not be reached.
public enum ShardRegionError: Error, Sendable, Equatable {
    /// Every live entity of the shard is in use and the shard is at its bound.
    case shardFull(kind: String, shard: Int)
    case stopped
}

/// Maps an entity id to a shard and a shard to its live entities. Callers reach an entity only
/// through `withEntity` (or `checkOut` and `checkIn`), which counts it as in use: an entity in
/// use is never passivated, so there is never a second live instance of one id. The exception
/// is `liveEntity`, a synchronous read that does not count: what it reads may come from an
/// instance passivated a moment later.
///
/// Bounded: a shard holds at most `maxEntitiesPerShard` live entities; at the bound it
/// passivates the least recently used idle one, and if none is idle the call fails with
/// `.shardFull` (the caller retries later).
public final class ShardRegion<Entity: ShardedEntity>: Sendable {
    public let kind: String
    public let configuration: ShardRegionConfiguration
    private let shards: [Shard<Entity>]

    public init(kind: String, context: Entity.Context, configuration: ShardRegionConfiguration = ShardRegionConfiguration()) {
        precondition(configuration.shardCount > 0 && configuration.maxEntitiesPerShard > 0)
        self.kind = kind
        self.configuration = configuration
        shards = (0..<configuration.shardCount).map {
            Shard(kind: kind, index: $0, context: context, capacity: configuration.maxEntitiesPerShard)
        }
    }

    /// The shard an id lives in: ids are mixed first, since database ids are consecutive.
    public func shardIndex(of id: UInt64) -> Int {
        var mixed = id &* 0x9E37_79B9_7F4A_7C15
        mixed ^= mixed >> 29
        return Int(mixed % UInt64(shards.count))
    }

    /// Runs `body` with the live entity for `id`, activating it first if needed.
    public func withEntity<Result: Sendable>(_ id: UInt64, _ body: (Entity) async throws -> Result) async throws -> Result {
        let shard = shards[shardIndex(of: id)]
        return try await use(try await shard.checkOut(id), of: shard, id, body)
    }

    /// Checks out the entity for `id`, activating it if needed, for a holder whose use has no
    /// scope to run in (a push session, which lives on its connection's event loop, not in a
    /// task): the entity stays live until the holder calls `checkIn(_:)`, once.
    public func checkOut(_ id: UInt64) async throws -> Entity {
        try await shards[shardIndex(of: id)].checkOut(id)
    }

    /// Ends a use begun with `checkOut(_:)`.
    public func checkIn(_ id: UInt64) {
        shards[shardIndex(of: id)].checkIn(id)
    }

    /// Runs `body` with the entity for `id` only if it is live (or being activated); nil
    /// otherwise, without activating it.
    public func withLiveEntity<Result: Sendable>(_ id: UInt64, _ body: (Entity) async throws -> Result) async throws -> Result? {
        let shard = shards[shardIndex(of: id)]
        guard let entity = try await shard.checkOutIfLive(id) else { return nil }
        return try await use(entity, of: shard, id, body)
    }

    /// The live entity for `id`, if there is one, without activating it or counting it as in
    /// use: for a synchronous read that may be a moment stale (the entity may be passivated
    /// just after), such as a send's membership check, which the store re-checks.
    public func liveEntity(_ id: UInt64) -> Entity? {
        shards[shardIndex(of: id)].liveEntity(id)
    }

    /// Runs `body` with a checked-out entity, and checks it in however `body` ends.
    private func use<Result: Sendable>(_ entity: Entity, of shard: Shard<Entity>, _ id: UInt64, _ body: (Entity) async throws -> Result) async throws -> Result {
        do {
            let result = try await body(entity)
            shard.checkIn(id)
            return result
        } catch {
            shard.checkIn(id)
            throw error
        }
    }

    /// Live entities across all shards.
    public func liveCount() async -> Int {
        var total = 0
        for shard in shards { total += shard.liveCount }
        return total
    }

    /// Passivates entities idle for longer than the idle timeout; returns how many.
    @discardableResult
    public func passivateIdle() async -> Int {
        var total = 0
        for shard in shards { total += shard.passivateIdle(olderThan: configuration.idleTimeout) }
        return total
    }
}

/// One shard's live entities. A lock, not an actor: checking an entity out and in is a few
/// dictionary operations, and as an actor it cost two executor hops on every use (every send's
/// membership check, every acknowledgement's receipts). Only an activation waits, outside the lock.
final class Shard<Entity: ShardedEntity>: Sendable {
    private enum Slot {
        case activating(Task<Entity, any Error>, users: Int)
        case active(Entity, users: Int, lastUsed: ContinuousClock.Instant)
    }

    let kind: String
    let index: Int
    let context: Entity.Context
    let capacity: Int
    private let slots = Mutex<[UInt64: Slot]>([:])

    init(kind: String, index: Int, context: Entity.Context, capacity: Int) {
        self.kind = kind
        self.index = index
        self.context = context
        self.capacity = capacity
    }

    var liveCount: Int { slots.withLock { $0.count } }

    private enum Step {
        case ready(Entity)
        case wait(Task<Entity, any Error>)
        case full
    }

    func checkOut(_ id: UInt64) async throws -> Entity {
        let context = self.context
        let step: Step = slots.withLock { slots in
            switch slots[id] {
            case .active(let entity, let users, _):
                slots[id] = .active(entity, users: users + 1, lastUsed: .now)
                return .ready(entity)
            case .activating(let task, let users):
                slots[id] = .activating(task, users: users + 1)
                return .wait(task)
            case nil:
                if slots.count >= capacity, !Self.evictLeastRecentlyUsed(&slots) { return .full }
                let task = Task { try await Entity.activate(id: id, context: context) }
                slots[id] = .activating(task, users: 1)
                return .wait(task)
            }
        }
        switch step {
        case .ready(let entity): return entity
        case .wait(let task): return try await awaitActivation(id, task)
        case .full: throw ShardRegionError.shardFull(kind: kind, shard: index)
        }
    }

    func checkOutIfLive(_ id: UInt64) async throws -> Entity? {
        guard slots.withLock({ $0[id] != nil }) else { return nil }
        return try await checkOut(id)
    }

    private func awaitActivation(_ id: UInt64, _ task: Task<Entity, any Error>) async throws -> Entity {
        // Only this activation's own slot is touched: after a failure, a newer activation of the
        // same id may already be under way, and it must not be dropped or replaced.
        do {
            let entity = try await task.value
            return slots.withLock { slots in
                if case .activating(let current, let users) = slots[id], current == task {
                    slots[id] = .active(entity, users: users, lastUsed: .now)
                    return entity
                }
                if case .active(let current, _, _) = slots[id] { return current }
                return entity
            }
        } catch {
            // Every waiter sees the failure; the slot goes, so the next use tries again.
            slots.withLock { slots in
                if case .activating(let current, _) = slots[id], current == task { slots[id] = nil }
            }
            throw error
        }
    }

    /// An active entity, marked as used now (so an idle sweep spares a chat that is sending).
    func liveEntity(_ id: UInt64) -> Entity? {
        slots.withLock { slots in
            guard case .active(let entity, let users, _) = slots[id] else { return nil }
            slots[id] = .active(entity, users: users, lastUsed: .now)
            return entity
        }
    }

    func checkIn(_ id: UInt64) {
        slots.withLock { slots in
            switch slots[id] {
            case .active(let entity, let users, _):
                slots[id] = .active(entity, users: max(0, users - 1), lastUsed: .now)
            case .activating(let task, let users):
                slots[id] = .activating(task, users: max(0, users - 1))
            case nil:
                break
            }
        }
    }

    func passivateIdle(olderThan idle: Duration) -> Int {
        let now = ContinuousClock.now
        return slots.withLock { slots in
            let idleIDs = slots.compactMap { id, slot -> UInt64? in
                if case .active(_, 0, let lastUsed) = slot, now - lastUsed >= idle { return id }
                return nil
            }
            for id in idleIDs { slots[id] = nil }
            return idleIDs.count
        }
    }

    private static func evictLeastRecentlyUsed(_ slots: inout [UInt64: Slot]) -> Bool {
        var oldest: (UInt64, ContinuousClock.Instant)?
        for (id, slot) in slots {
            if case .active(_, 0, let lastUsed) = slot, oldest == nil || lastUsed < oldest!.1 { oldest = (id, lastUsed) }
        }
        guard let (id, _) = oldest else { return false }
        slots[id] = nil
        return true
    }
}
