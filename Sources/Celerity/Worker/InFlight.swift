import Foundation
import Logging
import Synchronization

/// One message being run by this worker.
final class InFlight: Sendable {
    /// `settling`: the handler has returned and its outcome is being stored; too late to
    /// revoke or hand back (neither touches an entry that is not `running`).
    enum Fate { case running, settling, abandoned, revoked }
    let raw: [UInt8]
    let taskID: String
    let listKey: String
    /// Runs the handler; nil when it also settled the outcome (see `Worker.runAndSettle`).
    let task = Mutex<Task<Result<JSONValue, any Error>?, Never>?>(nil)
    let fate = Mutex(Fate.running)
    /// The outcome was stored and acked where the handler got it (`TaskCall.settleOnAnswer`).
    let settled = Atomic<Bool>(false)
    /// When it started (`celery inspect active`'s `time_start`).
    let startedAt = Date()
    /// The call's flag: a one-shot plugin's process is signalled through it.
    let cancellation: CancellationFlag?
    /// The signal of a termination (`revoke(terminate=True, signal=...)`), 0 if none.
    let terminatedBy = Atomic<Int32>(0)
    init(raw: [UInt8], taskID: String, listKey: String, cancellation: CancellationFlag? = nil) {
        self.raw = raw
        self.taskID = taskID
        self.listKey = listKey
        self.cancellation = cancellation
    }
}

/// A worker's stop request: when it came, and whether the grace period has run out.
final class StopFlag: Sendable {
    private let requestedAt = Mutex<Date?>(nil)
    let grace: Double
    /// The time (tests pass a clock of their own).
    private let now: @Sendable () -> Date
    init(grace: Double, now: @escaping @Sendable () -> Date = { Date() }) {
        self.grace = grace
        self.now = now
    }
    func request() { requestedAt.withLock { if $0 == nil { $0 = now() } } }
    var isRequested: Bool { requestedAt.withLock { $0 != nil } }
    var graceExpired: Bool { requestedAt.withLock { $0.map { now().timeIntervalSince($0) > grace } ?? false } }
}

/// A task's log lines: the worker's logger with the task's id and name, built only for lines
/// that pass the log level (copying a Logger's metadata costs more than a trivial task).
struct TaskLog {
    let base: Logger
    let id: String
    let task: String
    func log(_ level: Logger.Level, _ message: @autoclosure () -> Logger.Message, metadata: @autoclosure () -> Logger.Metadata = [:]) {
        guard base.logLevel <= level else { return }
        var m = metadata()
        m["task_id"] = .string(id)
        m["task"] = .string(task)
        base.log(level: level, message(), metadata: m)
    }
    func debug(_ message: @autoclosure () -> Logger.Message, metadata: @autoclosure () -> Logger.Metadata = [:]) { log(.debug, message(), metadata: metadata()) }
    func info(_ message: @autoclosure () -> Logger.Message, metadata: @autoclosure () -> Logger.Metadata = [:]) { log(.info, message(), metadata: metadata()) }
    func warning(_ message: @autoclosure () -> Logger.Message, metadata: @autoclosure () -> Logger.Metadata = [:]) { log(.warning, message(), metadata: metadata()) }
    func error(_ message: @autoclosure () -> Logger.Message, metadata: @autoclosure () -> Logger.Metadata = [:]) { log(.error, message(), metadata: metadata()) }
}
