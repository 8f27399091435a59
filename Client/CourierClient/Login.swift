import CoAP
import CourierDevice
import CourierProtocol
import Foundation
import NIOCore

/// Checks a token by opening a push session: the server's Welcome names the user and device.
public enum Login {
    /// A store for a session that only wants the Welcome.
    private struct NothingHeld: PushStore {
        func cursors() async throws -> [ChatCursor] { [] }
        func store(_ messages: [ChatMessage]) async throws {}
        func delivered(_ receipt: DeliveryReceipt) async {}
    }

    /// Redeems a one-time invite code (`courier-server invite`) over CoAP: the server creates
    /// the device `deviceName` for the invite's user and answers its token.
    public static func redeem(host: String, coapPort: Int, secure: SecureTransport? = nil, code: String, deviceName: String) async throws -> SignedIn {
        let (endpoint, server): (CoAPEndpoint, SocketAddress)
        do {
            (endpoint, server) = try await ClientEngine.endpoint(toward: host, port: coapPort, secure: secure)
        } catch {
            throw ClientError("cannot reach \(host): \(error)")
        }
        defer { Task { await endpoint.close() } }
        let request = CoAPMessage.request(.post, path: "/v1/login", payload: RedeemInvite(code: code, deviceName: deviceName).serializedBytes(), contentFormat: CoAPContentFormat.protobuf)
        let response: CoAPMessage
        do {
            response = try await endpoint.request(request, to: server)
        } catch {
            throw ClientError("server unreachable (\(host):\(coapPort)): \(error)")
        }
        switch response.code {
        case .created:
            return try SignedIn(serializedBytes: response.payload)
        case .unauthorized:
            throw ClientError("the invite code was refused: unknown, already used or expired; ask for a new one")
        case .conflict:
            throw ClientError("you already have a device named '\(deviceName)': choose another with --device")
        case .tooManyRequests:
            throw ClientError("too many tries from this address: wait \(response.uintOption(.maxAge) ?? 60) s")
        default:
            let reason = (try? WireError(serializedBytes: response.payload))?.message ?? "refused"
            throw ClientError("the server answered \(response.code): \(reason)")
        }
    }

    public static func verify(host: String, coapPort: Int, pushPort: Int, token: String, secure: SecureTransport? = nil, timeout: Duration = .seconds(10)) async throws -> ClientSettings {
        var configuration = try PushClient.Configuration(host, pushPort, token: token, secure: secure)
        configuration.clientName = "courier/1.0 login"
        let client = PushClient(configuration: configuration, store: NothingHeld())
        let session = Task { await client.run() }
        defer { session.cancel(); client.dropSession() }
        let watchdog = Task {
            try await Task.sleep(for: timeout)
            session.cancel()
            client.dropSession()
        }
        defer { watchdog.cancel() }
        var lastProblem = "no answer"
        for await event in client.events {
            switch event {
            case .connected(let welcome):
                return ClientSettings(host: host, coapPort: coapPort, pushPort: pushPort, token: token, userID: welcome.userID, deviceID: welcome.deviceID, secure: secure)
            case .refused(let reason):
                throw ClientError("the server refused this token (\(reason))")
            case .disconnected(let reason, _):
                lastProblem = reason
                if Task.isCancelled || watchdog.isCancelled { break }
            case .connecting:
                continue
            }
            if session.isCancelled { break }
        }
        throw ClientError("no session with \(host):\(pushPort) within \(timeout): \(lastProblem)")
    }
}
