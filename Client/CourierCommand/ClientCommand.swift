import ArgumentParser
import CoAP
import CourierClient

@main
struct ClientCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "courier",
        abstract: "Courier's terminal client.",
        subcommands: [Chat.self, Login.self, Send.self, Flush.self, Outbox.self, Tail.self, History.self, Search.self, Ping.self],
        defaultSubcommand: Chat.self
    )
}

struct Ping: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Check that a server's CoAP gateway answers (GET /v1/health).")

    @Option(help: "Server as host[:port].", transform: { text in
        guard let address = HostAndPort(parsing: text) else { throw ValidationError("--server must be host[:port], got '\(text)'") }
        return address
    })
    var server = HostAndPort(host: "127.0.0.1")

    func run() async throws {
        let address = try server.socketAddress()
        let endpoint = try await CoAPEndpoint.bind(host: "0.0.0.0", port: 0, serving: false)
        let outcome: Result<HealthProbe.Answer, CoAPClientError>
        do { outcome = .success(try await HealthProbe.probe(address, from: endpoint)) } catch { outcome = .failure(error) }
        await endpoint.close()
        switch outcome {
        case .success(let answer):
            let milliseconds = answer.roundTrip / .milliseconds(1)
            print("\(server): \(answer.code) \(answer.body) in \((milliseconds * 10).rounded() / 10) ms")
            guard answer.code.isSuccess else { throw ExitCode(1) }
        case .failure(let error):
            print("\(server): \(error)")
            throw ExitCode(1)
        }
    }
}
