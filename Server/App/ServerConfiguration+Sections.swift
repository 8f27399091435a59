import CoAP
import CourierActors
import CourierCore
import CourierGateway
import CourierIngest
import CourierLog
import CourierPush
import DTLS
import Logging

/// The file's flat settings as each module's own configuration: a module owns its section's
/// type and defaults; this is the one place that maps the file onto them.
extension ServerConfiguration {
    /// The gateway's ports: clear text unless `requireSecure`, and DTLS when configured, whose
    /// PSK identities find their keys in `storage`. Throws when a certificate or key cannot
    /// be used (a clear error at start, not a failed handshake later).
    func gateway(storage: any ServerStorage, dtls statistics: DTLSStatistics, logger: Logger) throws -> GatewayService.Configuration {
        var endpoint = CoAPEndpoint.Configuration()
        endpoint.transmission.deduplicationCapacity = coapDedupCapacity
        var gateway = GatewayService.Configuration(host: coapHost, port: coapPort, channels: coapChannels, maxConcurrentRequests: maxConcurrentRequests, endpoint: endpoint)
        gateway.clearText = !requireSecure
        if servesDTLS {
            let credentials = DTLSContext.Credentials(psk: dtlsPsk, certificateChainFile: tlsCertificate, privateKeyFile: tlsKey, trustedCAFile: tlsClientCa)
            let context: DTLSContext
            do {
                context = try DTLSContext(role: .server, credentials: credentials)
            } catch {
                throw ConfigurationError("DTLS: \(error)")
            }
            var dtls = DTLSServerConfiguration(context: context, keys: dtlsPsk ? PSKKeyCache(source: StoredDeviceKeys(storage: storage), lifetime: .seconds(max(tokenCacheSeconds, 1))) : nil)
            dtls.maxAssociations = maxDtlsAssociations
            dtls.idleTimeout = .seconds(Int64(dtlsIdleSeconds))
            dtls.statistics = statistics
            dtls.logger = logger
            gateway.secure = (coapsPort, DTLSServerSecurity(dtls))
        }
        return gateway
    }

    var consumers: ChatConsumers.Configuration {
        var consumers = ChatConsumers.Configuration()
        consumers.storeLinger = .milliseconds(storeLingerMs)
        return consumers
    }

    var gatewayResources: GatewayResources.Configuration {
        var resources = GatewayResources.Configuration()
        resources.deviceRatePerSecond = Double(deviceRatePerSecond)
        resources.deviceBurst = deviceBurst
        return resources
    }

    var push: PushService.Configuration {
        var push = PushService.Configuration()
        push.host = pushHost
        push.port = pushPort
        push.allowedOrigins = Set(allowedOrigins)
        push.heartbeatInterval = .seconds(heartbeatSeconds)
        push.maxFrameBytes = maxFrameBytes
        push.maxSessions = maxPushSessions
        push.maxStrangers = maxPushStrangers
        push.helloTimeout = .seconds(helloSeconds)
        push.maxOutboundBytes = maxOutboundBytes
        push.slowReaderTimeout = .seconds(slowReaderSeconds)
        if let tlsCertificate, let tlsKey { push.tls = (pushTlsPort, tlsCertificate, tlsKey) }
        push.clearText = !requireSecure
        return push
    }

    var log: EmbeddedLog.Configuration {
        var log = EmbeddedLog.Configuration()
        log.partitionCount = partitions
        log.partition.maxQueuedAppends = maxQueuedAppends
        return log
    }

    /// What every Device is given: its storage, its window and timeout, metrics and logging.
    func deviceContext(storage: any ServerStorage, metrics: ServerMetrics, logger: Logger) -> DeviceEntity.Context {
        var context = DeviceEntity.Context(storage: storage)
        context.maxUnackedPerChat = UInt64(maxUnackedPerChat)
        context.ackTimeout = .seconds(ackTimeoutSeconds)
        context.metrics = metrics
        context.logger = logger
        return context
    }

    var shardRegions: ShardRegionConfiguration {
        var regions = ShardRegionConfiguration()
        regions.idleTimeout = .seconds(entityIdleSeconds)
        regions.maxEntitiesPerShard = maxEntitiesPerShard
        return regions
    }
}

/// Device keys from the server's store, for DTLS handshakes with a pre-shared key.
struct StoredDeviceKeys: PSKKeySource {
    let storage: any ServerStorage

    func key(forIdentity identity: String) async throws -> [UInt8]? {
        try await storage.deviceKey(identity: identity)?.key
    }
}
