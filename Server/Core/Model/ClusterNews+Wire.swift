import Foundation
import CourierProtocol
internal import SwiftProtobuf

extension ClusterNews: WireMessage {
    /// Encodes as `courier.v1.ClusterNews`.
    public func serializedBytes() -> [UInt8] {
        ProtobufWire.encode(proto, schemaName: Self.schemaName)
    }

    /// Decodes a `courier.v1.ClusterNews`; requires every id and sequence.
    public init(serializedBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        let proto = try ProtobufWire.decode(Courier_V1_ClusterNews.self, bytes, schemaName: Self.schemaName)
        var chats: [Chat] = []
        for chat in proto.chats {
            let check = FieldCheck(type: "ChatNews")
            var messages: [Message] = []
            for message in chat.messages {
                messages.append(Message(sequence: try FieldCheck(type: "NewsMessage").id(message.sequence, "sequence"), frame: Array(message.frame)))
            }
            chats.append(Chat(
                chatID: try check.id(chat.chatID, "chat_id"), sequence: try check.id(chat.sequence, "sequence"),
                members: chat.membersIncluded ? chat.members : nil, messages: messages
            ))
        }
        var acknowledgements: [Acknowledgement] = []
        for acknowledgement in proto.acknowledgements {
            let check = FieldCheck(type: "AcknowledgementNews")
            acknowledgements.append(Acknowledgement(
                chatID: try check.id(acknowledgement.chatID, "chat_id"), userID: try check.id(acknowledgement.userID, "user_id"),
                deviceID: try check.id(acknowledgement.deviceID, "device_id"), from: acknowledgement.fromSequence,
                to: try check.id(acknowledgement.toSequence, "to_sequence")
            ))
        }
        for user in proto.presenceChanged { _ = try FieldCheck(type: "ClusterNews").id(user, "presence_changed") }
        self.init(chats: chats, acknowledgements: acknowledgements, presenceChanged: proto.presenceChanged)
    }

    private static let schemaName = "ClusterNews"

    private var proto: Courier_V1_ClusterNews {
        .with {
            $0.chats = chats.map { chat in
                .with {
                    $0.chatID = chat.chatID
                    $0.sequence = chat.sequence
                    $0.membersIncluded = chat.members != nil
                    $0.members = chat.members ?? []
                    $0.messages = chat.messages.map { message in
                        .with {
                            $0.sequence = message.sequence
                            $0.frame = Data(message.frame)
                        }
                    }
                }
            }
            $0.acknowledgements = acknowledgements.map { acknowledgement in
                .with {
                    $0.chatID = acknowledgement.chatID
                    $0.userID = acknowledgement.userID
                    $0.deviceID = acknowledgement.deviceID
                    $0.fromSequence = acknowledgement.from
                    $0.toSequence = acknowledgement.to
                }
            }
            $0.presenceChanged = presenceChanged
        }
    }
}
