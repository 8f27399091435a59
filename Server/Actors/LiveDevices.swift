import Synchronization

/// The devices that have a push session now, by user: what the consumers' fan-out reaches. A
/// member with no live device costs nothing when a message is stored (no actor is loaded to
/// deliver to nobody); the device catches up from its cursor when it connects.
///
/// Bounded by the open push sessions (`PushService.Configuration.maxSessions`): a device is
/// here only between its session's `register` and `unregister`.
package final class LiveDevices: Sendable {
    private struct Entry {
        var device: DeviceEntity
        /// Sessions of this device between register and unregister (a newer session may
        /// register before the one it replaces has left).
        var sessions: Int
    }

    private let byUser = Mutex<[UInt64: [UInt64: Entry]]>([:])
    /// Users who came online (true: a first device registered) or went offline (false: the
    /// last one left) since `takePresenceChanges`: each user's latest state, so bounded by
    /// the users who had sessions meanwhile.
    private let presenceChanges = Mutex<[UInt64: Bool]>([:])
    private let observer: (any LiveDevicesObserver)?

    /// `observer` hears of each session that begins and ends (a cluster's session registry).
    package init(observer: (any LiveDevicesObserver)? = nil) {
        self.observer = observer
    }

    /// A session of `device` begins: from now on it is handed every message stored for its user.
    package func register(_ device: DeviceEntity) {
        let cameOnline = byUser.withLock { byUser in
            let wasOnline = byUser[device.userID] != nil
            byUser[device.userID, default: [:]][device.id, default: Entry(device: device, sessions: 0)].sessions += 1
            return !wasOnline
        }
        if cameOnline { presenceChanges.withLock { $0[device.userID] = true } }
        observer?.registered(device)
    }

    package func unregister(_ device: DeviceEntity) {
        let wentOffline = byUser.withLock { byUser -> Bool in
            guard var entry = byUser[device.userID]?[device.id] else { return false }
            entry.sessions -= 1
            if entry.sessions > 0 {
                byUser[device.userID]![device.id] = entry
            } else {
                byUser[device.userID]![device.id] = nil
                if byUser[device.userID]!.isEmpty {
                    byUser[device.userID] = nil
                    return true
                }
            }
            return false
        }
        if wentOffline { presenceChanges.withLock { $0[device.userID] = false } }
        observer?.unregistered(device)
    }

    /// The live devices of these users.
    package func devices(of users: some Sequence<UInt64>) -> [DeviceEntity] {
        byUser.withLock { byUser in users.flatMap { byUser[$0]?.values.map(\.device) ?? [] } }
    }

    /// Whether `userID` has a live device now.
    package func isOnline(_ userID: UInt64) -> Bool {
        byUser.withLock { $0[userID] != nil }
    }

    /// Up to `limit` users whose presence changed since the last call, with their newest state;
    /// the rest wait for the next call. A user who came and went meanwhile is reported as they
    /// are now (true: online).
    package func takePresenceChanges(limit: Int) -> [UInt64: Bool] {
        presenceChanges.withLock { changes in
            guard changes.count > limit else {
                defer { changes = [:] }
                return changes
            }
            var taken: [UInt64: Bool] = [:]
            for (user, online) in changes.prefix(limit) { taken[user] = online }
            for user in taken.keys { changes[user] = nil }
            return taken
        }
    }

    /// Users with a live device now.
    package var users: [UInt64] { byUser.withLock { Array($0.keys) } }

    /// Devices registered now.
    package var count: Int { byUser.withLock { $0.values.reduce(0) { $0 + $1.count } } }
}

/// Hears of push sessions as they begin and end.
package protocol LiveDevicesObserver: Sendable {
    func registered(_ device: DeviceEntity)
    func unregistered(_ device: DeviceEntity)
}
