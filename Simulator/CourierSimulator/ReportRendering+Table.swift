extension ReportRendering {
    /// The widest line `table` writes, in characters.
    static let tableWidth = 100
    /// Where the values of a labelled line ("settings", "CoAP answers") and the first figure
    /// column of a table begin, so that the blocks line up under each other.
    private static let labelWidth = 20
    private static let gap = 2

    /// The end-of-run report for a terminal: plain text in aligned columns, no colours, no line
    /// wider than 100 characters, ending with `verdict: PASS` or `verdict: FAIL (...)` and the
    /// oracle's examples, one a line.
    public static func table(_ report: SimulationReport) -> String {
        let verdict = report.verdict
        var lines: [String] = []
        lines += flow("run", runFacts(report).map(inline))
        lines += flow("settings", settingsFacts(report.settings).map(inline))
        lines.append("")
        lines += aligned([["latency (ms)"] + latencyColumns] + latencyRows(report).map(indented))
        lines.append("")
        lines += aligned([["throughput"] + throughputColumns] + throughputRows(report).map(indented))
        lines.append("")
        lines += flow("CoAP answers", responseCodes(report).map(inline), separator: "   ")
        let failures = transportFailures(report).map { [$0.label, $0.value] }
        lines += labelled("transport failures", aligned(failures, firstWidth: 0, minimumWidth: 0))
        lines.append("")
        lines += grid(networkFacts(report))
        lines.append("")
        lines.append("oracle")
        lines += grid(oracleFacts(verdict)).map { "  " + $0 }
        lines.append("")
        lines.append("verdict: " + verdictSummary(verdict))
        lines += examples(verdict).map { "  " + $0 }
        if verdict.examples.count > exampleLimit {
            lines.append("  … and \(verdict.examples.count - exampleLimit) more")
        }
        return lines.flatMap(wrapped).joined(separator: "\n") + "\n"
    }

    private static func inline(_ fact: Fact) -> String {
        "\(fact.label) \(fact.value)"
    }

    private static func indented(_ row: Row) -> [String] {
        ["  " + row.name] + row.cells
    }

    /// Items after a label, as many to a line as fit, further lines starting under the first item.
    private static func flow(_ label: String, _ items: [String], separator: String = " · ") -> [String] {
        var lines: [String] = []
        var line = padded(label, to: labelWidth)
        for (index, item) in (items.isEmpty ? ["none"] : items).enumerated() {
            if index == 0 {
                line += item
            } else if line.count + separator.count + item.count <= tableWidth {
                line += separator + item
            } else {
                lines.append(line)
                line = padded("", to: labelWidth) + item
            }
        }
        return lines + [line]
    }

    /// Lines after a label, the first beside it and the rest under the first.
    private static func labelled(_ label: String, _ lines: [String]) -> [String] {
        (lines.isEmpty ? ["none"] : lines).enumerated().map { index, line in
            padded(index == 0 ? label : "", to: labelWidth) + line
        }
    }

    /// Facts in two columns of label and right-aligned value, filled down then across.
    private static func grid(_ facts: [Fact]) -> [String] {
        let height = (facts.count + 1) / 2
        let rows = (0..<height).map { row in
            var cells = [facts[row].label, facts[row].value]
            if row + height < facts.count {
                cells += ["", facts[row + height].label, facts[row + height].value]
            }
            return cells
        }
        return aligned(rows, left: [0, 2, 3], firstWidth: 0, minimumWidth: 0)
    }

    /// Rows in columns: the columns in `left` padded on the right, the others (figures) on the
    /// left to their widest cell or `minimumWidth`; the first column reaches at least `firstWidth`
    /// including the gap after it.
    private static func aligned(
        _ rows: [[String]], left: Set<Int> = [0], firstWidth: Int = labelWidth, minimumWidth: Int = 7
    ) -> [String] {
        let columns = rows.map(\.count).max() ?? 0
        let widths = (0..<columns).map { column in
            let widest = rows.map { column < $0.count ? $0[column].count : 0 }.max() ?? 0
            let least = column == 0 ? firstWidth - gap : left.contains(column) ? 0 : minimumWidth
            return max(widest, least)
        }
        return rows.map { cells in
            let line = cells.enumerated().map { column, cell in
                left.contains(column)
                    ? padded(cell, to: widths[column])
                    : padded("", to: widths[column] - cell.count) + cell
            }
            return trimmingTrailingSpaces(line.joined(separator: padded("", to: gap)))
        }
    }

    /// A line cut to `tableWidth`, at a space where one is near the end, the rest indented.
    private static func wrapped(_ line: String) -> [String] {
        let continuation = padded("", to: labelWidth + 2)
        var lines: [String] = []
        var prefix = ""
        var rest = Substring(line)
        while prefix.count + rest.count > tableWidth {
            let room = tableWidth - prefix.count
            var cut = rest.index(rest.startIndex, offsetBy: room)
            if let space = rest[..<cut].lastIndex(of: " "), rest.distance(from: rest.startIndex, to: space) > room / 2 {
                cut = space
            }
            lines.append(trimmingTrailingSpaces(prefix + rest[..<cut]))
            rest = rest[cut...].drop { $0 == " " }
            prefix = continuation
        }
        return lines + [prefix + rest]
    }

    private static func padded(_ text: String, to width: Int) -> String {
        text + String(repeating: " ", count: max(0, width - text.count))
    }

    private static func trimmingTrailingSpaces(_ text: String) -> String {
        var text = text
        while text.hasSuffix(" ") { text.removeLast() }
        return text
    }
}
