import Foundation

extension ReportRendering {
    /// A line chart as inline SVG for the HTML page: series against an x axis the caller lays
    /// out, a y axis on the left (and one on the right for series that ask for it) scaled to the
    /// data, grid lines, tick labels, axis titles and a legend.
    ///
    /// A point that is not finite breaks its line; a chart with no finite point says "no data".
    /// No coordinate it writes is NaN or infinite.
    struct LineChart {
        struct Point {
            var x: Double
            var y: Double

            var isDrawn: Bool { x.isFinite && y.isFinite }
        }

        struct Series {
            var name: String
            /// A CSS colour.
            var color: String
            var dashed = false
            var onRightAxis = false
            var points: [Point]
        }

        struct Tick {
            var value: Double
            var label: String
        }

        struct Axis {
            var title: String
            var lower: Double
            var upper: Double
            var ticks: [Tick]
        }

        /// What the chart shows, for screen readers.
        var title: String
        var x: Axis
        var leftTitle: String
        var rightTitle: String = ""
        var series: [Series]

        private static let width = 900.0
        private static let height = 320.0
        private static let fontSize = 12.0

        func svg() -> String {
            guard series.contains(where: { $0.points.contains(where: \.isDrawn) }) else { return Self.noData(title) }

            let left = Self.axis(leftTitle, covering: series.filter { !$0.onRightAxis })
            let right = series.contains(where: \.onRightAxis) ? Self.axis(rightTitle, covering: series.filter(\.onRightAxis)) : nil
            let frame = Frame(
                left: 64, right: Self.width - (right == nil ? 40 : 64), top: 40, bottom: Self.height - 48, x: x
            )

            var svg = #"<svg viewBox="0 0 \#(Int(Self.width)) \#(Int(Self.height))" role="img" aria-label="\#(escaped(title))">"#
            svg += "\n<g class=\"grid\">"
            for tick in x.ticks {
                let px = Self.number(frame.x(tick.value))
                svg += #"<line x1="\#(px)" y1="\#(Self.number(frame.top))" x2="\#(px)" y2="\#(Self.number(frame.bottom))"/>"#
            }
            for tick in left.ticks {
                let py = Self.number(frame.y(tick.value, on: left))
                svg += #"<line x1="\#(Self.number(frame.left))" y1="\#(py)" x2="\#(Self.number(frame.right))" y2="\#(py)"/>"#
            }
            svg += "</g>\n<g class=\"axis\">"
            svg += #"<rect x="\#(Self.number(frame.left))" y="\#(Self.number(frame.top))" width="\#(Self.number(frame.right - frame.left))" height="\#(Self.number(frame.bottom - frame.top))" fill="none"/>"#
            for tick in x.ticks {
                svg += Self.text(tick.label, x: frame.x(tick.value), y: frame.bottom + 18, anchor: "middle")
            }
            for tick in left.ticks {
                svg += Self.text(tick.label, x: frame.left - 6, y: frame.y(tick.value, on: left) + 4, anchor: "end")
            }
            svg += Self.text(x.title, x: (frame.left + frame.right) / 2, y: Self.height - 8, anchor: "middle")
            svg += Self.text(left.title, x: 16, y: (frame.top + frame.bottom) / 2, anchor: "middle", rotation: -90)
            if let right {
                for tick in right.ticks {
                    svg += Self.text(tick.label, x: frame.right + 6, y: frame.y(tick.value, on: right) + 4, anchor: "start")
                }
                svg += Self.text(right.title, x: Self.width - 16, y: (frame.top + frame.bottom) / 2, anchor: "middle", rotation: 90)
            }
            svg += "</g>\n"
            for series in series {
                svg += Self.line(series, in: frame, on: series.onRightAxis ? right ?? left : left)
            }
            svg += legend(at: frame.left)
            return svg + "</svg>"
        }

        /// Where the plot sits in the picture, and the mapping from values to it.
        private struct Frame {
            var left: Double
            var right: Double
            var top: Double
            var bottom: Double
            var x: Axis

            func x(_ value: Double) -> Double {
                left + (value - x.lower) / (x.upper - x.lower) * (right - left)
            }

            func y(_ value: Double, on axis: Axis) -> Double {
                bottom - (value - axis.lower) / (axis.upper - axis.lower) * (bottom - top)
            }
        }

        /// The series' runs of drawable points as one path; a run of one point, which has no line
        /// to draw, as a dot.
        private static func line(_ series: Series, in frame: Frame, on axis: Axis) -> String {
            var path: [String] = []
            var dots = ""
            for run in series.points.split(whereSeparator: { !$0.isDrawn }) {
                let coordinates = run.map { "\(number(frame.x($0.x))) \(number(frame.y($0.y, on: axis)))" }
                if run.count == 1, let only = run.first {
                    let cx = number(frame.x(only.x)), cy = number(frame.y(only.y, on: axis))
                    dots += #"<circle cx="\#(cx)" cy="\#(cy)" r="3" fill="\#(series.color)"/>"#
                } else {
                    path.append("M" + coordinates.joined(separator: " L"))
                }
            }
            guard !path.isEmpty else { return dots + "\n" }
            let dash = series.dashed ? #" stroke-dasharray="6 4""# : ""
            return #"<path d="\#(path.joined(separator: " "))" fill="none" stroke="\#(series.color)" stroke-width="2" stroke-linejoin="round"\#(dash)/>"#
                + dots + "\n"
        }

        private func legend(at start: Double) -> String {
            var svg = "<g class=\"legend\">"
            var x = start
            for series in series {
                let dash = series.dashed ? #" stroke-dasharray="6 4""# : ""
                svg += #"<line x1="\#(Self.number(x))" y1="20" x2="\#(Self.number(x + 24))" y2="20" stroke="\#(series.color)" stroke-width="3"\#(dash)/>"#
                svg += Self.text(series.name, x: x + 30, y: 24, anchor: "start")
                x += 30 + Double(series.name.count) * Self.fontSize * 0.6 + 24
            }
            return svg + "</g>\n"
        }

        private static func noData(_ title: String) -> String {
            #"<svg viewBox="0 0 \#(Int(width)) 120" role="img" aria-label="\#(escaped(title)): no data">"#
                + #"<rect class="empty" x="1" y="1" width="\#(Int(width) - 2)" height="118"/>"#
                + text("no data", x: width / 2, y: 64, anchor: "middle")
                + "</svg>"
        }

        private static func text(_ text: String, x: Double, y: Double, anchor: String, rotation: Double = 0) -> String {
            let turn = rotation == 0 ? "" : #" transform="rotate(\#(number(rotation)) \#(number(x)) \#(number(y)))""#
            return #"<text x="\#(number(x))" y="\#(number(y))" text-anchor="\#(anchor)"\#(turn)>\#(escaped(text))</text>"#
        }

        /// A coordinate for an attribute: one decimal, and never NaN, infinite or absurdly far.
        private static func number(_ value: Double) -> String {
            guard value.isFinite else { return "0" }
            return compact(Swift.min(Swift.max(value, -10 * width), 10 * width), decimals: 1)
        }

        /// A y axis from 0 (or the lowest value, when below) to a round number above the highest.
        private static func axis(_ title: String, covering series: [Series]) -> Axis {
            let values = series.flatMap { $0.points.filter(\.isDrawn).map(\.y) }
            return linearAxis(title, from: Swift.min(0, values.min() ?? 0), to: values.max() ?? 0)
        }

        /// About five ticks a round step apart (1, 2, 2.5 or 5 times a power of ten), covering
        /// `lower...upper`; a range of one value, or none, widens to one unit.
        static func linearAxis(_ title: String, from lower: Double, to upper: Double) -> Axis {
            var lower = lower.isFinite ? lower : 0
            var upper = upper.isFinite ? Swift.max(upper, lower) : lower
            if !(upper - lower > 0) || !(upper - lower).isFinite {
                lower = Swift.min(lower, 0)
                upper = lower + 1
            }
            let rough = (upper - lower) / 5
            let magnitude = pow(10, log10(rough).rounded(.down))
            let step = [1, 2, 2.5, 5, 10].map { $0 * magnitude }.first { $0 >= rough } ?? 10 * magnitude
            let first = (lower / step).rounded(.down)
            let last = (upper / step).rounded(.up)
            guard step.isFinite, step > 0, last - first >= 1, last - first <= 20 else {
                return Axis(title: title, lower: lower, upper: upper, ticks: [Tick(value: lower, label: tickLabel(lower)), Tick(value: upper, label: tickLabel(upper))])
            }
            let ticks = (0...Int(last - first)).map { index in
                let value = (first + Double(index)) * step
                return Tick(value: value, label: tickLabel(value))
            }
            return Axis(title: title, lower: first * step, upper: last * step, ticks: ticks)
        }

        /// 12500 reads "12.5k", 3000000 "3M".
        private static func tickLabel(_ value: Double) -> String {
            switch abs(value) {
            case 1_000_000...: compact(value / 1_000_000) + "M"
            case 10_000...: compact(value / 1_000) + "k"
            default: compact(value)
            }
        }
    }
}
