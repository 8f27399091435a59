import CourierCore
@testable import CourierSQLite
import Foundation
import GRDB
import XCTest

/// The store transaction keeps each chat's members and last sequence between batches
/// (`ChatStates`): every change of them, by this storage or by another process, counts at the
/// next batch, and a kept sequence that is wrong anyway cannot number a message twice. Its
/// BEGIN and COMMIT are prepared once (`inPreparedTransaction`).
extension SQLiteStorageTests {
    func testAPreparedTransactionCommitsOrRollsBackWholeAndBeginsAgain() throws {
        struct Refused: Error {}
        let queue = try DatabaseQueue(path: "\(directory!)/plain.sqlite3")
        try queue.writeWithoutTransaction { db in
            try db.execute(sql: "CREATE TABLE t (x INTEGER UNIQUE)")
            try db.inPreparedTransaction { try db.execute(sql: "INSERT INTO t VALUES (1)") }
            XCTAssertThrowsError(try db.inPreparedTransaction {
                try db.execute(sql: "INSERT INTO t VALUES (2)")
                throw Refused()
            }) { XCTAssertTrue($0 is Refused, "the body's error goes on") }
            XCTAssertThrowsError(try db.inPreparedTransaction {
                try db.execute(sql: "INSERT INTO t VALUES (3)")
                try db.execute(sql: "INSERT INTO t VALUES (1)")
            }) { XCTAssertEqual(($0 as? DatabaseError)?.resultCode, .SQLITE_CONSTRAINT) }
            XCTAssertFalse(db.isInsideTransaction)
            let kept = try db.inPreparedTransaction { try Int.fetchAll(db, sql: "SELECT x FROM t ORDER BY x") }
            XCTAssertEqual(kept, [1], "only the committed transaction's row stays")
        }
    }

    func testAPreparedTransactionWhoseCommitFailsOrThatSQLiteEndedIsRolledBackAndSaysSo() throws {
        let queue = try DatabaseQueue(path: "\(directory!)/plain.sqlite3")
        try queue.writeWithoutTransaction { db in
            try db.execute(sql: """
                CREATE TABLE parent (id INTEGER PRIMARY KEY);
                CREATE TABLE child (parent_id INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);
                """)
            // A deferred foreign key fails the COMMIT itself, which leaves the transaction open.
            XCTAssertThrowsError(try db.inPreparedTransaction { try db.execute(sql: "INSERT INTO child VALUES (7)") }) {
                XCTAssertEqual(($0 as? DatabaseError)?.resultCode, .SQLITE_CONSTRAINT)
            }
            XCTAssertFalse(db.isInsideTransaction, "rolled back")
            XCTAssertThrowsError(try db.inPreparedTransaction {
                try db.execute(sql: "INSERT INTO parent VALUES (1)")
                try db.execute(sql: "ROLLBACK")
            }) { XCTAssertEqual(($0 as? DatabaseError)?.resultCode, .SQLITE_ABORT, "a transaction that is gone is not committed as if whole") }
            XCTAssertEqual(try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM child"), 0)
            XCTAssertEqual(try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM parent"), 0)
        }
    }

    private func send(_ device: Device, _ chat: Chat, id: UInt64) async throws -> String {
        let message = StoredMessage(serverMessageID: id, chatID: chat.id, sequence: 0, senderUserID: device.userID, senderDeviceID: device.id,
                                    clientMessageID: "m\(id)", text: "text \(id)", clientSentAtMilliseconds: 1, acceptedAtMilliseconds: 2)
        let result = try await storage.storeBatch([ChatWrite(chatID: chat.id, messages: [message], unseenKeys: [id])])[0]
        switch result {
        case .written(let outcomes, _, _):
            switch outcomes.first {
            case .stored(let stored)??: return "#\(stored.sequence)"
            case nil?: return "not a member"
            default: return "\(outcomes)"
            }
        default:
            return "\(result)"
        }
    }

    private func accounts() async throws -> (ann: Device, bob: Device, chat: Chat) {
        let ann = try await storage.createUser(name: "ann")
        let bob = try await storage.createUser(name: "bob")
        let annDevice = try await storage.createDevice(userID: ann.id, name: "phone")
        let bobDevice = try await storage.createDevice(userID: bob.id, name: "phone")
        let chat = try await storage.createChat(name: "pair", memberIDs: [ann.id, bob.id])
        return (annDevice, bobDevice, chat)
    }

    func testAStoredBatchKeepsItsChatsStateAndMembersChangedHereCountAtTheNextBatch() async throws {
        let (ann, bob, chat) = try await accounts()
        let first = try await send(bob, chat, id: 1)
        XCTAssertEqual(first, "#1")
        XCTAssertEqual(storage.chatStates.state(of: chat.id)?.lastSequence, 1, "the committed batch left the chat's state")
        XCTAssertEqual(storage.chatStates.state(of: chat.id)?.members, [ann.userID, bob.userID])

        _ = try await storage.removeMember(chatID: chat.id, userID: bob.userID)
        let afterLeaving = try await send(bob, chat, id: 2)
        XCTAssertEqual(afterLeaving, "not a member")
        try await storage.addMember(chatID: chat.id, userID: bob.userID)
        let afterJoining = try await send(bob, chat, id: 3)
        XCTAssertEqual(afterJoining, "#2")
        let annSends = try await send(ann, chat, id: 4)
        XCTAssertEqual(annSends, "#3")
    }

    func testAMemberAProvisionAddsToAKeptChatCountsAtTheNextBatch() async throws {
        let (ann, bob, chat) = try await accounts()
        let first = try await send(bob, chat, id: 1)
        XCTAssertEqual(first, "#1")
        let plan = ProvisionPlan(users: [.init(name: "ann", deviceNames: []), .init(name: "cy", deviceNames: ["phone"])],
                                 chats: [.init(name: "pair", memberIndexes: [0, 1])], tokenExpiresAt: nil)
        let provisioned = try await storage.provision(plan)
        XCTAssertEqual(provisioned.chats.first?.addedUserIDs, [provisioned.users[1].id])
        let cyDevices = try await storage.devices(ofUser: provisioned.users[1].id)
        let cy = try XCTUnwrap(cyDevices.first)
        let cySends = try await send(cy, chat, id: 2)
        XCTAssertEqual(cySends, "#2", "the new member's send is stored")
        XCTAssertEqual(storage.chatStates.state(of: chat.id)?.members, [ann.userID, bob.userID, cy.userID])
    }

    func testMembersChangedByAnotherProcessCountAtTheNextBatch() async throws {
        let (_, bob, chat) = try await accounts()
        let first = try await send(bob, chat, id: 1)
        XCTAssertEqual(first, "#1")
        // Another connection is what an admin command in another process is to SQLite.
        let other = try DatabaseQueue(path: path)
        try await other.write { db in
            try db.execute(sql: "DELETE FROM members WHERE chat_id = ? AND user_id = ?", arguments: [Int64(chat.id), Int64(bob.userID)])
        }
        let afterLeaving = try await send(bob, chat, id: 2)
        XCTAssertEqual(afterLeaving, "not a member")
        try await other.write { db in
            try db.execute(sql: "INSERT INTO members (chat_id, user_id, joined_at_ms) VALUES (?, ?, 0)", arguments: [Int64(chat.id), Int64(bob.userID)])
        }
        let afterJoining = try await send(bob, chat, id: 3)
        XCTAssertEqual(afterJoining, "#2")
    }

    func testAWrongKeptSequenceIsCaughtByTheDatabaseAndTheBatchWrittenFromIt() async throws {
        let (ann, bob, chat) = try await accounts()
        _ = try await send(ann, chat, id: 1)
        _ = try await send(bob, chat, id: 2)
        storage.chatStates.merge([chat.id: ChatStates.State(members: [ann.userID, bob.userID], lastSequence: 0)])
        let third = try await send(ann, chat, id: 3)
        XCTAssertEqual(third, "#3", "numbered from the database, not from the wrong state")
        let history = try await storage.history(chatID: chat.id, afterSequence: 0, limit: 10).map(\.serverMessageID)
        XCTAssertEqual(history, [1, 2, 3])
        XCTAssertNil(storage.chatStates.state(of: chat.id), "the batch written again forgot the chat")
        let fourth = try await send(bob, chat, id: 4)
        XCTAssertEqual(fourth, "#4")
        XCTAssertEqual(storage.chatStates.state(of: chat.id)?.lastSequence, 4)
    }

    func testAtItsCapacityTheKeptStatesStartOver() {
        let states = ChatStates(capacity: 3)
        states.merge([1: .init(members: [1], lastSequence: 1), 2: .init(members: [1], lastSequence: 1)])
        XCTAssertEqual(states.count, 2)
        states.merge([3: .init(members: [1], lastSequence: 1), 4: .init(members: [1], lastSequence: 1)])
        XCTAssertEqual(states.count, 2, "over capacity: what was kept is dropped, the new states stay")
        XCTAssertNil(states.state(of: 1))
        XCTAssertEqual(states.state(of: 4)?.lastSequence, 1)
    }
}
