import Synchronization

/// What the DTLS layer of an endpoint did, across its channels; read by the server's metrics.
public final class DTLSStatistics: Sendable {
    /// Associations held now (handshaking or established).
    public let associations = Atomic<Int>(0)
    /// Of those, handshakes not finished yet.
    public let handshaking = Atomic<Int>(0)
    public let handshakesCompleted = Atomic<Int>(0)
    /// Handshakes that ended in an alert or an error (a wrong key, a refused certificate...).
    public let handshakesFailed = Atomic<Int>(0)
    /// HelloVerifyRequests sent: ClientHellos answered without keeping anything.
    public let helloVerifyRequests = Atomic<Int>(0)
    /// Datagrams dropped before OpenSSL saw them: not a ClientHello from an unknown peer, too
    /// short to be one, or a ClientHello while every handshake place was taken.
    public let droppedDatagrams = Atomic<Int>(0)
    /// Associations closed to make room for a new one (the least recently active).
    public let evicted = Atomic<Int>(0)
    /// Associations closed after `idleTimeout` without a datagram, or a handshake that did not
    /// finish within `handshakeTimeout`.
    public let expired = Atomic<Int>(0)

    /// Finished handshakes by the suite they negotiated (OpenSSL's names); a handful of names.
    private let suites = Mutex<[String: Int]>([:])

    public init() {}

    func negotiated(_ suite: String) {
        suites.withLock { $0[suite, default: 0] += 1 }
    }

    /// Finished handshakes by suite, e.g. ["PSK-AES128-CCM8": 12].
    public var negotiatedSuites: [String: Int] { suites.withLock { $0 } }

    /// Every figure by its metric name (`courier_dtls_` + name).
    public var snapshot: [String: Int] {
        [
            "associations": associations.load(ordering: .relaxed), "handshaking": handshaking.load(ordering: .relaxed),
            "handshakes_completed": handshakesCompleted.load(ordering: .relaxed), "handshakes_failed": handshakesFailed.load(ordering: .relaxed),
            "hello_verify_requests": helloVerifyRequests.load(ordering: .relaxed), "dropped_datagrams": droppedDatagrams.load(ordering: .relaxed),
            "evicted": evicted.load(ordering: .relaxed), "expired": expired.load(ordering: .relaxed),
        ]
    }
}
