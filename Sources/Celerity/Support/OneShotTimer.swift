import Dispatch
import Synchronization

/// Runs a closure once, after a delay, on a global queue, unless cancelled first.
///
/// Not `asyncAfter`: a cancelled work item keeps its closure (and all it captures: a call's
/// arguments, a plugin process, a continuation) until its deadline, which at thousands of
/// calls a second and a 300 s limit is a lot of memory. This timer lets go of the closure
/// when it fires or at `cancel()`, whichever comes first.
///
/// The timer keeps itself alive until then: dropping the handle does not cancel it (as with
/// `asyncAfter`); keep the handle only to cancel.
public final class OneShotTimer: @unchecked Sendable {
    // @unchecked: the dispatch source is thread-safe but not marked Sendable; the closure is
    // behind a Mutex.
    private let body: Mutex<(@Sendable () -> Void)?>
    private let source: any DispatchSourceTimer

    /// Starts the timer: `body` runs once, `seconds` from now (at once if not positive).
    public init(after seconds: Double, _ body: @escaping @Sendable () -> Void) {
        self.body = Mutex(body)
        source = DispatchSource.makeTimerSource(queue: .global())
        // The handler holds `self` (and so the source) until the source is cancelled.
        source.setEventHandler { [self] in fire() }
        source.schedule(deadline: .now() + max(seconds, 0))
        source.activate()
    }

    /// The closure will not run (unless it is running already) and is released now.
    public func cancel() {
        let released = take()
        source.cancel()
        _ = released   // (dropped here, outside the lock)
    }

    private func fire() {
        let run = take()
        source.cancel()
        run?()
    }

    private func take() -> (@Sendable () -> Void)? {
        body.withLock { b in
            defer { b = nil }
            return b
        }
    }
}
