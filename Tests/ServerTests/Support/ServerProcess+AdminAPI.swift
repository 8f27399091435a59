import Foundation
import TestSupport

extension ServerProcess {
    /// The admin API's token, as the server wrote it at start.
    func adminToken() throws -> String {
        try String(contentsOfFile: "\(dataDirectory)/admin.token", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// POST to the operations listener (with curl): status code and body.
    func httpPost(_ path: String, body: Data, bearer token: String?) async throws -> (status: Int, body: Data) {
        let curl = try ExternalProgram.locate("curl", hint: "apt-get install curl (scripts/install-deps)")
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("courier-post-\(UUID().uuidString).json")
        try body.write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        var arguments = ["-s", "--max-time", "120", "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", "@\(file.path)", "-w", "\n%{http_code}"]
        if let token { arguments += ["-H", "Authorization: Bearer \(token)"] }
        let output = try await ExternalProgram.run(curl, arguments + ["http://127.0.0.1:\(httpPort)\(path)"], timeout: 130)
        guard let newline = output.stdout.lastIndex(of: UInt8(ascii: "\n")) else { throw ServerTestError("curl printed no status: \(output.stderr)") }
        let status = Int(String(decoding: output.stdout[(newline + 1)...], as: UTF8.self)) ?? 0
        return (status, output.stdout[..<newline])
    }

    /// POST /admin/v1/provision with the admin token (or `token`); status and JSON object.
    func provision(_ request: [String: Any], token: String? = nil) async throws -> (status: Int, json: [String: Any]) {
        let response = try await httpPost("/admin/v1/provision", body: try JSONSerialization.data(withJSONObject: request), bearer: token ?? adminToken())
        guard let object = try? JSONSerialization.jsonObject(with: response.body) as? [String: Any] else {
            throw ServerTestError("HTTP \(response.status), not a JSON object: \(String(decoding: response.body.prefix(500), as: UTF8.self))")
        }
        return (response.status, object)
    }
}
