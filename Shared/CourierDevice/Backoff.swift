/// How long to wait after the `failures`-th failure in a row: doubling from `initial` up to
/// `maximum`, then a random point in the upper half of that, so a fleet that lost the server at
/// one moment does not come back at one moment.
enum Backoff {
    static func delay(failures: Int, initial: Duration, maximum: Duration) -> Duration {
        let ceiling = min(initial * (1 << min(max(failures - 1, 0), 16)), maximum)
        let milliseconds = ceiling.components.seconds * 1000 + ceiling.components.attoseconds / 1_000_000_000_000_000
        return .milliseconds(Int64.random(in: max(1, milliseconds / 2)...max(1, milliseconds)))
    }
}
