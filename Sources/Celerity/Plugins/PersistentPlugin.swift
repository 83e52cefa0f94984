import Foundation
import Logging
import RedisClient
import Subprocess
import Synchronization
import SystemPackage

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
    private let demand = Demand()
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

    // MARK: - Supervision

    /// Keeps `processes` instances running until `shutdown()`; run it in a task of its own.
    /// A pool that `startsOnDemand` waits for its first call (or returns at the shutdown).
    public func supervise() async {
        if startsOnDemand {
            let go = await withTaskCancellationHandler { await demand.wait() } onCancel: { demand.fire(false) }
            guard go, !isStopping else { return }
        }
        await withDiscardingTaskGroup { group in
            for slot in 0..<options.processes {
                group.addTask { await self.runSlot(slot) }
            }
        }
    }

    /// Stops taking calls, asks every process to shut down (`shutdown`, `exit`, EOF), and
    /// SIGKILLs those still alive after the grace period.
    public func shutdown() async {
        let live = state.withLock { s in
            s.stopping = true
            return Array(s.live.values)
        }
        demand.fire(false)
        wakeWaiters()
        for p in live { p.drainAndExit() }
        let deadline = Date().addingTimeInterval(spec.gracePeriod)
        while Date() < deadline, state.withLock({ !$0.live.isEmpty }) {
            try? await Task.sleep(for: .milliseconds(50))
        }
        for p in state.withLock({ Array($0.live.values) }) { p.kill(reason: "shutdown grace period over") }
    }

    private var isStopping: Bool { state.withLock { $0.stopping } }

    /// Cold stop: no restarts, every process group SIGKILLed now (calls in flight fail).
    public func stopNow() {
        let live = state.withLock { s in
            s.stopping = true
            return Array(s.live.values)
        }
        demand.fire(false)
        for p in live { p.kill(reason: "worker stopped") }
        wakeWaiters()
    }

    private func runSlot(_ slot: Int) async {
        var backoff = Backoff(first: 0.2, max: 10)
        while !isStopping {
            let outcome = await runProcess(slot)
            if isStopping { return }
            switch outcome {
            case .recycled:
                backoff.reset()
            case let .crashed(why):
                let loop: Bool = state.withLock { s in
                    let now = Date()
                    s.crashes = s.crashes.filter { now.timeIntervalSince($0) < crashWindow } + [now]
                    if s.crashes.count > crashLoopLimit {
                        s.unavailableUntil = now.addingTimeInterval(unavailableSeconds)
                        s.unavailableReason = "crash loop: \(s.crashes.count) crashes within \(Int(crashWindow)) s; last: \(why)"
                        s.crashes.removeAll()
                        return true
                    }
                    return false
                }
                if loop {
                    logger.error("plugin is in a crash loop: handler unavailable, its queue paused", metadata: [
                        "queue": .string(queue), "for_s": .stringConvertible(unavailableSeconds), "last_error": .string(why)])
                    wakeWaiters()
                    try? await Task.sleep(for: .milliseconds(Int(unavailableSeconds * 1000)))
                    backoff.reset()
                } else {
                    let delay = backoff.next()
                    logger.warning("plugin process ended; restarting", metadata: ["reason": .string(why), "restart_in_s": .stringConvertible(delay)])
                    try? await Task.sleep(for: .milliseconds(Int(delay * 1000)))
                }
            }
        }
    }

    enum Outcome { case recycled, crashed(String) }

    /// Starts one process, handshakes, serves calls until it ends.
    private func runProcess(_ slot: Int) async -> Outcome {
        var platform = PlatformOptions()
        platform.processGroupID = 0
        platform.teardownSequence = [.gracefulShutDown(toProcessGroup: true, allowedDurationToNextStep: .milliseconds(Int(spec.gracePeriod * 1000)))]
        var env = OneShotPlugin.baseEnvironment(spec)
        env["CELERITY_MODE"] = "persistent"
        env["CELERITY_WORKER"] = worker
        env["CELERITY_QUEUE"] = queue
        PipeWriter.ignoreSIGPIPE
        guard let toPlugin = makeCloexecPipe() else { return .crashed("cannot make a pipe for the plugin's stdin: \(String(cString: strerror(errno)))") }
        guard let fromPlugin = makeCloexecPipe() else {
            _ = close(toPlugin.read); _ = close(toPlugin.write)
            return .crashed("cannot make a pipe for the plugin's stdout: \(String(cString: strerror(errno)))")
        }
        let stdin = PipeWriter(fd: toPlugin.write)
        let readerStarted = Mutex(false)
        let started = Date()
        do {
            let result = try await Subprocess.run(
                .path(FilePath(spec.executable)),
                arguments: Arguments(Array(spec.argv.dropFirst())),
                environment: .custom(env),
                workingDirectory: FilePath(spec.workingDirectory),
                platformOptions: platform,
                input: .fileDescriptor(FileDescriptor(rawValue: toPlugin.read), closeAfterSpawningProcess: true),
                output: .fileDescriptor(FileDescriptor(rawValue: fromPlugin.write), closeAfterSpawningProcess: true),
                error: .sequence
            ) { execution -> Outcome in
                let process = LiveProcess(slot: slot, pid: execution.processIdentifier.value, stdin: stdin,
                                          maxOutputBytes: spec.maxOutputBytes, maxCalls: options.maxCalls, maxRSSBytes: options.maxRSSBytes)
                readerStarted.withLock { $0 = true }
                return await withTaskGroup(of: Void.self) { group -> Outcome in
                    group.addTask { await self.logStderr(execution.standardError) }
                    group.addTask {
                        await process.readResponses(fd: fromPlugin.read, logger: self.logger)
                        stdin.closeNow()   // nobody reads it any more
                    }
                    // Handshake.
                    let hello = JSONValue.object([
                        JSONMember("jsonrpc", "2.0"), JSONMember("id", 0), JSONMember("method", "initialize"),
                        JSONMember("params", .object([JSONMember("protocol", 1), JSONMember("tasks", .array(self.tasks.map { .string($0) }))])),
                    ])
                    let outcome: Outcome
                    switch await process.handshake(hello.serializedBytes(), timeout: self.options.handshakeTimeout, cap: self.options.maxInflight) {
                    case let .failed(why):
                        self.logger.error("plugin handshake failed", metadata: ["reason": .string(why)])
                        process.kill(reason: why)
                        outcome = .crashed("handshake failed: \(why)")
                    case let .ok(info):
                        self.logger.info("plugin process ready", metadata: ["pid": .stringConvertible(process.pid), "slot": .stringConvertible(slot),
                                                                             "max_inflight": .stringConvertible(process.maxInflight), "name": .string(info)])
                        self.state.withLock { $0.live[slot] = process }
                        self.wakeWaiters()
                        if self.isStopping { process.drainAndExit() }
                        await process.waitUntilEnded()
                        self.state.withLock { _ = $0.live.removeValue(forKey: slot) }
                        outcome = process.wasRecycled ? .recycled : .crashed(process.endReason)
                    }
                    stdin.finish()
                    await group.waitForAll()
                    return outcome
                }
            }
            var outcome = result.closureResult
            if case .crashed = outcome {
                let status = result.terminationStatus
                outcome = .crashed("\(outcomeText(outcome)) (\(status), ran \(String(format: "%.1f", Date().timeIntervalSince(started))) s)")
            }
            return outcome
        } catch {
            stdin.closeNow()
            // Not spawned: the reader never took its end of the pipe (the child's ends are
            // closed by swift-subprocess, as asked).
            if !readerStarted.withLock({ $0 }) { _ = close(fromPlugin.read) }
            state.withLock { _ = $0.live.removeValue(forKey: slot) }
            return .crashed("cannot start '\(name)': \(error)")
        }
    }

    private func outcomeText(_ o: Outcome) -> String {
        if case let .crashed(s) = o { return s }
        return "recycled"
    }

    private func logStderr(_ stream: SubprocessOutputSequence) async {
        var kept = 0
        var pending: [UInt8] = []
        let cap = spec.maxStderrBytes
        do {
            for try await chunk in stream {
                chunk.withUnsafeBytes { raw in
                    let bytes = raw.bindMemory(to: UInt8.self)
                    var start = 0
                    while start < bytes.count {
                        guard let nl = bytes[start...].firstIndex(of: 10) else {
                            if pending.count < 64 * 1024 { pending.append(contentsOf: bytes[start..<min(bytes.count, start + 64 * 1024)]) }
                            break
                        }
                        if kept < cap {
                            pending.append(contentsOf: bytes[start..<nl])
                            logger.info("plugin stderr", metadata: ["line": .string(String(decoding: pending, as: UTF8.self))])
                        }
                        kept += pending.count + (nl - start) + 1
                        pending.removeAll(keepingCapacity: true)
                        start = nl + 1
                    }
                }
            }
        } catch {}
        if !pending.isEmpty && kept < cap { logger.info("plugin stderr", metadata: ["line": .string(String(decoding: pending, as: UTF8.self))]) }
        if kept > cap { logger.warning("plugin stderr over the cap: lines dropped from the log", metadata: ["bytes": .stringConvertible(kept), "cap": .stringConvertible(cap)]) }
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

/// The answer to one call: resolved once (by the reader thread, or by the process's end),
/// awaited by one task, in either order.
final class PendingReply: Sendable {
    /// What to do with a successful answer on the reader thread before resolving (see
    /// `LiveProcess.start`).
    let onSuccess: (@Sendable (JSONValue) -> Void)?
    init(onSuccess: (@Sendable (JSONValue) -> Void)?) { self.onSuccess = onSuccess }

    private let state = Mutex<(result: Result<JSONValue, TaskFailure>?, waiter: CheckedContinuation<Result<JSONValue, TaskFailure>, Never>?)>((nil, nil))

    func resolve(_ r: Result<JSONValue, TaskFailure>) {
        let waiter = state.withLock { s -> CheckedContinuation<Result<JSONValue, TaskFailure>, Never>? in
            guard s.result == nil else { return nil }
            s.result = r
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume(returning: r)
    }

    var value: Result<JSONValue, TaskFailure> {
        get async {
            await withCheckedContinuation { c in
                let ready = state.withLock { s -> Result<JSONValue, TaskFailure>? in
                    if let r = s.result { return r }
                    s.waiter = c
                    return nil
                }
                if let ready { c.resume(returning: ready) }
            }
        }
    }
}

/// One running plugin process: its outgoing lines, its calls in flight, its bookkeeping.
final class LiveProcess: Sendable {
    let slot: Int
    let pid: pid_t
    let stdin: PipeWriter
    let maxOutputBytes: Int
    let maxCalls: Int?
    let maxRSSBytes: Int?
    let inner = Mutex(Inner())

    struct Inner {
        var pending: [String: PendingReply] = [:]
        var reserved = 0
        /// Answers being settled on the reader thread right now (see `start`): they hold
        /// their room until done, so no call is placed here while the reader is busy.
        var settling = 0
        var maxInflight = 1
        var calls = 0
        var draining = false
        var recycled = false
        var ended = false
        var endReason = "process exited"
        var violation: String?
        var handshake: CheckedContinuation<Result<JSONValue, TaskFailure>, Never>?
        var endWaiters: [CheckedContinuation<Void, Never>] = []
        var idCounter = 0
        /// Ids answered lately, to tell a second answer from a wrong id.
        var recent: [String] = []
    }

    init(slot: Int, pid: pid_t, stdin: PipeWriter, maxOutputBytes: Int, maxCalls: Int?, maxRSSBytes: Int?) {
        self.slot = slot
        self.pid = pid
        self.stdin = stdin
        self.maxOutputBytes = maxOutputBytes
        self.maxCalls = maxCalls
        self.maxRSSBytes = maxRSSBytes
    }

    var maxInflight: Int { inner.withLock { $0.maxInflight } }
    var load: Int { inner.withLock { $0.pending.count + $0.reserved + $0.settling } }
    var hasRoom: Bool { inner.withLock { !$0.draining && !$0.ended && $0.pending.count + $0.reserved + $0.settling < $0.maxInflight } }
    var wasRecycled: Bool { inner.withLock { $0.recycled } }
    var endReason: String { inner.withLock { $0.violation ?? $0.endReason } }

    func tryReserve() -> Bool {
        inner.withLock { s in
            guard !s.draining, !s.ended, s.pending.count + s.reserved + s.settling < s.maxInflight else { return false }
            s.reserved += 1
            return true
        }
    }

    /// The JSON-RPC id for a task: its task id, made unique among this process's calls.
    func reserveID(_ taskID: String) -> String {
        inner.withLock { s in
            if s.pending[taskID] == nil { return taskID }
            s.idCounter += 1
            return "\(taskID)#\(s.idCounter)"
        }
    }

    func send(_ line: [UInt8]) { stdin.send(line) }

    func isPending(_ id: String) -> Bool { inner.withLock { $0.pending[id] != nil } }

    /// Sends a call; its answer (or the process's end) resolves the reply. Synchronous: the
    /// line is written from the calling thread. `onSuccess` runs on the reader thread with a
    /// successful answer that came when no other line was waiting behind it and no other call
    /// was in flight, before the reply resolves.
    func start(_ id: String, _ line: [UInt8], onSuccess: (@Sendable (JSONValue) -> Void)? = nil) -> PendingReply {
        let reply = PendingReply(onSuccess: onSuccess)
        let accepted: Bool = inner.withLock { s in
            s.reserved = max(s.reserved - 1, 0)
            if s.ended { return false }
            s.pending[id] = reply
            return true
        }
        if accepted { stdin.send(line) } else { reply.resolve(.failure(crashFailure(inFlight: true))) }
        return reply
    }

    /// After a call: count it, recycle when due, wake callers waiting for room.
    func finished(_ id: String, pool: PersistentPlugin) {
        let recycle: Bool = inner.withLock { s in
            // (Answered calls are counted against max_calls where the answer is read.)
            if let limit = maxRSSBytes, let rss = LiveProcess.residentBytes(pid), rss > limit { s.draining = true }
            return s.draining && s.pending.isEmpty && s.reserved == 0 && !s.recycled
        }
        if recycle {
            pool.logger.info("recycling plugin process", metadata: ["pid": .stringConvertible(pid)])
            drainAndExit()
        }
        pool.wakeWaiters()
    }

    /// Marks the process as leaving on purpose: `shutdown`, then `exit`, then EOF on stdin.
    func drainAndExit() {
        let send: Bool = inner.withLock { s in
            s.draining = true
            if s.recycled || s.ended { return false }
            s.recycled = true
            return true
        }
        guard send else { return }
        stdin.send(JSONValue.object([JSONMember("jsonrpc", "2.0"), JSONMember("id", "shutdown"), JSONMember("method", "shutdown")]).serializedBytes())
        stdin.send(JSONValue.object([JSONMember("jsonrpc", "2.0"), JSONMember("method", "exit")]).serializedBytes())
        stdin.finish()
    }

    func kill(reason: String) {
        inner.withLock { s in if s.violation == nil { s.violation = reason } }
        _ = Glibc.kill(-pid, SIGKILL)
    }

    enum Handshake { case ok(String), failed(String) }

    func handshake(_ line: [UInt8], timeout: Double, cap: Int?) async -> Handshake {
        let answer: Result<JSONValue, TaskFailure>? = await withTaskGroup(of: Result<JSONValue, TaskFailure>?.self) { g in
            g.addTask {
                await withCheckedContinuation { c in
                    self.inner.withLock { $0.handshake = c }
                    self.stdin.send(line)
                }
            }
            g.addTask {
                try? await Task.sleep(for: .milliseconds(Int(timeout * 1000)))
                return nil
            }
            let first = await g.next()!
            if first == nil {
                // Time-out: resume the handshake waiter so the group can finish.
                if let c = inner.withLock({ s -> CheckedContinuation<Result<JSONValue, TaskFailure>, Never>? in defer { s.handshake = nil }; return s.handshake }) {
                    c.resume(returning: .failure(TaskFailure(type: "PluginProtocolError", message: "no answer to initialize within \(timeout) s")))
                }
            }
            g.cancelAll()
            return first
        }
        guard let answer else { return .failed("no answer to initialize within \(timeout) s") }
        switch answer {
        case let .failure(f): return .failed(f.message)
        case let .success(info):
            guard info["protocol"]?.intValue == 1 else {
                return .failed("plugin answered initialize with protocol \(info["protocol"]?.serialized() ?? "missing"), expected 1")
            }
            var n = info["max_inflight"]?.intValue ?? 1
            if n < 1 { n = 1 }
            if let cap { n = min(n, cap) }
            inner.withLock { $0.maxInflight = n }
            return .ok(info["name"]?.stringValue ?? "")
        }
    }

    func waitUntilEnded() async {
        await withCheckedContinuation { c in
            let ended: Bool = inner.withLock { s in
                if s.ended { return true }
                s.endWaiters.append(c)
                return false
            }
            if ended { c.resume() }
        }
    }

    private func crashFailure(inFlight: Bool) -> TaskFailure {
        let why = inner.withLock { $0.violation ?? $0.endReason }
        // An answer over the size cap would be just as big on a retry: not retryable.
        let oversized = why.hasPrefix("plugin wrote a line of more than")
        return TaskFailure(type: oversized ? "PluginProtocolError" : "PluginCrashed", message: "plugin process \(pid) ended with this call in flight: \(why)",
                           module: "celerity", retryable: !oversized)
    }

    /// Reads stdout line by line (split on "\n" bytes only: JSON may hold U+2028), dispatching
    /// answers; returns at EOF, after failing every call still in flight.
    func readResponses(fd: Int32, logger: Logger) async {
        // A thread of its own: blocking reads never run on the cooperative pool, and an
        // answer resumes its caller straight from here (one hand-off).
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            let t = Thread {
                self.readResponsesBlocking(fd: fd, logger: logger)
                _ = close(fd)
                done.resume()
            }
            t.name = "celerity-plugin-stdout"
            t.start()
        }
    }

    private func readResponsesBlocking(fd: Int32, logger: Logger) {
        var line: [UInt8] = []
        var violated = false
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 1)
        defer { buffer.deallocate() }
        // EOF normally tells that the process is gone. A child the plugin started may keep
        // its stdout open after it died, though: so wait in slices and stop once the process
        // itself no longer exists (reaped), after taking what is already in the pipe.
        var processGone = false
        while true {
            if !processGone {
                var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                let ready = poll(&p, 1, 250)
                if ready < 0 && errno == EINTR { continue }
                if ready == 0 {
                    if LiveProcess.hasExited(pid) {
                        processGone = true
                        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
                    }
                    continue
                }
            }
            let n = read(fd, buffer.baseAddress, buffer.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            var lines: [[UInt8]] = []
            let bytes = UnsafeRawBufferPointer(rebasing: buffer[0..<n]).bindMemory(to: UInt8.self)
            var start = 0
            while start < bytes.count {
                if let nl = bytes[start...].firstIndex(of: 10) {
                    line.append(contentsOf: bytes[start..<nl])
                    lines.append(line)
                    line.removeAll(keepingCapacity: true)
                    start = nl + 1
                } else {
                    // Past the cap the rest of the line is not kept (it is a violation anyway).
                    if line.count <= maxOutputBytes { line.append(contentsOf: bytes[start...]) }
                    start = bytes.count
                }
            }
            for (i, l) in lines.enumerated() where !violated {
                // The last complete line with nothing more read: a quiet moment, when the
                // answer may be settled right here (see `call`).
                let quiet = i == lines.count - 1 && line.isEmpty
                if let v = handle(l, quiet: quiet) { violated = true; logger.error("plugin broke the protocol: killing it", metadata: ["reason": .string(v)]); kill(reason: v) }
            }
            if !violated && line.count > maxOutputBytes {
                violated = true
                kill(reason: "plugin wrote a line of more than \(maxOutputBytes) bytes on stdout")
            }
        }
        if !violated && !line.isEmpty {
            inner.withLock { s in if s.violation == nil { s.violation = "plugin died after writing half a line: \(TaskMessage.preview(line, limit: 80))" } }
        }
        // EOF: the process is gone (or has closed stdout). Fail whatever is in flight.
        let (calls, hs, waiters) = inner.withLock { s in
            s.ended = true
            defer { s.pending.removeAll(); s.handshake = nil; s.endWaiters.removeAll() }
            return (Array(s.pending.values), s.handshake, s.endWaiters)
        }
        let failure = crashFailure(inFlight: true)
        for c in calls { c.resolve(.failure(failure)) }
        hs?.resume(returning: .failure(TaskFailure(type: "PluginCrashed", message: "plugin exited before answering initialize: \(endReason)")))
        for w in waiters { w.resume() }
    }

    /// Handles one stdout line; returns a protocol-violation reason, or nil.
    private func handle(_ bytes: [UInt8], quiet: Bool = false) -> String? {
        if bytes.allSatisfy({ $0 == 32 || $0 == 13 || $0 == 9 }) { return nil }
        guard let msg = try? JSONValue(parsing: bytes), msg.objectValue != nil else {
            return "plugin wrote something that is not a JSON-RPC message on stdout (stdout is reserved for the protocol; log to stderr): \(TaskMessage.preview(bytes, limit: 120))"
        }
        if msg["method"] != nil { return nil }   // a notification from the plugin: ignored
        guard let idValue = msg["id"] else { return "plugin wrote a JSON-RPC message without an id: \(TaskMessage.preview(bytes, limit: 120))" }
        if idValue.isNull { return nil }   // an error about a line it could not parse: nothing to match
        let outcome: Result<JSONValue, TaskFailure>
        if let r = msg["result"] {
            outcome = .success(r)
        } else if let e = msg["error"] {
            let code = e["code"]?.intValue ?? -32000
            let data = e["data"] ?? .null
            let message = e["message"]?.stringValue ?? e.serialized()
            switch code {
            case -32800: outcome = .failure(TaskFailure(type: "TaskCancelled", message: message, module: "celerity"))
            case -32601:
                let type = data["type"]?.stringValue ?? "NotRegistered"
                outcome = .failure(TaskFailure(type: type, message: message, module: TaskFailure.pluginModule(type: type, declared: data["module"])))
            case -32602, -32600, -32700:
                let type = data["type"]?.stringValue ?? "TypeError"
                outcome = .failure(TaskFailure(type: type, message: message, module: TaskFailure.pluginModule(type: type, declared: data["module"])))
            default:
                let type = data["type"]?.stringValue ?? "PluginError"
                outcome = .failure(TaskFailure(type: type, message: message, module: TaskFailure.pluginModule(type: type, declared: data["module"]),
                                               traceback: data["traceback"]?.stringValue, retryable: data["retryable"]?.boolValue ?? false))
            }
        } else {
            return "plugin answered id \(idValue.serialized()) with neither 'result' nor 'error'"
        }
        if idValue == .int(0), let hs = inner.withLock({ s -> CheckedContinuation<Result<JSONValue, TaskFailure>, Never>? in defer { s.handshake = nil }; return s.handshake }) {
            hs.resume(returning: outcome)
            return nil
        }
        if idValue.stringValue == "shutdown" { return nil }
        enum Match { case call(PendingReply, settleHere: Bool), duplicate, unknown }
        let match: Match = inner.withLock { s in
            guard let id = idValue.stringValue else { return .unknown }
            if let c = s.pending.removeValue(forKey: id) {
                s.recent.append(id)
                if s.recent.count > 256 { s.recent.removeFirst(s.recent.count - 256) }
                // Counted here, with the call leaving `pending`: a call placed on this
                // process right after (its result may already be out) sees it draining.
                s.calls += 1
                if let m = maxCalls, s.calls >= m { s.draining = true }
                // Settled here only when no other call of this process is in flight: a
                // process that is kept busy (pipelined calls) leaves storing to the batches.
                guard quiet, s.pending.isEmpty, c.onSuccess != nil, case .success = outcome else { return .call(c, settleHere: false) }
                s.settling += 1
                return .call(c, settleHere: true)
            }
            return s.recent.contains(id) ? .duplicate : .unknown
        }
        switch match {
        case let .call(c, settleHere):
            if settleHere, let onSuccess = c.onSuccess, case let .success(value) = outcome {
                onSuccess(value)
                inner.withLock { $0.settling -= 1 }
            }
            c.resolve(outcome)
            return nil
        case .duplicate:
            // A second answer to a call already answered: harmless, the first one counts.
            return nil
        case .unknown:
            return "plugin answered id \(idValue.serialized()), which was never sent to it (a wrong id)"
        }
    }

    /// Whether a process has ended: gone, or a zombie not reaped yet (swift-subprocess reaps
    /// it only once the body that serves it returns). From /proc (Linux).
    static func hasExited(_ pid: pid_t) -> Bool {
        if Glibc.kill(pid, 0) != 0 && errno == ESRCH { return true }
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        // "pid (comm) S ...": the state follows the last ')' (comm may hold parentheses).
        return stat[stat.index(after: close)...].dropFirst().first == "Z"
    }

    /// Resident memory of a process, from /proc (Linux).
    static func residentBytes(_ pid: pid_t) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let kb = line.split(separator: " ").dropFirst().first.flatMap { Int($0) }
            return kb.map { $0 * 1024 }
        }
        return nil
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
