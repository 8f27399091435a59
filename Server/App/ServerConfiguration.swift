import CourierCore
import CourierPostgres
import Foundation

/// Everything `courier-server serve` can be told. Defaults run the embedded server with no
/// flags; a JSON file (`--config`) sets any of these by name, environment variables
/// (`COURIER_` + the name in upper snake case, e.g. COURIER_COAP_PORT) override the file, and
/// flags override both.
public struct ServerConfiguration: Codable, Sendable, Equatable {
    /// Where the log segments and the SQLite database live.
    public var dataDirectory = "courier-data"
    public var coapHost = "0.0.0.0"
    public var coapPort = 5683
    /// UDP sockets on the CoAP port (SO_REUSEPORT), each on its own event loop.
    public var coapChannels = 2
    /// The operations listener: /health, /ready, /metrics.
    public var httpHost = "127.0.0.1"
    public var httpPort = 8081
    /// The push WebSocket listener (`/v1/push`).
    public var pushHost = "0.0.0.0"
    public var pushPort = 8080
    /// Origins allowed to open a push session (browsers send one); devices send none.
    public var allowedOrigins: [String] = []
    /// Devices heartbeat at this interval; a session silent for three is closed.
    public var heartbeatSeconds = 30
    /// Largest WebSocket message a device may send; larger closes the session.
    public var maxFrameBytes = 64 * 1024
    /// Open push sessions; one more is closed at once with 1013 (try again later).
    public var maxPushSessions = 50_000
    /// Push connections not yet authenticated (before the upgrade or Hello); at the bound the
    /// oldest of the source address holding the most is closed. Much smaller than
    /// `maxPushSessions`, so strangers cannot fill it.
    public var maxPushStrangers = 1_000
    /// A push connection that has not shown a valid token (Hello) this long after it was
    /// accepted is closed.
    public var helloSeconds = 10
    /// A push left unacknowledged this long is sent again.
    public var ackTimeoutSeconds = 10
    /// A push session whose outbound frames have not moved for this long is closed.
    public var slowReaderSeconds = 10
    /// Bytes queued for one push session's writer; pushes wait beyond it.
    public var maxOutboundBytes = 256 * 1024
    /// Pushes of one chat awaiting a device's acknowledgement; more wait for acks.
    public var maxUnackedPerChat = 1_000
    /// This node's part of every message id (0-1023): unique per node of a cluster.
    public var nodeID = 0
    public var logLevel = "info"
    /// A store transaction of the embedded database starts no sooner than this after the one
    /// before it started, so the consumers' batches that come within it share it (time-window
    /// batching); 0 writes each at once. See `ChatStoreWriter`.
    public var storeLingerMs = 5
    /// Log partitions; fixed once a data directory has been created (another count is refused
    /// at start: see `PartitionLayout`). Unset: what the data directory has, 4 for a new one.
    public var partitions: Int?
    /// Appends waiting per partition; beyond it sends get 5.03.
    public var maxQueuedAppends = 65_536
    /// Messages acknowledged but not yet stored by their chat; beyond it sends get 5.03.
    public var maxPendingMessages = 100_000
    /// Requests being handled at once per CoAP socket; beyond it they get 5.03.
    public var maxConcurrentRequests = 1_024
    /// (peer, Message ID) pairs each CoAP socket remembers for duplicate detection; at the
    /// bound the oldest is forgotten (a flood of new endpoints cannot grow it).
    public var coapDedupCapacity = 100_000
    public var maxTextBytes = 8 * 1024
    /// Requests per second one device may make on average, and in a burst; beyond, 4.29.
    public var deviceRatePerSecond = 50
    public var deviceBurst = 100
    /// Seconds an idle User, Device or Chat actor stays loaded.
    public var entityIdleSeconds = 120
    /// Live actors per shard (64 shards per kind).
    public var maxEntitiesPerShard = 4_096
    /// How long a token check is cached: a revocation takes effect within this time.
    public var tokenCacheSeconds = 5
    /// Log segments older than this and consumed by every group are deleted.
    public var retentionHours = 168
    /// Test setting: skip fdatasync in the log, so benchmarks can show what durability costs.
    /// Never for real use: an acknowledged message could be lost in a power cut.
    public var unsafeNoSync = false
    /// A cluster's PostgreSQL (postgres://USER:PASSWORD@HOST:PORT/DATABASE): set, this node is
    /// one of the cluster's and keeps nothing that matters in its data directory; nil, the
    /// embedded server (log and SQLite in the data directory).
    public var postgres: String?
    /// UDP port of CoAP over DTLS (`coaps://`), opened when `dtlsPsk` or `tlsCertificate` is set.
    public var coapsPort = 5684
    /// Devices may prove themselves with a pre-shared key (`device add --psk`) on `coapsPort`.
    public var dtlsPsk = false
    /// PEM certificate chain and key of this server, for DTLS (an ECDSA P-256 key, RFC 7925).
    public var tlsCertificate: String?
    public var tlsKey: String?
    /// PEM file of the authorities whose client certificates name devices on `coapsPort`; a
    /// certificate's common name is USER/DEVICE.
    public var tlsClientCa: String?
    /// TCP port of push over TLS (`wss://`), opened when `tlsCertificate` is set.
    public var pushTlsPort = 8443
    /// Open no clear-text port: CoAP only over DTLS, push only over TLS.
    public var requireSecure = false
    /// DTLS associations each CoAP socket keeps; at the bound a handshake under way is closed,
    /// else the least recently active device.
    public var maxDtlsAssociations = 4_096
    /// A DTLS association that carries nothing this long is closed.
    public var dtlsIdleSeconds = 600
    /// Run the server's threads under Linux's SCHED_BATCH policy: a thread that another wakes
    /// (an event loop woken by a log sync, the SQLite writer by a consumer's records) waits for
    /// the running thread to block or use up its slice instead of preempting it. Each
    /// preemption was two context switches (out, and back in later) for work that takes
    /// microseconds: about 4 of the 16 per message in `scripts/bench-cost`. The price: when
    /// every core is busy, a woken thread may wait up to one scheduler slice (a few ms).
    public var batchScheduling = true

    public init() {}

    /// Whether `coapsPort` is opened.
    public var servesDTLS: Bool { dtlsPsk || tlsCertificate != nil }

    public enum CodingKeys: String, CodingKey, CaseIterable {
        case dataDirectory, coapHost, coapPort, coapChannels, httpHost, httpPort, pushHost, pushPort, allowedOrigins
        case heartbeatSeconds, maxFrameBytes, maxPushSessions, maxPushStrangers, helloSeconds, ackTimeoutSeconds, slowReaderSeconds, maxOutboundBytes, maxUnackedPerChat, nodeID, logLevel
        case partitions, maxQueuedAppends, maxPendingMessages, maxConcurrentRequests, deviceRatePerSecond, deviceBurst, coapDedupCapacity, maxTextBytes
        case entityIdleSeconds, maxEntitiesPerShard, tokenCacheSeconds, retentionHours, unsafeNoSync, postgres
        case coapsPort, dtlsPsk, tlsCertificate, tlsKey, tlsClientCa, pushTlsPort, requireSecure, maxDtlsAssociations, dtlsIdleSeconds
        case batchScheduling, storeLingerMs
    }

    public init(from decoder: any Decoder) throws {
        // Every key is optional: a file sets only what it names.
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let defaults = ServerConfiguration()
        func value<T: Decodable>(_ key: CodingKeys, _ fallback: T) throws -> T {
            try container.decodeIfPresent(T.self, forKey: key) ?? fallback
        }
        dataDirectory = try value(.dataDirectory, defaults.dataDirectory)
        coapHost = try value(.coapHost, defaults.coapHost)
        coapPort = try value(.coapPort, defaults.coapPort)
        coapChannels = try value(.coapChannels, defaults.coapChannels)
        httpHost = try value(.httpHost, defaults.httpHost)
        httpPort = try value(.httpPort, defaults.httpPort)
        pushHost = try value(.pushHost, defaults.pushHost)
        pushPort = try value(.pushPort, defaults.pushPort)
        allowedOrigins = try value(.allowedOrigins, defaults.allowedOrigins)
        heartbeatSeconds = try value(.heartbeatSeconds, defaults.heartbeatSeconds)
        maxFrameBytes = try value(.maxFrameBytes, defaults.maxFrameBytes)
        maxPushSessions = try value(.maxPushSessions, defaults.maxPushSessions)
        maxPushStrangers = try value(.maxPushStrangers, defaults.maxPushStrangers)
        helloSeconds = try value(.helloSeconds, defaults.helloSeconds)
        ackTimeoutSeconds = try value(.ackTimeoutSeconds, defaults.ackTimeoutSeconds)
        slowReaderSeconds = try value(.slowReaderSeconds, defaults.slowReaderSeconds)
        maxOutboundBytes = try value(.maxOutboundBytes, defaults.maxOutboundBytes)
        maxUnackedPerChat = try value(.maxUnackedPerChat, defaults.maxUnackedPerChat)
        nodeID = try value(.nodeID, defaults.nodeID)
        logLevel = try value(.logLevel, defaults.logLevel)
        partitions = try container.decodeIfPresent(Int.self, forKey: .partitions)
        maxQueuedAppends = try value(.maxQueuedAppends, defaults.maxQueuedAppends)
        maxPendingMessages = try value(.maxPendingMessages, defaults.maxPendingMessages)
        maxConcurrentRequests = try value(.maxConcurrentRequests, defaults.maxConcurrentRequests)
        coapDedupCapacity = try value(.coapDedupCapacity, defaults.coapDedupCapacity)
        maxTextBytes = try value(.maxTextBytes, defaults.maxTextBytes)
        deviceRatePerSecond = try value(.deviceRatePerSecond, defaults.deviceRatePerSecond)
        deviceBurst = try value(.deviceBurst, defaults.deviceBurst)
        entityIdleSeconds = try value(.entityIdleSeconds, defaults.entityIdleSeconds)
        maxEntitiesPerShard = try value(.maxEntitiesPerShard, defaults.maxEntitiesPerShard)
        tokenCacheSeconds = try value(.tokenCacheSeconds, defaults.tokenCacheSeconds)
        retentionHours = try value(.retentionHours, defaults.retentionHours)
        unsafeNoSync = try value(.unsafeNoSync, defaults.unsafeNoSync)
        postgres = try container.decodeIfPresent(String.self, forKey: .postgres)
        coapsPort = try value(.coapsPort, defaults.coapsPort)
        dtlsPsk = try value(.dtlsPsk, defaults.dtlsPsk)
        tlsCertificate = try container.decodeIfPresent(String.self, forKey: .tlsCertificate)
        tlsKey = try container.decodeIfPresent(String.self, forKey: .tlsKey)
        tlsClientCa = try container.decodeIfPresent(String.self, forKey: .tlsClientCa)
        pushTlsPort = try value(.pushTlsPort, defaults.pushTlsPort)
        requireSecure = try value(.requireSecure, defaults.requireSecure)
        maxDtlsAssociations = try value(.maxDtlsAssociations, defaults.maxDtlsAssociations)
        dtlsIdleSeconds = try value(.dtlsIdleSeconds, defaults.dtlsIdleSeconds)
        batchScheduling = try value(.batchScheduling, defaults.batchScheduling)
        storeLingerMs = try value(.storeLingerMs, defaults.storeLingerMs)
    }

    /// Reads a JSON configuration file; unknown keys are an error (a typo must not pass silently).
    public static func load(file path: String) throws -> ServerConfiguration {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let object = try JSONSerialization.jsonObject(with: data)
        guard let keys = (object as? [String: Any])?.keys else { throw ConfigurationError("\(path): expected a JSON object") }
        let known = Set(CodingKeys.allCases.map(\.rawValue))
        if let unknown = keys.first(where: { !known.contains($0) }) {
            throw ConfigurationError("\(path): unknown setting '\(unknown)'; known: \(known.sorted().joined(separator: ", "))")
        }
        do {
            return try JSONDecoder().decode(ServerConfiguration.self, from: data)
        } catch {
            throw ConfigurationError("\(path): \(error)")
        }
    }

    /// Applies `COURIER_*` variables from `environment`.
    public mutating func apply(environment: [String: String]) throws {
        for key in CodingKeys.allCases {
            let name = "COURIER_" + key.rawValue.replacingOccurrences(of: "([a-z])([A-Z])", with: "$1_$2", options: .regularExpression).uppercased()
            guard let text = environment[name] else { continue }
            func int() throws -> Int {
                guard let value = Int(text) else { throw ConfigurationError("\(name)=\(text): expected a whole number") }
                return value
            }
            func flag() throws -> Bool {
                guard let value = Bool(text) else { throw ConfigurationError("\(name)=\(text): expected true or false") }
                return value
            }
            switch key {
            case .dataDirectory: dataDirectory = text
            case .coapHost: coapHost = text
            case .coapPort: coapPort = try int()
            case .coapChannels: coapChannels = try int()
            case .httpHost: httpHost = text
            case .httpPort: httpPort = try int()
            case .pushHost: pushHost = text
            case .pushPort: pushPort = try int()
            case .allowedOrigins: allowedOrigins = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            case .heartbeatSeconds: heartbeatSeconds = try int()
            case .maxFrameBytes: maxFrameBytes = try int()
            case .maxPushSessions: maxPushSessions = try int()
            case .maxPushStrangers: maxPushStrangers = try int()
            case .helloSeconds: helloSeconds = try int()
            case .ackTimeoutSeconds: ackTimeoutSeconds = try int()
            case .slowReaderSeconds: slowReaderSeconds = try int()
            case .maxOutboundBytes: maxOutboundBytes = try int()
            case .maxUnackedPerChat: maxUnackedPerChat = try int()
            case .nodeID: nodeID = try int()
            case .logLevel: logLevel = text
            case .partitions: partitions = try int()
            case .maxQueuedAppends: maxQueuedAppends = try int()
            case .maxPendingMessages: maxPendingMessages = try int()
            case .maxConcurrentRequests: maxConcurrentRequests = try int()
            case .coapDedupCapacity: coapDedupCapacity = try int()
            case .maxTextBytes: maxTextBytes = try int()
            case .deviceRatePerSecond: deviceRatePerSecond = try int()
            case .deviceBurst: deviceBurst = try int()
            case .entityIdleSeconds: entityIdleSeconds = try int()
            case .maxEntitiesPerShard: maxEntitiesPerShard = try int()
            case .tokenCacheSeconds: tokenCacheSeconds = try int()
            case .retentionHours: retentionHours = try int()
            case .unsafeNoSync: unsafeNoSync = try flag()
            case .postgres: postgres = text.isEmpty ? nil : text
            case .coapsPort: coapsPort = try int()
            case .dtlsPsk: dtlsPsk = try flag()
            case .tlsCertificate: tlsCertificate = text.isEmpty ? nil : text
            case .tlsKey: tlsKey = text.isEmpty ? nil : text
            case .tlsClientCa: tlsClientCa = text.isEmpty ? nil : text
            case .pushTlsPort: pushTlsPort = try int()
            case .requireSecure: requireSecure = try flag()
            case .maxDtlsAssociations: maxDtlsAssociations = try int()
            case .dtlsIdleSeconds: dtlsIdleSeconds = try int()
            case .batchScheduling: batchScheduling = try flag()
            case .storeLingerMs: storeLingerMs = try int()
            }
        }
    }

    /// Every setting in range, or a clear error naming the first that is not.
    public func validate() throws {
        func check(_ condition: Bool, _ message: String) throws { if !condition { throw ConfigurationError(message) } }
        try check(!dataDirectory.isEmpty, "dataDirectory must not be empty")
        try check((0...65_535).contains(coapPort), "coapPort must be 0-65535")
        try check((0...65_535).contains(httpPort), "httpPort must be 0-65535")
        try check((0...65_535).contains(pushPort), "pushPort must be 0-65535")
        try check((1...3600).contains(heartbeatSeconds), "heartbeatSeconds must be 1-3600")
        try check((1024...16 * 1024 * 1024).contains(maxFrameBytes), "maxFrameBytes must be 1 KiB-16 MiB")
        try check(maxPushSessions >= 1, "maxPushSessions must be at least 1")
        try check(maxPushStrangers >= 1, "maxPushStrangers must be at least 1")
        try check((1...300).contains(helloSeconds), "helloSeconds must be 1-300")
        try check((1...3600).contains(ackTimeoutSeconds), "ackTimeoutSeconds must be 1-3600")
        try check((1...3600).contains(slowReaderSeconds), "slowReaderSeconds must be 1-3600")
        try check((16 * 1024...64 * 1024 * 1024).contains(maxOutboundBytes), "maxOutboundBytes must be 16 KiB-64 MiB")
        try check((1...1_000_000).contains(maxUnackedPerChat), "maxUnackedPerChat must be 1-1000000")
        try check((1...64).contains(coapChannels), "coapChannels must be 1-64")
        try check((0...MessageIDGenerator.maxNodeID).contains(nodeID), "nodeID must be 0-\(MessageIDGenerator.maxNodeID)")
        try check(["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(logLevel), "logLevel must be trace, debug, info, notice, warning, error or critical")
        try check(partitions.map { (1...1024).contains($0) } ?? true, "partitions must be 1-1024")
        try check((0...1000).contains(storeLingerMs), "storeLingerMs must be 0-1000")
        try check(maxQueuedAppends >= 1, "maxQueuedAppends must be at least 1")
        try check(maxPendingMessages >= 1, "maxPendingMessages must be at least 1")
        try check(maxConcurrentRequests >= 1, "maxConcurrentRequests must be at least 1")
        try check((1...10_000_000).contains(coapDedupCapacity), "coapDedupCapacity must be 1-10000000")
        try check((1...60_000).contains(maxTextBytes), "maxTextBytes must be 1-60000")
        try check((1...1_000_000).contains(deviceRatePerSecond), "deviceRatePerSecond must be 1-1000000")
        try check((1...1_000_000).contains(deviceBurst), "deviceBurst must be 1-1000000")
        try check(entityIdleSeconds >= 1, "entityIdleSeconds must be at least 1")
        try check(maxEntitiesPerShard >= 1, "maxEntitiesPerShard must be at least 1")
        try check(tokenCacheSeconds >= 0, "tokenCacheSeconds must not be negative")
        try check(retentionHours >= 1, "retentionHours must be at least 1")
        if let postgres {
            do { _ = try PostgresURL(postgres) } catch { throw ConfigurationError("postgres: \(error)") }
        }
        try check((0...65_535).contains(coapsPort), "coapsPort must be 0-65535")
        try check((tlsCertificate == nil) == (tlsKey == nil), "tlsCertificate and tlsKey go together")
        try check(tlsClientCa == nil || tlsCertificate != nil, "tlsClientCa needs tlsCertificate and tlsKey (clients check the server first)")
        try check((0...65_535).contains(pushTlsPort), "pushTlsPort must be 0-65535")
        try check(!requireSecure || tlsCertificate != nil, "requireSecure needs tlsCertificate and tlsKey (push is then served only over TLS)")
        try check(maxDtlsAssociations >= 1, "maxDtlsAssociations must be at least 1")
        try check((1...86_400).contains(dtlsIdleSeconds), "dtlsIdleSeconds must be 1-86400")
        for (setting, path) in [("tlsCertificate", tlsCertificate), ("tlsKey", tlsKey), ("tlsClientCa", tlsClientCa)] {
            if let path { try check(FileManager.default.isReadableFile(atPath: path), "\(setting): cannot read \(path)") }
        }
    }
}
