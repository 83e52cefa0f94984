import Foundation
import Logging
import RedisClient
import Synchronization

// One message on the usual path: triage, the lease check, a slot, the run, the outcome
// (docs/architecture.md, steps 2-5).

extension Worker {
    /// `decoded`: the message as the fast read found it (no unknown headers; `retry` reads
    /// the full message again), or nil to decode it here.
    /// `admitted`: the gate's verdict when the batch asked it already (`work`).
    /// `receivedAt`: when its batch was fetched (for the task history).
    func process(_ raw: [UInt8], queue: String, generation: Int, slots: Slots, decoded: TaskMessage? = nil, admitted: TaskGate.Verdict? = nil,
                 receivedAt: Double? = nil) async {
        let message: TaskMessage
        do throws(ProtocolError) {
            var m: TaskMessage
            if let decoded { m = decoded } else { m = try TaskMessage.decode(raw) }
            m.receivedAt = receivedAt
            message = m
        } catch {
            if let (refusedCall, failure) = error.refused {
                // A body it will not decode, of a call it can name: FAILURE for the client
                // (instead of a wait that never ends), then the dead letters.
                var call = refusedCall
                if call.queue.isEmpty { call.queue = queue }
                let log = TaskLog(base: logger, id: call.id, task: call.task)
                log.error("message refused: FAILURE stored, message moved to the dead-letter list", metadata: ["queue": .string(queue), "reason": .string(error.message)])
                await dispose(Outcome(result: .refused(failure, reason: "malformed message: \(error.message)"), message: call, spec: manifest.tasks[call.task]),
                              raw, queue: queue, log)
                return
            }
            let moved: Void?? = try? await withRedisRetry("dead-letter") { try await self.broker.deadLetter(raw, queue: queue, reason: "malformed message: \(error.message)") }
            if moved != nil && moved! != nil {
                logger.error("malformed message moved to the dead-letter list", metadata: ["queue": .string(queue), "reason": .string(error.message)])
            } else {
                logger.error("malformed message could not be dead-lettered yet; it stays in the processing list", metadata: ["queue": .string(queue)])
            }
            return
        }
        let log = TaskLog(base: logger, id: message.id, task: message.task)
        let spec: TaskSpec, handler: any TaskHandler
        let table = currentTable
        switch triage(message, in: table) {
        case .expired:
            log.info("task expired before it ran: REVOKED")
            await releasePlaceIfCapped(message, log)
            await dispose(Outcome(result: .revoked(.revoked("expired")), message: message, spec: manifest.tasks[message.task]), raw, queue: queue, log)
            return
        case let .parked(eta):
            if admitted != nil { await releasePlaceIfCapped(message, log) }
            if events.isEnabled { events.received(message) }
            log.debug("task has a future eta: parked in the delayed set", metadata: ["eta": .string(CeleryDate.format(eta))])
            _ = try? await withRedisRetry("defer") { try await self.broker.deferMessage(raw, listKey: Keys.queue(queue, priority: message.priority), until: eta) }
            return
        case .revoked:
            log.info("task was revoked before it ran: REVOKED")
            await releasePlaceIfCapped(message, log)
            await dispose(Outcome(result: .revoked(.revoked("revoked")), message: message, spec: manifest.tasks[message.task]), raw, queue: queue, log)
            return
        case .unknown:
            if admitted != nil { await releasePlaceIfCapped(message, log) }
            log.warning("unknown task: FAILURE NotRegistered")
            await dispose(Outcome(result: .notRegistered, message: message, spec: nil), raw, queue: queue, log)
            return
        case .unavailable:
            if admitted != nil { await releasePlaceIfCapped(message, log) }
            // A plugin in a crash loop: hand the message back instead of burning it.
            await dispose(Outcome(result: .handBack, message: message, spec: manifest.tasks[message.task]), raw, queue: queue, log)
            return
        case let .run(s, h):
            (spec, handler) = (s, h)
            if events.isEnabled { events.received(message) }
        }
        // A global rate limit or concurrency cap (`TaskGate`): its turn and its place first,
        // holding no execution slot; a long wait happens in Redis, not here.
        var holdsPlace = false
        if let admitted {
            guard let place = await follow(admitted, raw, message, log) else { return }
            holdsPlace = place
        } else if gate.isGated(message.task) {
            guard let place = await admit(raw, message, queue: queue, log) else { return }
            holdsPlace = place
        }
        await start(raw, message, spec: spec, handler: handler, table: table.generation, queue: queue, generation: generation, slots: slots, log)
        if holdsPlace { await releasePlace(message, log) }
    }

    /// The rest of `process`: an execution slot, the checks that may have changed while the
    /// message waited, the run and its outcome. `table`: the generation of the task table
    /// `spec` and `handler` come from.
    func start(_ raw: [UInt8], _ message: TaskMessage, spec: TaskSpec, handler: any TaskHandler, table: Int, queue: String, generation: Int,
               slots: Slots, _ log: TaskLog) async {
        var (spec, handler) = (spec, handler)
        // Prefetched messages wait here for an execution slot (the worker's concurrency).
        _ = await slots.acquire()
        // A reload while it waited: it runs with the handler in place now (it has not started).
        if tableGeneration.load(ordering: .acquiring) != table, !MapTask.names.contains(message.task) {
            switch triage(message, in: currentTable) {
            case let .run(s, h):
                (spec, handler) = (s, h)
            case .unknown:
                slots.release()
                log.warning("task removed by a reload before it started: FAILURE NotRegistered")
                await dispose(Outcome(result: .notRegistered, message: message, spec: nil), raw, queue: queue, log)
                return
            case .unavailable:
                slots.release()
                await dispose(Outcome(result: .handBack, message: message, spec: spec), raw, queue: queue, log)
                return
            case .expired, .parked, .revoked:
                break   // checked below or when it ran before; it keeps what it had
            }
        }
        if isStopping {
            // Not started when the stop came: back to the head of its queue for another worker.
            slots.release()
            await requeue(raw, queue: queue, message: message, log, why: "worker stopping: message not started, returned to the head of its queue")
            return
        }
        if revocations.contains(message.id) {
            // Revoked while it waited for a slot (`celery control revoke` of a reserved task).
            slots.release()
            log.info("task was revoked before it ran: REVOKED")
            await dispose(Outcome(result: .revoked(.revoked("revoked")), message: message, spec: spec), raw, queue: queue, log)
            return
        }
        // Fetched before a lapse of the lease (a stall, a cut from Redis): another worker
        // may have taken it back meanwhile; start it only if it is still in our list.
        if !lease.covers(generation), await !ownsStill(raw, queue: queue, message: message, log) {
            slots.release()
            return
        }
        // Handed back from a worker that was taken for dead (a stall, a cut from Redis) but
        // went on to finish it: its SUCCESS is stored, so it is not run a second time.
        if message.headers.contains(where: { $0.key == "celerity_redeliveries" }), await successStored(message) {
            slots.release()
            log.warning("not run again: handed back after its worker was taken for dead, but that worker finished it (SUCCESS is stored); acked")
            _ = try? await withRedisRetry("ack") { try await self.broker.ack(raw) }
            return
        }
        if spec.trackStarted { await storeStarted(message, spec: spec, log) }
        if events.isEnabled { events.started(message.id) }
        log.debug("task started")
        // Its argument schema (TaskParams), checked once before any handler runs: a bad call
        // fails with a TypeError, as the arity check of a built-in does.
        if let params = spec.params, let problem = params.validate(task: message.task, args: message.args, kwargs: message.kwargs) {
            slots.release()
            log.info("arguments refused by the task's schema: FAILURE TypeError", metadata: ["error": .string(problem.message)])
            await settle(.failure(problem.failure), message, raw, spec: spec, queue: queue, log, runtime: nil)
            return
        }
        let (limit, soft) = limits(message, spec)
        if let body = handler.inlineBody, soft == nil {
            // A tiny built-in: run here, no thread hop, nothing to interrupt.
            let call = taskCall(message, queue: queue)
            let began = ContinuousClock.now
            let outcome = Result<JSONValue, any Error> { try body(call) }
            let runtime = .now - began
            slots.release()
            await settle(outcome, message, raw, spec: spec, queue: queue, log, runtime: runtime)
            return
        }
        let l = launch(message, raw, spec: spec, handler: handler, queue: queue, log, limit: limit, soft: soft)
        let isPlugin = spec.handler.isPlugin
        let runs = handler
        await runAndSettle(l, slots: slots) { try await self.run(runs, l.call, limit: limit, isPlugin: isPlugin) }
    }

    /// Whether the Redis result backend holds a SUCCESS for `message` (false for any other
    /// backend, or when Redis cannot tell: then the task runs, at least once).
    func successStored(_ message: TaskMessage) async -> Bool {
        guard let backend = results as? RedisResultBackend else { return false }
        guard let reply = try? await backend.redis.call("GET", Keys.resultMeta(message.id)), let doc = reply.bytes,
              let meta = try? ResultMeta.decode(doc) else { return false }
        return meta.state == .success
    }

    /// Celery's `track_started`: STARTED, with this worker's pid and node name, stored before
    /// the task runs (unless its result is not stored). Never over a stored SUCCESS: the Redis
    /// backend's script refuses that. A failed store is logged; the task runs all the same.
    func storeStarted(_ message: TaskMessage, spec: TaskSpec, _ log: TaskLog) async {
        guard spec.storeResult && !message.ignoreResult else { return }
        do {
            try await results.store(.started(message.id, pid: Int(getpid()), hostname: config.node), for: message)
        } catch {
            log.warning("STARTED not stored", metadata: ["error": .string("\(error)")])
        }
    }

    /// What a handler gets for `message`.
    func taskCall(_ message: TaskMessage, queue: String, deadline: Date? = nil) -> TaskCall {
        TaskCall(id: message.id, task: message.task, args: message.args, kwargs: message.kwargs, queue: queue,
                 attempt: message.retries + 1, deadline: deadline, rootID: message.rootID, parentID: message.parentID,
                 retries: message.retries, worker: config.node)
    }

    /// What becomes of a message before it may run.
    enum Triage {
        case expired, parked(Date), revoked, unknown, unavailable
        case run(TaskSpec, any TaskHandler)
        var runs: Bool { if case .run = self { return true } else { return false } }
    }

    func triage(_ message: TaskMessage, in table: TaskTable? = nil) -> Triage {
        if let expires = message.expires, expires < Date() { return .expired }
        if let eta = message.eta, eta.timeIntervalSinceNow > 0.01 { return .parked(eta) }
        if revocations.contains(message.id) { return .revoked }
        let table = table ?? currentTable
        guard let spec = table.manifest.tasks[message.task], let handler = table.handlers[message.task] else {
            // Celery's canvas tasks (`task.map`, `task.starmap`, `task.chunks`) run anywhere.
            guard MapTask.names.contains(message.task) else { return .unknown }
            return .run(TaskSpec(name: message.task, queue: message.queue, handler: .builtin(message.task)),
                        MapTask(star: message.task == "celery.starmap", handlers: table.handlers, hardLimit: { [self] name in
                            table.manifest.tasks[name].flatMap { limits(TaskMessage(id: "", task: name, queue: ""), $0).hard }
                        }, params: { name in table.manifest.tasks[name]?.params }))
        }
        if let pool = handler as? PersistentPlugin, pool.unavailability != nil { return .unavailable }
        return .run(spec, handler)
    }

    /// The hard and soft time limits of a message (the task's, as the manifest or
    /// `time_limit` set them, or the message's if shorter).
    func limits(_ message: TaskMessage, _ spec: TaskSpec) -> (hard: Double?, soft: Double?) {
        var limit = spec.timeLimit
        var soft = spec.softTimeLimit
        if let set = runtime.timeLimits(for: spec.name) { (limit, soft) = (set.hard, set.soft) }
        if let h = message.hardTimeLimit, h > 0 { limit = min(limit ?? h, h) }
        if let sl = message.softTimeLimit, sl > 0 { soft = min(soft ?? sl, sl) }
        if let s = soft, let l = limit, s >= l { soft = nil }   // a soft limit past the hard one never strikes
        // At most a year (a message's 1e300 must not overflow the timers' milliseconds).
        let year = 365.0 * 86_400
        return (limit.map { $0.isFinite ? min($0, year) : year }, soft.map { $0.isFinite ? min($0, year) : year })
    }

    /// A message about to run (its execution slot taken): its call and its in-flight entry.
    struct Launch: Sendable {
        let message: TaskMessage
        let raw: [UInt8]
        let spec: TaskSpec
        let queue: String
        let log: TaskLog
        let call: TaskCall
        let entry: InFlight
        let token: Int
        let started: ContinuousClock.Instant
    }

    /// Builds the call and registers the message as in flight (undo with `unlaunch`).
    func launch(_ message: TaskMessage, _ raw: [UInt8], spec: TaskSpec, handler: any TaskHandler, queue: String, _ log: TaskLog,
                        limit: Double?, soft: Double?) -> Launch {
        var call = taskCall(message, queue: queue, deadline: limit.map { Date().addingTimeInterval($0) })
        call.softDeadline = soft.map { Date().addingTimeInterval($0) }
        stats.withLock { $0.active += 1 }
        let entry = InFlight(raw: raw, taskID: message.id, listKey: Keys.queue(queue, priority: message.priority), cancellation: call.cancellation)
        if handler is PersistentPlugin && completer.storesOnBroker {
            // A quiet answer is stored and acked on the plugin's reader thread, where it
            // arrives: two hand-offs less on the result's way (reader to the cooperative pool,
            // pool to a Redis connection's thread: ~35 µs each here, seen with `perf sched`).
            // Only SUCCESS, only when nobody revoked or handed the task back meanwhile, only
            // through an idle completer lane; anything else takes the usual path.
            let started = ContinuousClock.now
            call.settleOnAnswer = { value in
                // The same decision as every other outcome; only its `.complete` is written here.
                let outcome = Outcome(result: .success(value), message: message, spec: spec, runtime: .now - started)
                let disposal = self.decide(outcome)
                guard case let .complete(meta) = disposal else { return }
                guard entry.fate.withLock({ f in guard f == .running else { return false }; f = .settling; return true }) else { return }
                let item = Completer.Item(raw: raw, store: self.completionStore(meta, message), of: message)
                switch self.completer.writeNow([item]) {
                case .written:
                    entry.settled.store(true, ordering: .releasing)
                    self.record(outcome, disposal)
                case .notTried:
                    entry.fate.withLock { f in if f == .settling { f = .running } }
                case .failed:
                    // Perhaps acked already: stays `settling` (never handed back or revoked
                    // now); the run task returns the outcome and it is settled the usual way.
                    break
                }
            }
        }
        let token = inflightCounter.wrappingAdd(1, ordering: .relaxed).newValue
        inflight.withLock { $0[token] = entry }
        return Launch(message: message, raw: raw, spec: spec, queue: queue, log: log, call: call, entry: entry, token: token, started: .now)
    }

    func unlaunch(_ l: Launch) {
        inflight.withLock { _ = $0.removeValue(forKey: l.token) }
        stats.withLock { $0.active -= 1 }
    }

    /// Runs `body` (the handler) for a launched message, then stores its outcome and acks.
    func runAndSettle(_ l: Launch, slots: Slots, body: @escaping @Sendable () async throws -> JSONValue) async {
        let (message, raw, spec, queue, log, entry) = (l.message, l.raw, l.spec, l.queue, l.log, l.entry)
        let ran = { @Sendable in
            slots.release()
            self.unlaunch(l)
        }
        // The handler runs in a task of its own, so a revocation with terminate (or a cold
        // stop) can cancel it. When it returns and nobody revoked or handed it back meanwhile,
        // that task also stores the outcome: the store then leaves from where the answer
        // resumed, not after one more hand-off back to this task (tens of µs per call on a
        // 2-core machine, measured with `perf sched` on a persistent plugin's calls).
        let runTask = Task { () -> Result<JSONValue, any Error>? in
            let outcome: Result<JSONValue, any Error>
            do { outcome = .success(try await body()) } catch { outcome = .failure(error) }
            let runtime = ContinuousClock.now - l.started
            if entry.settled.load(ordering: .acquiring) {
                ran()   // stored, acked and recorded on the plugin's reader thread
                log.debug("task succeeded", metadata: Self.runtimeMetadata(runtime))
                return nil
            }
            let settleHere = entry.fate.withLock { f -> Bool in
                guard f == .running else { return false }
                f = .settling
                return true
            }
            guard settleHere else { return outcome }
            ran()
            await self.settle(outcome, message, raw, spec: spec, queue: queue, log, runtime: runtime)
            return nil
        }
        // A revocation or a stop that came before the task was known here could not cancel
        // it: they mark the fate first, then look for the task, so one side sees the other.
        let late = entry.task.withLock { t -> Bool in
            t = runTask
            return entry.fate.withLock { $0 == .revoked || $0 == .abandoned }
        }
        if late { runTask.cancel() }
        guard let outcome = await runTask.value else { return }
        ran()

        switch entry.fate.withLock({ $0 }) {
        case .abandoned:
            return   // handed back to the queue by a shutdown; whatever it produced is dropped
        case .revoked:
            log.info("task revoked while running: terminated, REVOKED")
            var f = TaskFailure.revoked("revoked")
            let signal = entry.terminatedBy.load(ordering: .relaxed)
            f.message = signal == 0 || signal == SIGTERM ? "revoked (terminated)" : "revoked (terminated by \(Signals.name(signal)))"
            await dispose(Outcome(result: .revoked(f), message: message, spec: spec, runtime: .now - l.started), raw, queue: queue, log)
            return
        case .running, .settling:
            // `settling`: a write on the reader thread failed (see `launch`). (`running`
            // cannot be seen here: the run task settles those itself.)
            break
        }
        await settle(outcome, message, raw, spec: spec, queue: queue, log, runtime: .now - l.started)
    }

    /// Stores the outcome of a run (or retries it) and acks.
    func settle(_ result: Result<JSONValue, any Error>, _ message: TaskMessage, _ raw: [UInt8], spec: TaskSpec, queue: String,
                        _ log: TaskLog, runtime: Duration?) async {
        let outcome: Outcome.Result
        switch result {
        case let .success(value):
            log.debug("task succeeded", metadata: Self.runtimeMetadata(runtime))
            outcome = .success(value)
        case let .failure(f as TaskFailure) where f.disposition == .handBack:
            outcome = .handBack
        case let .failure(error):
            var f = (error as? TaskFailure) ?? TaskFailure(type: String(describing: type(of: error)), message: "\(error)", module: "celerity")
            if f.traceback == nil, case let .builtin(name) = spec.handler {
                f.traceback = TaskFailure.builtinTraceback(task: message.task, id: message.id, builtin: name, f)
            }
            // Every failure is stored and logged cut to size (TaskFailure+Limits).
            outcome = .failure(f.capped())
        }
        await dispose(Outcome(result: outcome, message: message, spec: spec, runtime: runtime), raw, queue: queue, log)
    }

    /// Stores RETRY (as Celery does: same task id) and parks the next attempt in the delayed
    /// set, removing this one from the processing list in the same script.
    func retry(_ message: TaskMessage, _ raw: [UInt8], spec: TaskSpec, failure: TaskFailure, _ log: TaskLog) async {
        let attempt = message.retries + 1
        let delay = spec.retryDelay(attempt: attempt)
        // The full message (the fast read keeps no unknown headers), so the retry carries them.
        var next = (try? TaskMessage.decode(raw)) ?? message
        next.retries = attempt
        next.eta = Date().addingTimeInterval(delay)
        next.parentID = message.id
        next.headers = message.headers.filter { $0.key != "celerity_redeliveries" && $0.key != "redelivered" }
        var f = failure
        f.traceback = "celerity: Retry in \(String(format: "%.2f", delay))s: \(failure.type)('\(failure.message)')\n" + (failure.traceback ?? "")
        log.warning("task failed; retrying", metadata: ["error": .string(failure.description), "retry": .string("\(attempt)/\(spec.retries)"),
                                                         "retry_in_s": .string(String(format: "%.2f", delay))])
        let retryMeta = ResultMeta.failure(message.id, f, state: .retry)
        let retryRaw = next.encode()
        let due = next.eta!
        let listKey = Keys.queue(message.queue.isEmpty ? spec.queue : message.queue, priority: message.priority)
        if spec.storeResult && !message.ignoreResult {
            _ = try? await withRedisRetry("store result", policy: .throughGrace) { try await self.results.store(retryMeta, for: message) }
        }
        _ = try? await withRedisRetry("ack", policy: .throughGrace) {
            try await self.broker.scheduleRetry(raw, retryRaw: retryRaw, listKey: listKey, due: due)
        }
    }

    static func ms(_ d: Duration) -> String {
        let c = d.components
        return String(format: "%.3f", Double(c.seconds) * 1000 + Double(c.attoseconds) / 1e15)
    }

    /// Asks the gate (`TaskGate`) whether the message may start. nil: not here, not now (its
    /// wait goes on in Redis: parked until its turn, or waiting for a place under the cap; or
    /// another worker took it back). Else whether it holds a place under a cap (to release).
    func admit(_ raw: [UInt8], _ message: TaskMessage, queue: String, _ log: TaskLog) async -> Bool? {
        let listKey = Keys.queue(queue, priority: message.priority)
        let verdict: TaskGate.Verdict?
        do {
            verdict = try await withRedisRetry("rate limit / concurrency cap") {
                try await self.gate.admit(raw, task: message.task, id: message.id, listKey: listKey)
            }
        } catch {
            // Refused (an ACL without the gate's keys, a script error): the limit cannot be
            // kept, so the message does not run here; it goes back after a pause.
            log.error("rate limit / concurrency cap could not be checked; message returned to its queue", metadata: ["error": .string("\(error)")])
            try? await Task.sleep(for: .seconds(1))
            await requeue(raw, queue: queue, message: message, log, why: "rate limit / concurrency cap unavailable: message returned to the head of its queue")
            return nil
        }
        // nil: stopping while Redis was away (it stays in the processing list).
        guard let verdict else { return nil }
        return await follow(verdict, raw, message, log)
    }

    /// Does what the gate decided: nil when the message does not run here now, else whether
    /// it holds a place under a cap.
    func follow(_ verdict: TaskGate.Verdict, _ raw: [UInt8], _ message: TaskMessage, _ log: TaskLog) async -> Bool? {
        let capped = gate.policies[message.task]?.cap != nil
        switch verdict {
        case .go:
            return capped
        case let .wait(d):
            log.debug("rate limit: waiting for its turn", metadata: ["wait_ms": .string(Self.ms(d))])
            try? await Task.sleep(for: d)
            return capped
        case .parked:
            broker.forget(raw)
            log.debug("rate limit: parked in Redis until its turn")
            return nil
        case .waiting:
            broker.forget(raw)
            log.debug("concurrency cap reached: waiting in Redis for a place")
            return nil
        case .gone:
            broker.forget(raw)
            return nil
        }
    }

    /// Frees the place a capped task held (it ran, or will not run).
    func releasePlace(_ message: TaskMessage, _ log: TaskLog) async {
        do {
            _ = try await withRedisRetry("concurrency cap release", policy: .throughGrace) {
                try await self.gate.release(task: message.task, id: message.id)
            }
        } catch {
            // Its lease lapses within `leaseSeconds` and the place comes back then.
            log.warning("concurrency cap place not released; it comes back when its lease lapses", metadata: ["error": .string("\(error)")])
        }
    }

    func releasePlaceIfCapped(_ message: TaskMessage, _ log: TaskLog) async {
        if gate.policies[message.task]?.cap != nil { await releasePlace(message, log) }
    }

    /// Runs a handler; built-ins are abandoned (and fail) at the hard limit, plugins enforce it
    /// themselves by killing their process group.
    func run(_ handler: any TaskHandler, _ call: TaskCall, limit: Double?, isPlugin: Bool) async throws -> JSONValue {
        // Built-ins learn of the soft limit through call.cancellation (plugins get signals).
        // The timer lets go of its closure as soon as the handler returns.
        var softTimer: OneShotTimer?
        if !isPlugin, let soft = call.softDeadline {
            let flag = call.cancellation
            softTimer = OneShotTimer(after: max(soft.timeIntervalSinceNow, 0)) { flag.set() }
        }
        defer { softTimer?.cancel() }
        guard let limit, !isPlugin else { return try await handler.run(call) }
        guard let value = try await withDeadline(.milliseconds(Int(limit * 1000)), operation: { try await handler.run(call) }) else {
            throw TaskFailure.timeLimit(limit)
        }
        return value
    }

    func requeue(_ raw: [UInt8], queue: String, message: TaskMessage, _ log: TaskLog,
                         why: String = "handler unavailable: message returned to the head of its queue") async {
        log.warning("\(why)")
        _ = try? await withRedisRetry("requeue") { try await self.broker.requeue(raw, listKey: Keys.queue(queue, priority: message.priority)) }
    }
}
