import CourierCore
import CourierProtocol
import Logging

/// Tells connected devices who came online or went offline among the users they share a chat
/// with. Coalesced: every `interval` it takes the users whose presence changed (at most
/// `maxUsersPerRound`; the rest wait a round) and sends each live device at most one
/// Presence frame per round, holding only the users' latest states (at most
/// `Presence.maxUsers`; past that, the rest of that round's news for that device is dropped:
/// its member lists correct it). So a fleet reconnecting costs each device one small frame
/// every few seconds, and the server one storage read per changed user.
package final class PresenceRelay: Sendable {
    package static let defaultInterval: Duration = .seconds(2)
    package static let maxUsersPerRound = 2_000
    /// Most peers one changed user's news goes to.
    package static let maxPeers = 10_000

    let live: LiveDevices
    let storage: any ServerStorage
    let interval: Duration
    let logger: Logger

    package init(live: LiveDevices, storage: any ServerStorage, interval: Duration = PresenceRelay.defaultInterval, logger: Logger) {
        self.live = live
        self.storage = storage
        self.interval = interval
        self.logger = logger
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
        let changes = live.takePresenceChanges(limit: Self.maxUsersPerRound)
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
