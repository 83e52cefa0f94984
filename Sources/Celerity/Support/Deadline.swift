/// Runs `operation` against a deadline `timeout` from now: its value when it finishes first,
/// nil when the time runs out first. Either way the loser is cancelled, and awaited before
/// this returns: an operation that ignores cancellation holds it up (a plugin run is killed
/// by its cancellation handler; a built-in is abandoned only once it returns).
///
/// An error of the operation is rethrown; so is the sleep's `CancellationError` when the
/// calling task is cancelled first. `T` should not itself be optional (nil means time-out).
public func withDeadline<T: Sendable>(_ timeout: Duration, operation: @escaping @Sendable () async throws -> T) async throws -> T? {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(for: timeout)
            return nil
        }
        let first = try await group.next()!
        group.cancelAll()
        return first
    }
}
