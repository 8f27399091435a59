import CourierDevice
import CourierProtocol
import Foundation

/// Checks a token by opening a push session: the server's Welcome names the user and device.
public enum Login {
    /// A store for a session that only wants the Welcome.
    private struct NothingHeld: PushStore {
        func cursors() async throws -> [ChatCursor] { [] }
        func store(_ messages: [ChatMessage]) async throws {}
        func delivered(_ receipt: DeliveryReceipt) async {}
    }

    public static func verify(host: String, coapPort: Int, pushPort: Int, token: String, timeout: Duration = .seconds(10)) async throws -> ClientSettings {
        var configuration = PushClient.Configuration(host: host, port: pushPort, token: token)
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
                return ClientSettings(host: host, coapPort: coapPort, pushPort: pushPort, token: token, userID: welcome.userID, deviceID: welcome.deviceID)
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
