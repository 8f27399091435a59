import GRDB

extension SQLiteStorage {
    /// Versioned migrations: each runs once, in order, recorded in the database. Never edit
    /// one that has shipped; add the next.
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: accounts, chats, messages, search, cursors") { db in
            try db.execute(sql: """
                CREATE TABLE users (
                    id INTEGER PRIMARY KEY,
                    name TEXT NOT NULL UNIQUE,
                    created_at_ms INTEGER NOT NULL
                );
                CREATE TABLE devices (
                    id INTEGER PRIMARY KEY,
                    user_id INTEGER NOT NULL REFERENCES users(id),
                    name TEXT NOT NULL,
                    created_at_ms INTEGER NOT NULL,
                    UNIQUE (user_id, name)
                );
                CREATE TABLE tokens (
                    hash BLOB PRIMARY KEY,
                    device_id INTEGER NOT NULL REFERENCES devices(id),
                    created_at_ms INTEGER NOT NULL,
                    expires_at_ms INTEGER,
                    revoked_at_ms INTEGER
                );
                CREATE INDEX tokens_by_device ON tokens(device_id);
                CREATE TABLE chats (
                    id INTEGER PRIMARY KEY,
                    name TEXT NOT NULL UNIQUE,
                    created_at_ms INTEGER NOT NULL,
                    last_sequence INTEGER NOT NULL DEFAULT 0
                );
                CREATE TABLE members (
                    chat_id INTEGER NOT NULL REFERENCES chats(id),
                    user_id INTEGER NOT NULL REFERENCES users(id),
                    joined_at_ms INTEGER NOT NULL,
                    PRIMARY KEY (chat_id, user_id)
                );
                CREATE INDEX members_by_user ON members(user_id);
                CREATE TABLE messages (
                    server_message_id INTEGER PRIMARY KEY,
                    chat_id INTEGER NOT NULL REFERENCES chats(id),
                    sequence INTEGER NOT NULL,
                    sender_user_id INTEGER NOT NULL,
                    sender_device_id INTEGER NOT NULL,
                    client_message_id TEXT NOT NULL,
                    text TEXT NOT NULL,
                    client_sent_at_ms INTEGER NOT NULL,
                    accepted_at_ms INTEGER NOT NULL,
                    stored_at_ms INTEGER NOT NULL,
                    UNIQUE (chat_id, sequence)
                );
                CREATE TABLE dedup_keys (
                    device_id INTEGER NOT NULL,
                    client_message_id TEXT NOT NULL,
                    server_message_id INTEGER NOT NULL REFERENCES messages(server_message_id),
                    PRIMARY KEY (device_id, client_message_id)
                );
                CREATE TABLE delivery_cursors (
                    device_id INTEGER NOT NULL REFERENCES devices(id),
                    chat_id INTEGER NOT NULL REFERENCES chats(id),
                    sequence INTEGER NOT NULL,
                    PRIMARY KEY (device_id, chat_id)
                );
                CREATE VIRTUAL TABLE message_search USING fts5(
                    text, content = 'messages', content_rowid = 'server_message_id'
                );
                CREATE TABLE durability_marks (id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL);
                INSERT INTO durability_marks (id, at_ms) VALUES (1, 0);
                """)
        }
        // Sign-in by a one-time code (`courier-server invite`): only the code's hash is kept.
        migrator.registerMigration("v2: invites") { db in
            try db.execute(sql: """
                CREATE TABLE invites (
                    hash BLOB PRIMARY KEY,
                    user_name TEXT NOT NULL,
                    created_at_ms INTEGER NOT NULL,
                    expires_at_ms INTEGER NOT NULL,
                    used_at_ms INTEGER
                );
                """)
        }
        // Changes (edit, delete, rename) are entries of a chat like messages (`kind` not 0,
        // `refers_to` the sequence they change); a changed message keeps its text as sent in
        // `sent_text`, to tell a retry of that send from a reuse of its id.
        migrator.registerMigration("v3: changes (edit, delete, rename)") { db in
            try db.execute(sql: """
                ALTER TABLE messages ADD COLUMN kind INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE messages ADD COLUMN refers_to INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE messages ADD COLUMN sent_text TEXT;
                ALTER TABLE messages ADD COLUMN edited_at_ms INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE chats ADD COLUMN title TEXT NOT NULL DEFAULT '';
                """)
        }
        // Pre-shared keys for CoAP over DTLS: kept as they are (a handshake needs the key).
        migrator.registerMigration("v4: device keys") { db in
            try db.execute(sql: """
                CREATE TABLE device_keys (
                    identity TEXT PRIMARY KEY,
                    device_id INTEGER NOT NULL REFERENCES devices(id),
                    key BLOB NOT NULL,
                    created_at_ms INTEGER NOT NULL,
                    revoked_at_ms INTEGER
                );
                CREATE INDEX device_keys_by_device ON device_keys(device_id);
                """)
        }
        migrator.registerMigration("v5: search queue") { db in
            // Messages stored and not yet in message_search (`indexQueuedForSearch`).
            try db.execute(sql: "CREATE TABLE search_queue (message_id INTEGER PRIMARY KEY)")
        }
        // The dedup keys in their primary key's own B-tree: a rowid table kept the rows in one
        // tree and the key in another, and every stored message wrote a page of each (about one
        // page in seven of a one-message store transaction).
        migrator.registerMigration("v6: dedup keys without rowid") { db in
            try db.execute(sql: """
                CREATE TABLE dedup_keys_v6 (
                    device_id INTEGER NOT NULL,
                    client_message_id TEXT NOT NULL,
                    server_message_id INTEGER NOT NULL REFERENCES messages(server_message_id),
                    PRIMARY KEY (device_id, client_message_id)
                ) WITHOUT ROWID;
                INSERT INTO dedup_keys_v6 (device_id, client_message_id, server_message_id)
                    SELECT device_id, client_message_id, server_message_id FROM dedup_keys;
                DROP TABLE dedup_keys;
                ALTER TABLE dedup_keys_v6 RENAME TO dedup_keys;
                """)
        }
        // A chat's last sequence is read from its messages (`lastSequenceSQL`), not kept in a
        // column that every store transaction rewrote.
        migrator.registerMigration("v7: last sequence from the messages") { db in
            try db.execute(sql: "ALTER TABLE chats DROP COLUMN last_sequence")
        }
        // The revoked tokens by time, for the token checker's poll (`tokensRevoked`) once a
        // second: only revoked rows, so it stays small while every device has a token.
        migrator.registerMigration("v8: revoked tokens by time") { db in
            try db.execute(sql: "CREATE INDEX tokens_revoked ON tokens(revoked_at_ms) WHERE revoked_at_ms IS NOT NULL")
        }
        return migrator
    }

    /// The migrations applied to this database, oldest first.
}
