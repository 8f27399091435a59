import ArgumentParser
import CoAP
import CourierCore
import CourierProtocol
import Foundation
import NIOCore

/// `courier-server bench-send`: a load generator for durable sends. Like the neutral coapbench
/// (N endpoints, one UDP socket each, NSTART 1, CON requests, next request on the answer), but
/// every request is a new message with its own client message id, so each one is a real durable
/// append; coapbench repeats one payload, which after the first is only a retry.
///
/// `--put PATH` sends the same bodies as PUTs to another CoAP server (libcoap's in-memory
/// resource) so both are measured with one generator.
struct BenchSend: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-send",
        abstract: "Load a CoAP gateway with unique durable sends (or PUTs) and report rate and latency."
    )

    @Option(help: "Gateway address.") var host = "127.0.0.1"
    @Option(help: "Gateway UDP port.") var port: Int
    @Option(help: "Device token for POST /v1/msg.") var token: String?
    @Option(help: "Chat to send into.") var chat: UInt64?
    @Option(help: "PUT to this path instead of sending messages (e.g. example_data for libcoap).") var put: String?
    @Option(help: "Concurrent endpoints, one UDP socket each.") var endpoints = 64
    @Option(help: "Seconds to run.") var seconds = 5.0
    @Option(help: "Message text bytes (the encoded SendMessage is about 30 bytes more).") var bytes = 100

    func validate() throws {
        guard put != nil || (token != nil && chat != nil) else { throw ValidationError("give --token and --chat, or --put PATH") }
        guard (1...4096).contains(endpoints) else { throw ValidationError("--endpoints must be 1-4096") }
        guard seconds > 0, seconds <= 600 else { throw ValidationError("--seconds must be in (0, 600]") }
        guard (1...8000).contains(bytes) else { throw ValidationError("--bytes must be 1-8000") }
    }

    func run() async throws {
        let peer = try SocketAddress(ipAddress: host, port: port)
        let text = String(repeating: "x", count: bytes)
        let run = UUID().uuidString.prefix(8)
        let clock = ContinuousClock()
        let deadline = clock.now + .milliseconds(Int(seconds * 1000))
        let results = try await withThrowingTaskGroup(of: (latencies: [Double], codes: [String: Int]).self) { group in
            for endpoint in 0..<endpoints {
                group.addTask { [put, token, chat] in
                    let client = try await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: false)
                    var latencies: [Double] = []
                    var codes: [String: Int] = [:]
                    var number = 0
                    while clock.now < deadline {
                        let request: CoAPMessage
                        if let put {
                            request = .request(.put, path: put, payload: Array(text.utf8))
                        } else {
                            let message = SendMessage(clientMessageID: "bench-\(run)-\(endpoint)-\(number)", chatID: chat!, text: text, clientSentAtMs: 0)
                            request = .request(.post, path: "/v1/msg", query: ["t=\(token!)"], payload: message.serializedBytes(), contentFormat: CoAPContentFormat.protobuf)
                        }
                        number += 1
                        let start = clock.now
                        do {
                            let response = try await client.request(request, to: peer)
                            latencies.append((clock.now - start) / .milliseconds(1))
                            codes["\(response.code)", default: 0] += 1
                        } catch {
                            codes["\(error)", default: 0] += 1
                        }
                    }
                    await client.close()
                    return (latencies, codes)
                }
            }
            var latencies: [Double] = []
            var codes: [String: Int] = [:]
            for try await result in group {
                latencies += result.latencies
                codes.merge(result.codes, uniquingKeysWith: +)
            }
            return (latencies.sorted(), codes)
        }
        let (latencies, codes) = results
        func percentile(_ fraction: Double) -> String {
            guard !latencies.isEmpty else { return "-" }
            return String(format: "%.2f", latencies[min(latencies.count - 1, Int(Double(latencies.count) * fraction))])
        }
        let success = codes.filter { $0.key.hasPrefix("2.") }.values.reduce(0, +)
        print("completed \(latencies.count) ok \(success) req/s \(Int(Double(success) / seconds)) p50_ms \(percentile(0.5)) p90_ms \(percentile(0.9)) p99_ms \(percentile(0.99)) max_ms \(percentile(1)) codes \(codes.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))")
    }
}
