// PersistentPlugin: the pool of a persistent plugin's processes, its public API: a call's
// path (pick a process with room or wait, send, await the answer under the time limits
// kept by CallWatch). Supervision (spawn, restarts, crash loop, shutdown) is in
// PersistentPlugin+Supervision.swift; one process is LiveProcess (LiveProcess.swift, +Reader).

import Foundation
import Logging
import Synchronization

/// Runs a plugin in persistent mode (docs/plugins.md): `processes` long-lived instances
/// speaking newline-delimited JSON-RPC 2.0 on stdin/stdout.
///
/// - Handshake: `initialize` must be answered within `handshakeTimeout`; the answer's
///   `max_inflight` bounds the calls in flight per process.
/// - Calls: `task/run` with the request object; answers may come in any order.
/// - Time limit: `$/cancel` at the deadline; no answer within the grace period and the
///   process group is SIGKILLed (its other calls fail as crashes, retryable).
/// - Protocol violations (non-JSON on stdout, an answer for an unknown id, a line over the
///   size cap) kill the process: stdout is reserved for the protocol.
/// - Supervision: a process that dies is restarted with exponential backoff; more than
///   `crashLoopLimit` crashes within `crashWindow` seconds mark the handler unavailable for
///   `unavailableSeconds` (the worker pauses the queue meanwhile). Processes are recycled
///   after `maxCalls` calls or above `maxRSSBytes`.
public final class PersistentPlugin: TaskHandler, Sendable {
    public let spec: PluginSpec
    public let options: PersistentOptions
    public let logger: Logger
    /// The task names this pool serves (sent in the handshake).
    public let tasks: [String]
    let worker: String
    let queue: String
    /// Processes start on the first call, not with the worker: a pool whose tasks are all
    /// routed to queues this worker does not consume (they come only when sent to one it does).
    let startsOnDemand: Bool
    let demand = Demand()
    let crashLoopLimit = 5
    let crashWindow: Double = 30
    let unavailableSeconds: Double = 30
    let state = Mutex(PoolState())

    struct PoolState {
        var live: [Int: LiveProcess] = [:]
        var waiters: [CheckedContinuation<Void, Never>] = []
        var crashes: [Date] = []
        var unavailableUntil: Date?
        var unavailableReason = ""
        var stopping = false
        /// Processes that ended and were started again (crashes), and recycled (`max_calls`,
        /// `max_rss_mb`), since the worker started.
        var restarts = 0
        var recycles = 0
    }

    /// What the heartbeat says of this pool (the dashboard's metrics): processes running,
    /// restarts after crashes, recycles, and whether it takes calls.
    public var processDocument: JSONValue {
        let (live, restarts, recycles) = state.withLock { ($0.live.count, $0.restarts, $0.recycles) }
        return .object([JSONMember("processes", .int(live)), JSONMember("restarts", .int(restarts)),
                        JSONMember("recycles", .int(recycles)), JSONMember("available", .bool(unavailability == nil))])
    }

    public init(spec: PluginSpec, options: PersistentOptions, tasks: [String], worker: String, queue: String, startsOnDemand: Bool = false,
                logger: Logger) {
        self.startsOnDemand = startsOnDemand
        self.spec = spec
        self.options = options
        self.tasks = tasks
        self.worker = worker
        self.queue = queue
        var l = logger
        l[metadataKey: "plugin"] = .string(spec.argv.joined(separator: " "))
        self.logger = l
    }

    var name: String { spec.argv.joined(separator: " ") }

    /// Why the handler is unavailable (crash loop), or nil when it can take calls.
    public var unavailability: String? {
        state.withLock { s in
            guard let until = s.unavailableUntil, until > Date() else { return nil }
            return s.unavailableReason
        }
    }

    // MARK: - Calls

    public func run(_ call: TaskCall) async throws -> JSONValue {
        // The time limit counts from when the plugin gets the call, not while waiting for a
        // process to (re)start: that wait is not the task's doing.
        let limit = call.deadline.map { max($0.timeIntervalSinceNow, 0) }
        let process = try await acquire()
        return try await finish(start(call, on: process, limit: limit))
    }

    /// Sends `call` at once, from the calling thread, when a live process has room for it
    /// now; nil otherwise (then use `run`). For a worker that takes a message on a thread of
    /// its own and wants it on its way to the plugin before any hand-off. Await `finish`.
    public func tryStart(_ call: TaskCall) -> StartedCall? {
        let limit = call.deadline.map { max($0.timeIntervalSinceNow, 0) }
        guard case let .process(process) = pick() else { return nil }
        return start(call, on: process, limit: limit)
    }

    /// A call sent to a plugin process, its answer not awaited yet.
    public struct StartedCall: Sendable {
        fileprivate let process: LiveProcess
        fileprivate let rpcID: String
        fileprivate let reply: PendingReply
        fileprivate let watch: CallWatch
        fileprivate let limit: Double?
    }

    private func start(_ call: TaskCall, on process: LiveProcess, limit: Double?) -> StartedCall {
        let rpcID = process.reserveID(call.id)
        var sent = call
        sent.deadline = limit.map { Date().addingTimeInterval($0) }
        let request = JSONValue.object([
            JSONMember("jsonrpc", "2.0"), JSONMember("id", .string(rpcID)), JSONMember("method", "task/run"),
            JSONMember("params", OneShotPlugin.requestValue(sent)),
        ])
        let grace = spec.gracePeriod
        // The limits are timers on a global queue, not child tasks: the answer then resumes
        // the waiting task directly (each task hand-off costs tens of µs on a 2-core machine).
        let watch = CallWatch()
        if let limit {
            watch.schedule(after: limit) {
                guard watch.mark(.timedOut) else { return }
                process.send(Self.notification("$/cancel", ["id": .string(rpcID), "reason": "timeout"]))
                watch.schedule(after: grace) {
                    guard process.isPending(rpcID) else { return }
                    self.logger.warning("plugin did not answer a cancelled call within the grace period: killing its process group", metadata: ["task_id": .string(call.id)])
                    process.kill(reason: "killed at the time limit of task \(call.id)")
                }
            }
        }
        if let soft = call.softDeadline {
            // Soft time limit: ask the plugin to cancel; a -32800 answer becomes SoftTimeLimitExceeded.
            watch.schedule(after: max(soft.timeIntervalSinceNow, 0)) {
                guard watch.mark(.softFired) else { return }
                process.send(Self.notification("$/cancel", ["id": .string(rpcID), "reason": "soft_time_limit"]))
            }
        }
        // A quiet answer may be stored right on the reader thread (one hand-off less for the
        // result; see `TaskCall.settleOnAnswer`), unless a time limit struck first. Not while
        // other calls wait for room in this pool: the process would sit idle during the write.
        let settle = call.settleOnAnswer.map { hook in
            { @Sendable (value: JSONValue) in
                if self.state.withLock({ $0.waiters.isEmpty }) && !watch.finish().timedOut { hook(value) }
            }
        }
        let reply = process.start(rpcID, request.serializedBytes(), onSuccess: settle)
        return StartedCall(process: process, rpcID: rpcID, reply: reply, watch: watch, limit: limit)
    }

    /// Waits for the answer of a started call. Cancelling the waiting task (a revocation with
    /// terminate, a cold stop) asks the plugin to cancel the call, then kills the process
    /// group if the call is still in flight after the grace period.
    public func finish(_ started: StartedCall) async throws -> JSONValue {
        let (process, rpcID, watch, grace) = (started.process, started.rpcID, started.watch, spec.gracePeriod)
        let result: Result<JSONValue, TaskFailure> = await withTaskCancellationHandler {
            let r = await started.reply.value
            let (timedOut, softFired) = watch.finish()
            if timedOut { return .failure(TaskFailure.timeLimit(started.limit ?? 0)) }
            if softFired, case let .failure(f) = r, f.type == "TaskCancelled" { return .failure(TaskFailure.softTimeLimit(0)) }
            return r
        } onCancel: {
            process.send(Self.notification("$/cancel", ["id": .string(rpcID), "reason": "revoked"]))
            // With the call's other timers: dropped once it is answered (then it is no longer
            // pending, and the kill would not happen anyway).
            watch.schedule(after: grace) {
                if process.isPending(rpcID) { process.kill(reason: "call \(rpcID) cancelled and not answered within \(grace) s") }
            }
        }
        process.finished(rpcID, pool: self)
        return try result.get()
    }

    private enum Pick { case process(LiveProcess), wait, unavailable(String), stopping }

    /// A live process with room for one more call, reserved, if there is one now.
    private func pick() -> Pick {
        state.withLock { s in
            if s.stopping { return .stopping }
            if let until = s.unavailableUntil, until > Date() { return .unavailable(s.unavailableReason) }
            let candidates = s.live.values.filter { $0.hasRoom }
            if let best = candidates.min(by: { $0.load < $1.load }), best.tryReserve() { return .process(best) }
            return .wait
        }
    }

    /// Waits for a live process with room for one more call.
    private func acquire() async throws -> LiveProcess {
        if startsOnDemand { demand.fire(true) }
        while true {
            switch pick() {
            case let .process(p): return p
            case .stopping:
                throw TaskFailure(type: "WorkerShuttingDown", message: "plugin '\(name)' is shutting down", module: "celerity", disposition: .handBack)
            case let .unavailable(why):
                throw TaskFailure(type: "PluginUnavailable", message: "plugin '\(name)' is unavailable: \(why)", module: "celerity", disposition: .handBack)
            case .wait:
                // Woken when a process starts or a call finishes; re-checked at least every 100 ms.
                await withTaskGroup(of: Void.self) { g in
                    g.addTask { await withCheckedContinuation { c in self.state.withLock { $0.waiters.append(c) } } }
                    g.addTask { try? await Task.sleep(for: .milliseconds(100)) }
                    await g.next()
                    g.cancelAll()
                    self.wakeWaiters()
                    await g.waitForAll()
                }
            }
        }
    }

    func wakeWaiters() {
        let ws = state.withLock { s in defer { s.waiters.removeAll() }; return s.waiters }
        for w in ws { w.resume() }
    }

    static func notification(_ method: String, _ params: KeyValuePairs<String, JSONValue>) -> [UInt8] {
        JSONValue.object([JSONMember("jsonrpc", "2.0"), JSONMember("method", .string(method)),
                          JSONMember("params", .object(params.map { JSONMember($0.key, $0.value) }))]).serializedBytes()
    }
}

/// The timers of one plugin call (hard limit, grace, soft limit) and what they did.
final class CallWatch: Sendable {
    struct Flags { var timedOut = false; var softFired = false; var done = false }
    enum Flag { case timedOut, softFired }
    /// `OneShotTimer`s, not `asyncAfter`: the call's arguments and the process they capture
    /// are let go when the call is answered, not at the time limit.
    private let state = Mutex<(flags: Flags, timers: [OneShotTimer])>((Flags(), []))

    /// Runs `body` after `seconds` unless the call is answered first.
    func schedule(after seconds: Double, _ body: @escaping @Sendable () -> Void) {
        let timer = OneShotTimer(after: seconds, body)
        let accepted = state.withLock { s -> Bool in
            if s.flags.done { return false }
            s.timers.append(timer)
            return true
        }
        if !accepted { timer.cancel() }
    }

    /// Sets a flag unless the call is over or the hard limit already struck; false if not set.
    func mark(_ flag: Flag) -> Bool {
        state.withLock { s in
            if s.flags.done || s.flags.timedOut { return false }
            switch flag {
            case .timedOut: s.flags.timedOut = true
            case .softFired: s.flags.softFired = true
            }
            return true
        }
    }

    /// The call is answered: cancels the timers (none is left pending for the whole time
    /// limit); returns whether the limits struck.
    func finish() -> (timedOut: Bool, softFired: Bool) {
        let (f, timers) = state.withLock { s in
            s.flags.done = true
            defer { s.timers = [] }
            return (s.flags, s.timers)
        }
        for timer in timers { timer.cancel() }
        return (f.timedOut, f.softFired)
    }
}

/// The first call of a pool that starts on demand: `wait` returns what `fire` said first
/// (true: start the processes; false: the pool is shutting down), in either order.
final class Demand: Sendable {
    private let state = Mutex<(fired: Bool?, waiter: CheckedContinuation<Bool, Never>?)>((nil, nil))

    func fire(_ go: Bool) {
        let waiter = state.withLock { s -> CheckedContinuation<Bool, Never>? in
            guard s.fired == nil else { return nil }
            s.fired = go
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume(returning: go)
    }

    func wait() async -> Bool {
        await withCheckedContinuation { c in
            let fired = state.withLock { s -> Bool? in
                if let f = s.fired { return f }
                s.waiter = c
                return nil
            }
            if let fired { c.resume(returning: fired) }
        }
    }
}
