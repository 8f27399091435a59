import CoAP
import CourierActors
import CourierCore
import CourierGateway
import CourierLog
import CourierPush
import Logging

/// The file's flat settings as each module's own configuration: a module owns its section's
/// type and defaults; this is the one place that maps the file onto them.
extension ServerConfiguration {
    var gateway: GatewayService.Configuration {
        var endpoint = CoAPEndpoint.Configuration()
        endpoint.transmission.deduplicationCapacity = coapDedupCapacity
        return GatewayService.Configuration(host: coapHost, port: coapPort, channels: coapChannels, maxConcurrentRequests: maxConcurrentRequests, endpoint: endpoint)
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
