import Foundation
import Synchronization

/// A clock whose time moves only when someone sleeps on it: a sleep returns at once, the
/// clock set to its deadline. Code that waits "5 s" runs through them in no time, and a test
/// reads how much time it took. `onSleep` runs after each sleep (what the world does meanwhile).
final class VirtualClock: Clock, Sendable {
    struct Instant: InstantProtocol {
        var offset: Duration
        func advanced(by duration: Duration) -> Instant { Instant(offset: offset + duration) }
        func duration(to other: Instant) -> Duration { other.offset - offset }
        static func < (a: Instant, b: Instant) -> Bool { a.offset < b.offset }
    }

    private let current = Mutex(Instant(offset: .zero))
    private let hook = Mutex<(@Sendable (Duration) async -> Void)?>(nil)
    /// Where the clock's zero is on the wall (for code that reads `Date`).
    let start = Date()

    var now: Instant { current.withLock { $0 } }
    var minimumResolution: Duration { .zero }
    /// The time gone by since the start.
    var elapsed: Duration { now.offset }
    /// The wall time this clock says it is.
    var date: Date { start.addingTimeInterval(elapsed.seconds) }

    /// Runs `body` with the elapsed time after each sleep.
    func onSleep(_ body: @escaping @Sendable (Duration) async -> Void) { hook.withLock { $0 = body } }

    func advance(by duration: Duration) { current.withLock { $0 = $0.advanced(by: duration) } }

    func sleep(until deadline: Instant, tolerance: Duration?) async throws {
        try Task.checkCancellation()
        let elapsed = current.withLock { c -> Duration in
            if c < deadline { c = deadline }
            return c.offset
        }
        if let body = hook.withLock({ $0 }) { await body(elapsed) }
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
