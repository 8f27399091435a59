import CoAP
import NIOCore

/// A first fleet: many devices, each on its own UDP endpoint, probing the gateway at once.
/// It measures how the gateway answers many distinct endpoints; message traffic, pushes and
/// the delivery oracle build on it.
public struct HealthFleet: Sendable {
    public struct Report: Sendable {
        public var devices: Int
        public var answered: Int
        public var failures: [String: Int]
        /// Round trips in milliseconds, sorted.
        public var roundTrips: [Double]

        public func percentile(_ fraction: Double) -> Double? {
            guard !roundTrips.isEmpty else { return nil }
            return roundTrips[min(roundTrips.count - 1, Int((Double(roundTrips.count) * fraction).rounded(.up)) - 1)]
        }
    }

    public var devices: Int
    public var probesPerDevice: Int

    public init(devices: Int, probesPerDevice: Int) {
        self.devices = devices
        self.probesPerDevice = probesPerDevice
    }

    public func run(against server: SocketAddress) async throws -> Report {
        var endpoints: [CoAPEndpoint] = []
        for _ in 0..<devices {
            endpoints.append(try await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: false))
        }
        let probes = probesPerDevice
        let outcomes = await withTaskGroup(of: [Result<Double, CoAPClientError>].self) { group in
            for endpoint in endpoints {
                group.addTask {
                    var results: [Result<Double, CoAPClientError>] = []
                    let clock = ContinuousClock()
                    for _ in 0..<probes {
                        let start = clock.now
                        do throws(CoAPClientError) {
                            let response = try await endpoint.request(.request(.get, path: "/v1/health"), to: server)
                            let milliseconds = (clock.now - start) / .milliseconds(1)
                            results.append(response.code.isSuccess ? .success(milliseconds) : .failure(.invalidRequest("answered \(response.code)")))
                        } catch {
                            results.append(.failure(error))
                        }
                    }
                    return results
                }
            }
            var all: [Result<Double, CoAPClientError>] = []
            for await results in group { all += results }
            return all
        }
        for endpoint in endpoints { await endpoint.close() }
        var report = Report(devices: devices, answered: 0, failures: [:], roundTrips: [])
        for outcome in outcomes {
            switch outcome {
            case .success(let milliseconds):
                report.answered += 1
                report.roundTrips.append(milliseconds)
            case .failure(let error):
                report.failures["\(error)", default: 0] += 1
            }
        }
        report.roundTrips.sort()
        return report
    }
}

