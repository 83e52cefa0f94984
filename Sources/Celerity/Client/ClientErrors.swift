import Foundation
import RedisClient
import Synchronization

public struct ClientError: Error, Sendable, CustomStringConvertible {
    public var message: String
    /// The Redis error behind it, if any.
    public var cause: RedisError?
    public init(_ message: String, cause: RedisError? = nil) {
        self.message = message
        self.cause = cause
    }
    public var description: String { message }
    /// Redis refused access (ACL `NOPERM`, or authentication): retrying will not help.
    public var isPermissionDenied: Bool { cause?.isPermissionDenied ?? false }

    /// A (P)SUBSCRIBE for results that failed: refused by Redis (named, with the ACL rule it
    /// needs) or lost with the connection.
    static func subscription(_ error: any Error, url: RedisURL) -> ClientError {
        guard let e = error as? RedisError else { return ClientError("cannot subscribe to results at \(url): \(error)") }
        if e.isPermissionDenied {
            return ClientError("Redis refused the result subscription: \(e.message); the ACL user needs the pub/sub channels "
                               + "&celery-task-meta-* and the commands SUBSCRIBE, PSUBSCRIBE (see docs/security.md)", cause: e)
        }
        return ClientError("cannot subscribe to results at \(url): \(e.message)", cause: e)
    }
}

/// A call its task's argument schema refuses (`params:` in the manifest), found before
/// anything was queued: `message` reads as the worker's TypeError would, `path` names the
/// bad value (`times`, `rows[2][0]`, `user.name`; nil for a wrong number of arguments).
public struct ArgumentError: Error, Sendable, CustomStringConvertible {
    public var task: String
    public var problem: ArgumentProblem
    public init(task: String, problem: ArgumentProblem) {
        self.task = task
        self.problem = problem
    }
    public var message: String { problem.message }
    public var path: String? { problem.path }
    public var description: String { "TypeError: \(problem.message) (not sent)" }
}

public struct TimeoutError: Error, Sendable, CustomStringConvertible {
    public var id: String
    public var seconds: Double
    /// What did not happen in time, when it was not a result.
    public var detail: String?
    init(id: String, seconds: Double, detail: String? = nil) {
        self.id = id
        self.seconds = seconds
        self.detail = detail
    }
    public var description: String { detail ?? "no result for task \(id) within \(seconds) s (is a worker consuming its queue?)" }
}

/// Awaits `task` until `deadline`: true when it finished (rethrowing its error), false when
/// the deadline came first (the task goes on; a later caller may await it again).
func awaitTask(_ task: Task<Void, any Error>, until deadline: Date) async throws -> Bool {
    let once = ResumeOnce()
    return try await withCheckedThrowingContinuation { (c: CheckedContinuation<Bool, any Error>) in
        once.continuation.withLock { $0 = c }
        @Sendable func finish(_ r: Result<Bool, any Error>) { once.continuation.withLock { c in defer { c = nil }; return c }?.resume(with: r) }
        let timer = OneShotTimer(after: deadline.timeIntervalSinceNow) { finish(.success(false)) }
        Task {
            do { try await task.value; finish(.success(true)) } catch { finish(.failure(error)) }
            timer.cancel()
        }
    }
}

private final class ResumeOnce: Sendable {
    let continuation = Mutex<CheckedContinuation<Bool, any Error>?>(nil)
}
