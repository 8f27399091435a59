import CourierActors
import CourierPostgres
import Logging
import Synchronization

/// Which devices' push sessions this node holds, by epoch (`PostgresStorage.claimSession`): when
/// a device's newer session begins on another node, the one here is closed ("session moved to
/// another node"), so one device never has two live sessions in the cluster for long.
///
/// Bounded by this node's live sessions: a device is here only while it has one.
final class ClusterSessions: LiveDevicesObserver {
    private struct Held {
        var device: DeviceEntity
        var sessions: Int
        /// This node's claim, once PostgreSQL has answered it.
        var epoch: UInt64?
        /// The newest claim of another node heard of while this one's was on its way.
        var newestElsewhere: UInt64 = 0
    }

    static let movedReason = "session moved to another node"
    private let held = Mutex<[UInt64: Held]>([:])
    private let storage: PostgresStorage
    private let node: String
    private let logger: Logger

    init(storage: PostgresStorage, node: String, logger: Logger) {
        self.storage = storage
        self.node = node
        self.logger = logger
    }

    func registered(_ device: DeviceEntity) {
        held.withLock { $0[device.id, default: Held(device: device, sessions: 0)].sessions += 1 }
        Task {
            let epoch: UInt64
            do {
                epoch = try await storage.claimSession(deviceID: device.id, node: node)
            } catch {
                // The session works without the claim; an older one elsewhere is then closed
                // by its own node's watchdog when the device stops answering it.
                logger.warning("cannot record the device's push session", metadata: ["device": "\(device.id)", "error": "\(error)"])
                return
            }
            let outdated = held.withLock { held -> Bool in
                guard var entry = held[device.id] else { return false }
                entry.epoch = max(entry.epoch ?? 0, epoch)
                held[device.id] = entry
                return entry.newestElsewhere > entry.epoch!
            }
            if outdated { device.closeSession(code: 1001, reason: Self.movedReason) }
        }
    }

    func unregistered(_ device: DeviceEntity) {
        held.withLock { held in
            guard var entry = held[device.id] else { return }
            entry.sessions -= 1
            held[device.id] = entry.sessions > 0 ? entry : nil
        }
    }

    /// Another node claimed the device's session as its `epoch`th.
    func moved(deviceID: UInt64, epoch: UInt64) {
        let device = held.withLock { held -> DeviceEntity? in
            guard var entry = held[deviceID] else { return nil }
            guard let own = entry.epoch else {
                entry.newestElsewhere = max(entry.newestElsewhere, epoch)
                held[deviceID] = entry
                return nil
            }
            return own < epoch ? entry.device : nil
        }
        device?.closeSession(code: 1001, reason: Self.movedReason)
    }
}
