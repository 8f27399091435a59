import CourierProtocol
import Logging

/// Routes acknowledgements to the chats' receipt bookkeeping (in each Chat actor) and the
/// receipts that completes to the senders' live devices.
package final class DeliveryReceipts: Sendable {
    let chats: ShardRegion<ChatEntity>
    let devices: ShardRegion<DeviceEntity>
    let logger: Logger

    package init(chats: ShardRegion<ChatEntity>, devices: ShardRegion<DeviceEntity>, logger: Logger) {
        self.chats = chats
        self.devices = devices
        self.logger = logger
    }

    package func acknowledged(_ advances: [CursorAdvance], userID: UInt64, deviceID: UInt64) async {
        for advance in advances {
            do {
                let due = try await chats.withEntity(advance.chatID) {
                    try await $0.acknowledged(userID: userID, deviceID: deviceID, from: advance.from, to: advance.to)
                }
                for receipts in due {
                    for senderDevice in receipts.deviceIDs {
                        _ = try? await devices.withLiveEntity(senderDevice) { $0.deliverReceipts(receipts.receipts) }
                    }
                }
            } catch {
                // Receipts are a courtesy: the messages themselves still reach every device.
                logger.debug("delivery receipts failed", metadata: ["chat": "\(advance.chatID)", "error": "\(error)"])
            }
        }
    }
}
