import Foundation

/// A worker's background duty: one round of work (`once`), run every `interval` by `run`.
///
/// Threads: every duty runs as a child task of the worker's background task group, on Swift's
/// cooperative pool. It never blocks there: its Redis commands are awaited, and the blocking
/// hiredis I/O happens on each connection's own thread (RedisClient). A duty owns no thread.
///
/// Tests call `once()` directly (no sleeping); `run` takes the clock to sleep on.
protocol Duty: Sendable {
    /// How long to wait before each round.
    var interval: Duration { get }
    /// One round; returns an extra pause before the next one (Redis was away), or nil.
    func once() async -> Duration?
}

extension Duty {
    /// Rounds every `interval` until the task is cancelled.
    func run(clock: some Clock<Duration> = ContinuousClock()) async {
        while !Task.isCancelled {
            do { try await clock.sleep(for: interval) } catch { return }
            if let pause = await once() {
                do { try await clock.sleep(for: pause) } catch { return }
            }
        }
    }
}
