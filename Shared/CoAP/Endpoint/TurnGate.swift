/// Lets async callers take turns, first come first served.
///
/// Waiters are bounded by the callers themselves: each waiting caller is one suspended task.
actor TurnGate {
    private var busy = false
    private var waiting: [CheckedContinuation<Void, Never>] = []

    /// Waits until it is the caller's turn. Every `enter` must be followed by one `leave`.
    func enter() async {
        guard busy else {
            busy = true
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    /// Ends the caller's turn and hands it to the next waiter.
    func leave() {
        if waiting.isEmpty {
            busy = false
        } else {
            waiting.removeFirst().resume()
        }
    }
}
