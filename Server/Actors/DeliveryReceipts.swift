import CourierCore
import CourierProtocol
import Logging

/// Routes stored acknowledgements to the chats' receipt bookkeeping (in each Chat actor) and the
/// receipts that completes to the senders' devices connected here.
package final class DeliveryReceipts: Sendable {
    let chats: ShardRegion<ChatEntity>
    let live: LiveDevices
    /// Hears of every acknowledgement stored here (a cluster node tells the other nodes, whose
    /// connected senders' receipts it may complete).
    let announce: (@Sendable ([ClusterNews.Acknowledgement]) -> Void)?
    let logger: Logger

    package init(chats: ShardRegion<ChatEntity>, live: LiveDevices, logger: Logger, announce: (@Sendable ([ClusterNews.Acknowledgement]) -> Void)? = nil) {
        self.chats = chats
        self.live = live
        self.logger = logger
        self.announce = announce
    }

    /// A device connected here moved its stored cursors.
    package func acknowledged(_ advances: [CursorAdvance], userID: UInt64, deviceID: UInt64) async {
        announce?(advances.map { ClusterNews.Acknowledgement(chatID: $0.chatID, userID: userID, deviceID: deviceID, from: $0.from, to: $0.to) })
        for advance in advances {
            _ = await acknowledgedElsewhere(ClusterNews.Acknowledgement(chatID: advance.chatID, userID: userID, deviceID: deviceID, from: advance.from, to: advance.to), activating: true)
        }
    }

    /// A device (here, or connected to another node) moved its stored cursor: the receipts it
    /// completes go to the senders' devices connected here. Returns false, doing nothing, when
    /// the chat is not active here and `activating` is false.
    package func acknowledgedElsewhere(_ acknowledgement: ClusterNews.Acknowledgement, activating: Bool) async -> Bool {
        let live = self.live
        let body: (ChatEntity) async throws -> [ChatEntity.Receipts] = {
            try await $0.acknowledged(
                userID: acknowledgement.userID, deviceID: acknowledgement.deviceID, from: acknowledgement.from, to: acknowledgement.to,
                connected: { !live.devices(of: [$0]).isEmpty }
            )
        }
        do {
            let due: [ChatEntity.Receipts]
            if activating {
                due = try await chats.withEntity(acknowledgement.chatID, body)
            } else {
                guard let found = try await chats.withLiveEntity(acknowledgement.chatID, body) else { return false }
                due = found
            }
            for receipts in due {
                for device in live.devices(of: [receipts.senderUserID]) { device.deliverReceipts(receipts.receipts) }
            }
        } catch {
            // Receipts are a courtesy: the messages themselves still reach every device.
            logger.debug("delivery receipts failed", metadata: ["chat": "\(acknowledgement.chatID)", "error": "\(error)"])
        }
        return true
    }
}
