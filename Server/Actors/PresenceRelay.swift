import CourierCore
import CourierProtocol
import Logging
import Synchronization

/// Where presence lives beyond this process (a cluster's database): what the other nodes learn
/// of this one, and who is online anywhere.
package protocol PresenceDirectory: Sendable {
    /// Users came online here (true) or went offline here (false).
    func record(_ changes: [UInt64: Bool]) async
    /// Of `users`, those with a push session on any node; nil when that cannot be known now.
    func online(among users: [UInt64]) async -> Set<UInt64>?
}

/// Tells connected devices who came online or went offline among the users they share a chat
/// with. Coalesced: every `interval` it takes the users whose presence changed (at most
/// `maxUsersPerRound`; the rest wait a round) and sends each live device at most one
/// Presence frame per round, holding only the users' latest states (at most
/// `Presence.maxUsers`; past that, the rest of that round's news for that device is dropped:
/// its member lists correct it). So a fleet reconnecting costs each device one small frame
/// every few seconds, and the server one storage read per changed user.
///
/// In a cluster, `directory` records this node's changes for the others, and a user's state is
/// who is online on any node: a change heard from another node (`heardElsewhere`) is checked
/// there and reaches this node's devices in the next round.
package final class PresenceRelay: Sendable {
    package static let defaultInterval: Duration = .seconds(2)
    package static let maxUsersPerRound = 2_000
    /// Most peers one changed user's news goes to.
    package static let maxPeers = 10_000
    /// Most users heard of from other nodes and not yet checked; past it the news is dropped
    /// (member lists correct it).
    package static let maxHeard = 100_000

    let live: LiveDevices
    let storage: any ServerStorage
    let directory: (any PresenceDirectory)?
    let interval: Duration
    let logger: Logger
    private let heard = Mutex<Set<UInt64>>([])

    package init(live: LiveDevices, storage: any ServerStorage, directory: (any PresenceDirectory)? = nil, interval: Duration = PresenceRelay.defaultInterval, logger: Logger) {
        self.live = live
        self.storage = storage
        self.directory = directory
        self.interval = interval
        self.logger = logger
    }

    /// Another node says these users' presence changed there.
    package func heardElsewhere(_ users: [UInt64]) {
        heard.withLock { heard in
            for user in users where heard.count < Self.maxHeard { heard.insert(user) }
        }
    }

    /// Whether each of `users` is online: anywhere in the cluster, or here without one.
    package func online(among users: [UInt64]) async -> Set<UInt64> {
        if let directory, let anywhere = await directory.online(among: users) { return anywhere }
        return Set(users.filter(live.isOnline))
    }

    /// Rounds until cancelled.
    package func run() async {
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: interval)
            } catch {
                return
            }
            await round()
        }
    }

    /// One round: the changes so far, to the live devices of the changed users' peers.
    package func round() async {
        var changes = live.takePresenceChanges(limit: Self.maxUsersPerRound)
        let elsewhere = heard.withLock { heard -> [UInt64] in
            let taken = Array(heard.prefix(Self.maxUsersPerRound))
            heard.subtract(taken)
            return taken
        }
        if let directory {
            if !changes.isEmpty { await directory.record(changes) }
            // What the cluster sees: a user who left this node may still be online on another.
            let users = Array(Set(changes.keys).union(elsewhere))
            if !users.isEmpty {
                let anywhere = await online(among: users)
                changes = Dictionary(uniqueKeysWithValues: users.map { ($0, anywhere.contains($0)) })
            }
        }
        guard !changes.isEmpty else { return }
        var frames: [UInt64: Presence] = [:]
        for (user, online) in changes {
            let peers: [UInt64]
            do {
                peers = try await storage.chatPeers(ofUser: user, limit: Self.maxPeers)
            } catch {
                logger.debug("presence: the user's peers could not be read", metadata: ["user": "\(user)", "error": "\(error)"])
                continue
            }
            for peer in peers where live.isOnline(peer) {
                var frame = frames[peer] ?? Presence(onlineUserIDs: [], offlineUserIDs: [])
                guard frame.onlineUserIDs.count + frame.offlineUserIDs.count < Presence.maxUsers else { continue }
                if online { frame.onlineUserIDs.append(user) } else { frame.offlineUserIDs.append(user) }
                frames[peer] = frame
            }
        }
        for (peer, frame) in frames {
            for device in live.devices(of: [peer]) { device.deliverPresence(frame) }
        }
    }
}
