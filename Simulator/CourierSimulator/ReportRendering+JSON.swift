import Foundation

extension ReportRendering {
    /// The `--json` document: the report exactly as the model has it, and beside it the one
    /// thing a script usually wants, whether the run passed.
    ///
    ///     {
    ///       "passed" : false,
    ///       "report" : {
    ///         "acknowledged" : 12034,
    ///         "send_to_ack" : { "count" : 12034, "p50" : 1.23, "p999" : 123.4, ... },
    ///         "started_at" : "2024-06-01T12:00:00.000Z",
    ///         "transport_failures" : { "timedOut" : 3 },
    ///         ...
    ///       }
    ///     }
    ///
    /// Keys are the model's property names in snake_case (the keys of `response_codes` and
    /// `transport_failures` are data and stay as they are), sorted; dates are ISO 8601 in UTC to
    /// the millisecond; a value that is not a number is written as the string `"nan"`, `"inf"`
    /// or `"-inf"`.
    struct JSONDocument: Codable {
        var passed: Bool
        var report: SimulationReport
    }

    private static let dateStyle = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
    private static let nonFinite = (positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")

    /// The report as a JSON document for tools; see `JSONDocument` for its shape.
    public static func json(_ report: SimulationReport) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(date.formatted(dateStyle))
        }
        encoder.nonConformingFloatEncodingStrategy = .convertToString(
            positiveInfinity: nonFinite.positiveInfinity, negativeInfinity: nonFinite.negativeInfinity, nan: nonFinite.nan
        )
        return try encoder.encode(JSONDocument(passed: report.verdict.passed, report: report))
    }

    /// Reads back what `json` wrote; dates may come with or without fractional seconds.
    public static func decodeJSON(_ data: Data) throws -> SimulationReport {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        decoder.dateDecodingStrategy = .custom { decoder in
            let container = try decoder.singleValueContainer()
            let text = try container.decode(String.self)
            if let date = (try? dateStyle.parse(text)) ?? (try? Date.ISO8601FormatStyle().parse(text)) {
                return date
            }
            throw DecodingError.dataCorruptedError(
                in: container, debugDescription: "Expected an ISO 8601 date, found \(text.debugDescription)"
            )
        }
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(
            positiveInfinity: nonFinite.positiveInfinity, negativeInfinity: nonFinite.negativeInfinity, nan: nonFinite.nan
        )
        return try decoder.decode(JSONDocument.self, from: data).report
    }
}
