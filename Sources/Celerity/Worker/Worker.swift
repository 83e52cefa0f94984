import Foundation
import Logging
import RedisClient
import ServiceLifecycle
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
    init(raw: [UInt8], taskID: String, listKey: String) {
        self.raw = raw
        self.taskID = taskID
        self.listKey = listKey
    }
}

/// A Celerity worker: consumes queues, runs handlers concurrently, stores results, acks.
///
/// Lifecycle (a swift-service-lifecycle `Service`): on graceful shutdown (SIGTERM/SIGINT via
/// `ServiceGroup`) it stops fetching, lets in-flight tasks finish (up to `shutdownGrace`),
/// removes its heartbeat and returns. Anything not acked stays in its processing list and
/// is requeued when a worker of the same name starts again.
public final class Worker: Service, Sendable {
    public let config: WorkerConfiguration
    public let manifest: Manifest
    public let logger: Logger
    let broker: WorkerBroker
    let results: any ResultBackend
    /// Batched result writes + acks (the hot path).
    let completer: Completer
    let handlers: [String: any TaskHandler]
    /// Persistent plugin process pools, supervised for the worker's lifetime.
    let persistentPools: [PersistentPlugin]
    let poolsByQueue: [String: [PersistentPlugin]]
    /// When a stop was requested (nil while running).
    let stopRequested: StopFlag
    let stats = Mutex(Stats())
    let startedAt = Date()

    struct Stats { var processed = 0; var failed = 0; var active = 0; var retried = 0 }
    /// Messages being run now (for warm/cold shutdown and revoke --terminate).
    let inflight = Mutex<[Int: InFlight]>([:])
    let inflightCounter = Atomic<Int>(0)
    /// Revoked task ids known to this worker (refreshed from Redis twice a second).
    let revocations: Revocations
    let coldStop = Mutex(false)
    let stopSignals = Atomic<Int>(0)
    /// How long the processing list is surely this worker's (renewed by each heartbeat).
    let lease = Lease()
    /// Hands back messages stranded in the processing list by lost fetch replies.
    let strays: StrayAudit
    /// Logs refused permissions of the background duties (once, then rarely).
    let dutyAlarm = DutyAlarm()

    /// Batches of results written at once (each flusher its own connection), and fetch loops
    /// per queue: two of each, so a round trip under way never leaves Redis or the worker idle.
    static let completerLanes = 2
    static let fetchersPerQueue = 2
    /// Prefetch room of a queue of inline built-ins only (fetched 32 at a time: 8 batches in
    /// flight). Larger rooms measured no faster and made each LREM ack scan further.
    static let lightRoom = 256

    /// Builds a worker for the tasks of `manifest` on `config.queues`, with built-ins from `builtins`.
    public init(config: WorkerConfiguration, manifest: Manifest, builtins: BuiltinRegistry, logger: Logger) throws(ManifestError) {
        self.config = config
        self.manifest = manifest
        self.logger = logger
        self.broker = WorkerBroker(url: config.broker, node: config.node)
        self.strays = StrayAudit(broker: broker, logger: logger)
        self.revocations = Revocations(broker: broker, alarm: dutyAlarm, logger: logger)
        var separateResults: Redis?
        switch config.resultBackend.kind {
        case let .redis(urlString):
            let url: RedisURL
            do { url = try RedisURL(string: urlString) } catch { throw ManifestError(nil, "result backend: \(error.message)") }
            if url != config.broker { separateResults = Redis(url: url, label: "results-\(config.node)") }
            results = RedisResultBackend(redis: separateResults ?? broker.control, expires: config.resultBackend.expires)
        case .sameAsBroker:
            results = RedisResultBackend(redis: broker.control, expires: config.resultBackend.expires)
        case .rpc:
            results = RPCResultBackend(redis: broker.control)
        case .none:
            results = NoResultBackend()
        }
        // Its own connections: a batch in flight must not wait behind heartbeats or sweeps.
        let stop = StopFlag(grace: config.shutdownGrace)
        stopRequested = stop
        let lanes = 0..<Worker.completerLanes
        completer = Completer(processingKey: broker.processingKey, held: broker.held, brokers: lanes.map { Redis(url: config.broker, label: "complete-\($0)-\(config.node)") },
                              resultRedis: separateResults.map { r in lanes.map { Redis(url: r.url, label: "complete-results-\($0)-\(config.node)") } },
                              ttl: config.resultBackend.expires, stop: stop, logger: logger)
        var hs: [String: any TaskHandler] = [:]
        var pools: [PluginSpec: PersistentPlugin] = [:]
        let served = manifest.taskOrder.compactMap { manifest.tasks[$0] }.filter { config.queues.contains($0.queue) }
        for spec in served {
            switch spec.handler {
            case let .builtin(b):
                guard let h = builtins.handlers[b] else {
                    throw ManifestError(manifest.path, "task '\(spec.name)' names unknown built-in '\(b)' (known: \(builtins.names.sorted().joined(separator: ", ")))")
                }
                hs[spec.name] = h
            case let .plugin(p):
                switch p.mode {
                case .oneshot:
                    hs[spec.name] = OneShotPlugin(spec: p, timeLimit: spec.timeLimit, logger: logger)
                case let .persistent(options):
                    // Tasks naming the same program and options share one pool of processes.
                    if pools[p] == nil {
                        let names = served.filter { $0.handler == .plugin(p) }.map(\.name)
                        pools[p] = PersistentPlugin(spec: p, options: options, tasks: names, worker: config.node, queue: spec.queue, logger: logger)
                    }
                    hs[spec.name] = pools[p]!
                }
            }
        }
        handlers = hs
        persistentPools = Array(pools.values)
        var byQueue: [String: [PersistentPlugin]] = [:]
        for spec in served { if case let .plugin(p) = spec.handler, let pool = pools[p] { byQueue[spec.queue, default: []].append(pool) } }
        poolsByQueue = byQueue
    }

    /// Asks the worker to stop fetching and finish (what SIGTERM does through a ServiceGroup).
    public func requestStop() { stopRequested.request() }

    /// Cold stop: tasks in flight are handed back to their queues now, without waiting.
    public func requestColdStop() {
        requestStop()
        coldStop.withLock { $0 = true }
    }
    var isColdStop: Bool { coldStop.withLock { $0 } }

    /// Counts stop signals (the CLI makes the second one cold); returns the count.
    public func countStopSignal() -> Int { stopSignals.add(1, ordering: .relaxed).newValue }
    var isStopping: Bool { stopRequested.isRequested }
    /// True once a stop was requested more than `shutdownGrace` seconds ago.
    var graceExpired: Bool { stopRequested.graceExpired }

    public func run() async throws {
        // A write to a connection that was just reset (Redis, a plugin's pipe) must fail with
        // EPIPE, not kill the worker.
        PipeWriter.ignoreSIGPIPE
        logger.info("worker starting", metadata: [
            "node": .string(config.node), "queues": .string(config.queues.joined(separator: ",")),
            "concurrency": .stringConvertible(config.concurrency), "broker": .string(config.broker.description),
            "tasks": .string(handlers.keys.sorted().joined(separator: ",")),
        ])
        try await withGracefulShutdownHandler {
            try await self.serve()
        } onGracefulShutdown: {
            self.logger.info("stop requested: no new tasks; finishing those in flight")
            self.requestStop()
        }
    }

    private func serve() async throws {
        // Connect (retrying with backoff while Redis is away) and claim the node name.
        guard try await waitForBroker() else { return }
        try await withRedisRetry("check permissions") { try await self.checkPermissions() }
        try await claimNodeName()
        let maxRedeliveries = manifest.maxRedeliveries
        if let (requeued, dead) = try await withRedisRetry("recover", { try await self.broker.redeliverAll(from: self.broker.processingKey, maxRedeliveries: maxRedeliveries) }),
           requeued + dead > 0 {
            logger.warning("handed back messages left in flight by an earlier run of this node", metadata: [
                "requeued": .stringConvertible(requeued), "dead_lettered_poison_pills": .stringConvertible(dead)])
        }
        let heartbeat = Heartbeat(broker: broker, lease: lease, ttl: config.heartbeatTTL, interval: .seconds(config.heartbeatSeconds),
                                  alarm: dutyAlarm, logger: logger) { self.heartbeatDocument() }
        try await withRedisRetry("heartbeat") { try await heartbeat.beat() }
        revocations.onTerminate { ids in self.terminate(ids) }
        _ = await revocations.once()
        // The background duties (Duties/): each a child task of this group, on Swift's pool.
        let stopping: @Sendable () -> Bool = { self.isStopping }
        let duties: [any Duty] = [
            heartbeat,
            ThroughputSummary(logger: logger) { self.stats.withLock { ThroughputSummary.Counts(processed: $0.processed, failed: $0.failed, retried: $0.retried) } },
            DelayedForwarder(broker: broker, interval: .milliseconds(250), alarm: dutyAlarm, logger: logger, isStopping: stopping),
            Recoverer(broker: broker, maxRedeliveries: manifest.maxRedeliveries, interval: .seconds(config.recoverySeconds),
                      alarm: dutyAlarm, logger: logger, isStopping: stopping),
            revocations,
        ]
        logger.info("worker ready", metadata: ["node": .string(config.node)])

        let slots = Slots(config.concurrency)
        // Messages fetched and not yet acked: Celery's prefetch (concurrency × multiplier).
        let prefetch = Slots(config.concurrency * max(config.prefetchMultiplier, 1))
        await withDiscardingTaskGroup { background in
            for lane in 0..<Worker.completerLanes { background.addTask { await self.completer.run(lane: lane) } }
            for duty in duties { background.addTask { await duty.run() } }
            background.addTask { await self.strays.run { self.isStopping } }
            background.addTask { await self.stopWatchdog() }
            for pool in self.persistentPools {
                background.addTask { await pool.supervise() }
            }
            await withDiscardingTaskGroup { fetchers in
                for q in self.config.queues {
                    // A queue whose every task is a tiny built-in gets a prefetch room of its own,
                    // large: its messages never wait for an execution slot, and the worker keeps
                    // many batches in flight (fetch, run, store) to keep Redis and both cores busy.
                    // `-c 1` promises one task at a time, in the order fetched (priority first):
                    // then every queue takes the usual path with a single fetch loop, since
                    // light batches and a second loop would run messages side by side.
                    let serial = self.config.concurrency == 1
                    let light = !serial && self.isLight(q)
                    let pool = light ? Slots(Worker.lightRoom) : prefetch
                    let room = light ? Worker.lightRoom : self.config.concurrency * max(self.config.prefetchMultiplier, 1)
                    for _ in 0..<(serial ? 1 : Worker.fetchersPerQueue) {
                        fetchers.addTask { await self.fetchLoop(queue: q, prefetch: pool, room: room, ownRoom: light, batchesInFlight: light ? 8 : 4, slots: slots) }
                    }
                }
            }
            // Every task has finished: write what is left, then stop the flusher.
            self.completer.close()
            // No task is in flight any more: plugin processes may go.
            for pool in self.persistentPools { await pool.shutdown() }
            background.cancelAll()
        }
        do { try await broker.clearHeartbeat() } catch { logger.warning("could not remove heartbeat: \(error)") }
        let s = stats.withLock { $0 }
        logger.info("worker stopped", metadata: ["processed": .stringConvertible(s.processed), "failed": .stringConvertible(s.failed)])
    }

    /// Waits until the broker answers PING, logging and backing off; false if stopped meanwhile.
    private func waitForBroker() async throws -> Bool {
        var backoff = Backoff(first: 0.2, max: 5)
        var logged = false
        while !isStopping {
            do {
                try await broker.control.ping()
                if logged { logger.info("broker is reachable again", metadata: ["broker": .string(config.broker.description)]) }
                return true
            } catch let e as RedisError where e.isPermissionDenied {
                // A wrong password or an ACL user without PING does not get better by retrying.
                throw WorkerPermissionError(message: "Redis at \(config.broker) refused access: \(e.message) (see docs/security.md)")
            } catch {
                let delay = backoff.next()
                if !logged || delay >= 5 { logger.error("broker unreachable; retrying", metadata: ["error": .string("\(error)"), "retry_in_s": .stringConvertible(delay)]) }
                logged = true
                try? await Task.sleep(for: .milliseconds(Int(delay * 1000)))
            }
        }
        return false
    }

    /// Runs a Redis operation, retrying with backoff while the connection is down. Returns nil
    /// only if the worker is asked to stop before it succeeds.
    /// How long a Redis operation is retried through a stop.
    enum RetryPolicy {
        /// Given up once a stop is requested (what is left is redone at the next start).
        case untilStopped
        /// Results and acks: retried through a stop, up to its grace period; what is not
        /// acked then stays in the processing list and is requeued at the next start.
        case throughGrace
    }

    @discardableResult
    func withRedisRetry<T: Sendable>(_ what: String, policy: RetryPolicy = .untilStopped, _ body: @Sendable () async throws -> T) async throws -> T? {
        var backoff = Backoff(first: 0.1, max: 5)
        while true {
            do { return try await body() } catch let e as RedisError where e.isConnectionProblem {
                let delay = backoff.next()
                logger.error("Redis unavailable during \(what); retrying", metadata: ["error": .string(e.description), "retry_in_s": .stringConvertible(delay)])
                try? await Task.sleep(for: .milliseconds(Int(delay * 1000)))
                if isStopping && (policy == .untilStopped || graceExpired) { return nil }
            }
        }
    }

    /// Refuses to run beside a live worker of the same name (they would share a processing list).
    private func claimNodeName() async throws {
        guard let first = try await withRedisRetry("claim node name", { try await self.broker.currentHeartbeat() }), let seen = first else { return }
        // The same name on this host with a process id that no longer exists: a dead run of
        // this worker (killed and restarted): no need to wait for its heartbeat to expire.
        if let hb = try? JSONValue(parsing: seen), hb["host"]?.stringValue == ProcessInfo.processInfo.hostName,
           let pid = hb["pid"]?.intValue, pid != Int(getpid()), kill(pid_t(pid), 0) != 0, errno == ESRCH {
            return
        }
        logger.warning("a heartbeat for this node name exists; waiting to see whether that worker is alive", metadata: ["node": .string(config.node)])
        let deadline = Date().addingTimeInterval(Double(config.heartbeatTTL) + 1)
        while Date() < deadline && !isStopping {
            try await Task.sleep(for: .milliseconds(500))
            guard let now = try await withRedisRetry("claim node name", { try await self.broker.currentHeartbeat() }), let current = now else { return }
            if current != seen {
                throw WorkerError("another worker named '\(config.node)' is alive (its heartbeat is being renewed); give this one another name with -n")
            }
        }
    }

    /// What this worker's heartbeat says of it (`celerity status` and the dashboard read it).
    func heartbeatDocument() -> JSONValue {
        let s = stats.withLock { $0 }
        return JSONValue.object([
            JSONMember("node", .string(config.node)), JSONMember("pid", .int(Int(getpid()))),
            JSONMember("host", .string(ProcessInfo.processInfo.hostName)),
            JSONMember("queues", .array(config.queues.map { .string($0) })), JSONMember("concurrency", .int(config.concurrency)),
            JSONMember("active", .int(s.active)), JSONMember("processed", .int(s.processed)),
            JSONMember("started", .string(CeleryDate.format(startedAt))), JSONMember("at", .string(CeleryDate.format(Date()))),
        ])
    }

    /// Whether every task routed to `queue` is an inline built-in (see `TaskHandler.inlineBody`).
    func isLight(_ queue: String) -> Bool {
        everyTask(of: queue) { $0?.inlineBody != nil }
    }

    /// Whether `queue` has tasks and `test` holds for the handler of each.
    private func everyTask(of queue: String, _ test: ((any TaskHandler)?) -> Bool) -> Bool {
        let tasks = manifest.tasks.values.filter { $0.queue == queue }
        return !tasks.isEmpty && tasks.allSatisfy { test(handlers[$0.name]) }
    }

    /// Whether every task routed to `queue` runs in a persistent plugin.
    func isPersistentPluginQueue(_ queue: String) -> Bool {
        everyTask(of: queue) { $0 is PersistentPlugin }
    }

    private func fetchLoop(queue: String, prefetch: Slots, room: Int, ownRoom: Bool, batchesInFlight: Int, slots: Slots) async {
        let fetcher = broker.makeFetcher(queue)
        var backoff = Backoff(first: 0.1, max: 5)
        let pluginQueue = isPersistentPluginQueue(queue)
        var lastGot = 1   // what the last fetch brought: the next one asks for up to twice that
        await withDiscardingTaskGroup { running in
            // `-c 1`: one task works the fetched messages one by one, in the order fetched,
            // while the loop fetches ahead (spawning a task per batch would race them).
            var inOrder: AsyncStream<(generation: Int, batch: [[UInt8]])>.Continuation?
            if config.concurrency == 1 {
                let (stream, feed) = AsyncStream.makeStream(of: (generation: Int, batch: [[UInt8]]).self)
                inOrder = feed
                running.addTask {
                    for await (generation, batch) in stream {
                        for raw in batch { await self.work([raw], queue: queue, generation: generation, prefetch: prefetch, slots: slots, inFetchLoop: false) }
                    }
                }
            }
            defer { inOrder?.finish() }
            var pausedFor: String?
            while !isStopping && !Task.isCancelled {
                // A handler of this queue in a crash loop: pause the queue instead of burning its tasks.
                if let why = poolsByQueue[queue]?.lazy.compactMap(\.unavailability).first {
                    if pausedFor == nil { logger.error("queue paused: a plugin handler of it is unavailable", metadata: ["queue": .string(queue), "reason": .string(why)]) }
                    pausedFor = why
                    try? await Task.sleep(for: .milliseconds(500))
                    continue
                }
                if pausedFor != nil {
                    logger.info("queue resumed", metadata: ["queue": .string(queue)])
                    pausedFor = nil
                }
                // Fetch in batches of a part of the prefetch room, so that a busy worker pays one
                // round trip per many messages and has several batches under way at once (one
                // being fetched, others being run or stored). A queue with a room of its own
                // waits until a whole batch is free; fetch loops that share a room take what is
                // free (waiting while holding part of a shared room could deadlock them).
                let most = max(1, room / batchesInFlight)
                var n = await prefetch.acquire(upTo: most)
                if ownRoom { while n < most && !isStopping { n += await prefetch.acquire(upTo: most - n) } }
                if isStopping { prefetch.release(n); break }
                let messages: [[UInt8]]
                // Read before the fetch: a lapse of the lease after this point makes the
                // messages of this fetch be checked against the list before they start.
                let generation = lease.generation
                do {
                    var got = try await broker.fetch(queue, using: fetcher, max: n, expect: lastGot * 2, block: nil)
                    if got.isEmpty {
                        // Nothing waiting: block for one message holding no slot of the room, then
                        // take a slot for it at once, even past the room (a worker may hold one
                        // message more than its room per fetch loop; the debt is paid back
                        // before other loops fetch again). Idle loops that sat on the room while
                        // they waited starved the busy queue of a multi-queue worker.
                        prefetch.release(n)
                        n = 0
                        if ownRoom && completer.storesOnBroker {
                            // A queue of tiny built-ins: the message that ends the wait is run and
                            // its result stored and acked right where it arrives.
                            let handled = try await broker.waitForOne(queue, using: fetcher, block: config.fetchBlockSeconds) { raw, session in
                                self.runAndStore(raw, queue: queue, generation: generation, session)
                            }
                            switch handled {
                            case nil:
                                got = []
                            case .stored?:
                                stats.withLock { $0.processed += 1 }
                                continue
                            case let .unstored(item)?:
                                // The write failed (Redis away): the completer retries it.
                                stats.withLock { $0.processed += 1 }
                                if await !completer.complete([item]) {
                                    logger.error("result not stored; message left unacked for redelivery")
                                }
                                continue
                            case let .failed(raw, outcome, quick, spec)?:
                                prefetch.take()
                                running.addTask { await self.settleQuickFailure(raw, outcome, quick, spec: spec, queue: queue, prefetch: prefetch) }
                                continue
                            case let .other(raw)?:
                                got = [raw]
                            }
                        } else if pluginQueue && inOrder == nil {
                            // A queue of persistent plugins: the message that ends the wait goes
                            // to its plugin right where it arrives.
                            let arrival = try await broker.waitForOne(queue, using: fetcher, block: config.fetchBlockSeconds) { raw, _ in
                                self.startOnArrival(raw, queue: queue, generation: generation, slots: slots)
                            }
                            switch arrival {
                            case nil:
                                got = []
                            case let .started(l, plugin, call)?:
                                prefetch.take()
                                running.addTask {
                                    await self.runAndSettle(l, slots: slots) { try await plugin.finish(call) }
                                    prefetch.release()
                                }
                                continue
                            case let .other(raw)?:
                                got = [raw]
                            }
                        } else {
                            got = try await broker.waitForOne(queue, using: fetcher, block: config.fetchBlockSeconds)
                        }
                        if !got.isEmpty { prefetch.take(); n = 1 }
                    }
                    messages = got
                    lastGot = max(messages.count, 1)
                    backoff.reset()
                } catch {
                    prefetch.release(n)
                    // Its reply may have been lost after Redis moved messages: look for strays.
                    strays.request()
                    let delay = backoff.next()
                    logger.error("fetch from queue failed; retrying", metadata: ["queue": .string(queue), "error": .string("\(error)"), "retry_in_s": .stringConvertible(delay)])
                    try? await Task.sleep(for: .milliseconds(Int(delay * 1000)))
                    continue
                }
                if messages.count < n { prefetch.release(n - messages.count) }
                if isStopping {
                    // Fetched while a stop was requested (a blocking fetch was under way): give them back.
                    await handBack(messages, queue: queue, prefetch: prefetch)
                    break
                }
                // The batch is worked on in a task of its own, so the next fetch overlaps it;
                // a lone message of a queue of tiny built-ins (a quiet queue: the other fetch
                // loop is waiting for the next one) is run here, one hand-off less on its way.
                let fetched = messages
                if let inOrder {
                    if case .terminated = inOrder.yield((generation, fetched)) {
                        // The worker is going away (its consumer was cancelled): hand them back.
                        await handBack(fetched, queue: queue, prefetch: prefetch)
                        break
                    }
                } else if ownRoom && fetched.count == 1 {
                    await work(fetched, queue: queue, generation: generation, prefetch: prefetch, slots: slots, inFetchLoop: true)
                } else {
                    running.addTask { await self.work(fetched, queue: queue, generation: generation, prefetch: prefetch, slots: slots, inFetchLoop: false) }
                }
            }
        }
        await fetcher.close()
    }

    /// Puts fetched messages that will not run here back on their lists, and frees their room.
    private func handBack(_ messages: [[UInt8]], queue: String, prefetch: Slots) async {
        for raw in messages {
            let key = WorkerBroker.listKey(of: raw) ?? queue
            _ = try? await withRedisRetry("requeue") { try await self.broker.requeue(raw, listKey: key) }
        }
        prefetch.release(messages.count)
    }

    /// Works on one fetched batch. Tiny built-ins (add) run right here and their results go to
    /// the completer as one group: no task, no thread hop, no wake-up per message. Everything
    /// else gets a task of its own.
    /// `inFetchLoop`: called by the fetch loop itself, which must not wait here for an
    /// execution slot (so everything but tiny built-ins gets a task of its own).
    private func work(_ messages: [[UInt8]], queue: String, generation: Int, prefetch: Slots, slots: Slots, inFetchLoop: Bool) async {
        await withDiscardingTaskGroup { running in
            var quick: [Completer.Item] = []
            for raw in messages {
                switch quickRun(raw, queue: queue, generation: generation) {
                case let .done(item):
                    quick.append(item)
                case let .settle(outcome, quick, spec):
                    running.addTask { await self.settleQuickFailure(raw, outcome, quick, spec: spec, queue: queue, prefetch: prefetch) }
                case let .slow(decoded) where messages.count == 1 && !inFetchLoop:
                    // A lone message (a quiet queue): run it in this task, one hand-off less.
                    await process(raw, queue: queue, generation: generation, slots: slots, decoded: decoded)
                    prefetch.release()
                case let .slow(decoded):
                    running.addTask {
                        await self.process(raw, queue: queue, generation: generation, slots: slots, decoded: decoded)
                        prefetch.release()
                    }
                }
            }
            if !quick.isEmpty {
                stats.withLock { $0.processed += quick.count }
                if await !completer.complete(quick) {
                    logger.error("results not stored; messages left unacked for redelivery", metadata: ["count": .stringConvertible(quick.count)])
                }
                prefetch.release(quick.count)
            }
        }
    }

    // MARK: - One message

    /// The usual failure path (retry, dead letter, store) for a tiny built-in that failed
    /// where it was fetched; then its prefetch slot is given back.
    private func settleQuickFailure(_ raw: [UInt8], _ outcome: Result<JSONValue, any Error>, _ quick: TaskMessage, spec: TaskSpec,
                                    queue: String, prefetch: Slots) async {
        // The fast read keeps no unknown headers: a retry re-sends the full message.
        let message = (try? TaskMessage.decode(raw)) ?? quick
        await settle(outcome, message, raw, spec: spec, queue: queue, TaskLog(base: logger, id: message.id, task: message.task), runtime: [:])
        prefetch.release()
    }

    enum Handled: Sendable {
        /// Ran, stored and acked.
        case stored
        /// Ran; the write failed: still to store and ack.
        case unstored(Completer.Item)
        /// Ran and failed: the usual failure path (retry, dead letter, store), not run again.
        case failed([UInt8], Result<JSONValue, any Error>, TaskMessage, TaskSpec)
        /// Not a plain call of a tiny built-in: the usual path.
        case other([UInt8])
    }

    /// On a fetcher's thread, right after its blocking fetch: runs a tiny built-in and writes
    /// its result and ack on the same connection (never an ack before the store: one
    /// connection's commands run in order).
    func runAndStore(_ raw: [UInt8], queue: String, generation: Int, _ session: RedisSession) -> Handled {
        let item: Completer.Item
        switch quickRun(raw, queue: queue, generation: generation) {
        case let .done(done): item = done
        case let .settle(outcome, message, spec): return .failed(raw, outcome, message, spec)
        case .slow: return .other(raw)
        }
        do throws(RedisError) {
            try Completer.check(try session.pipelineErrors(completer.commands(for: [item], ack: true)))
            broker.held.release(raw)
            return .stored
        } catch {
            return .unstored(item)
        }
    }

    enum QuickRun {
        /// Ran successfully here: store and ack.
        case done(Completer.Item)
        /// Ran here and failed: the usual failure path (retry, dead letter, store).
        case settle(Result<JSONValue, any Error>, TaskMessage, TaskSpec)
        /// Needs the full path (`process`); with what the fast read found, if anything.
        case slow(TaskMessage?)
    }

    /// Runs a message at once when it is a plain call of an inline built-in (no eta, expiry,
    /// revocation, soft limit, stop, or lapse of the lease since its fetch in the way);
    /// anything else is `.slow`.
    func quickRun(_ raw: [UInt8], queue: String, generation: Int) -> QuickRun {
        guard let message = TaskMessage.decodeForRun(raw) else { return .slow(nil) }
        guard !isStopping, message.eta == nil, message.expires == nil,
              message.softTimeLimit == nil || message.softTimeLimit == 0,
              let spec = manifest.tasks[message.task], spec.softTimeLimit == nil,
              let body = handlers[message.task]?.inlineBody,
              !revocations.contains(message.id), lease.covers(generation)   // the lease last: it starts right after
        else { return .slow(message) }
        if logger.logLevel <= .debug { logger.debug("task started", metadata: ["task_id": .string(message.id), "task": .string(message.task)]) }
        let call = taskCall(message, queue: queue)
        let value: JSONValue
        do { value = try body(call) } catch { return .settle(.failure(error), message, spec) }
        if logger.logLevel <= .debug { logger.debug("task succeeded", metadata: ["task_id": .string(message.id), "task": .string(message.task), "runtime_ms": "inline"]) }
        // The same decision as every other outcome; only its `.complete` is written here.
        guard case let .complete(meta) = decide(Outcome(result: .success(value), message: message, spec: spec)) else {
            return .settle(.success(value), message, spec)
        }
        return .done(Completer.Item(raw: raw, store: completionStore(meta, message)))
    }

    /// `decoded`: the message as the fast read found it (no unknown headers; `retry` reads
    /// the full message again), or nil to decode it here.
    func process(_ raw: [UInt8], queue: String, generation: Int, slots: Slots, decoded: TaskMessage? = nil) async {
        let message: TaskMessage
        do throws(ProtocolError) {
            if let decoded { message = decoded } else { message = try TaskMessage.decode(raw) }
        } catch {
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
        switch triage(message) {
        case .expired:
            log.info("task expired before it ran: REVOKED")
            await dispose(Outcome(result: .revoked(.revoked("expired")), message: message, spec: manifest.tasks[message.task]), raw, queue: queue, log)
            return
        case let .parked(eta):
            log.debug("task has a future eta: parked in the delayed set", metadata: ["eta": .string(CeleryDate.format(eta))])
            _ = try? await withRedisRetry("defer") { try await self.broker.deferMessage(raw, listKey: Keys.queue(queue, priority: message.priority), until: eta) }
            return
        case .revoked:
            log.info("task was revoked before it ran: REVOKED")
            await dispose(Outcome(result: .revoked(.revoked("revoked")), message: message, spec: manifest.tasks[message.task]), raw, queue: queue, log)
            return
        case .unknown:
            log.warning("unknown task: FAILURE NotRegistered")
            await dispose(Outcome(result: .notRegistered, message: message, spec: nil), raw, queue: queue, log)
            return
        case .unavailable:
            // A plugin in a crash loop: hand the message back instead of burning it.
            await dispose(Outcome(result: .handBack, message: message, spec: manifest.tasks[message.task]), raw, queue: queue, log)
            return
        case let .run(s, h):
            (spec, handler) = (s, h)
        }
        // Prefetched messages wait here for an execution slot (the worker's concurrency).
        _ = await slots.acquire()
        if isStopping {
            // Not started when the stop came: back to the head of its queue for another worker.
            slots.release()
            await requeue(raw, queue: queue, message: message, log, why: "worker stopping: message not started, returned to the head of its queue")
            return
        }
        // Fetched before a lapse of the lease (a stall, a cut from Redis): another worker
        // may have taken it back meanwhile; start it only if it is still in our list.
        if !lease.covers(generation), await !ownsStill(raw, queue: queue, message: message, log) {
            slots.release()
            return
        }
        log.debug("task started")
        let (limit, soft) = limits(message, spec)
        if let body = handler.inlineBody, soft == nil {
            // A tiny built-in: run here, no thread hop, nothing to interrupt.
            let call = taskCall(message, queue: queue)
            let outcome = Result<JSONValue, any Error> { try body(call) }
            slots.release()
            await settle(outcome, message, raw, spec: spec, queue: queue, log, runtime: [:])
            return
        }
        let l = launch(message, raw, spec: spec, handler: handler, queue: queue, log, limit: limit, soft: soft)
        let isPlugin = spec.handler.isPlugin
        await runAndSettle(l, slots: slots) { try await self.run(handler, l.call, limit: limit, isPlugin: isPlugin) }
    }

    /// What a handler gets for `message`.
    private func taskCall(_ message: TaskMessage, queue: String, deadline: Date? = nil) -> TaskCall {
        TaskCall(id: message.id, task: message.task, args: message.args, kwargs: message.kwargs, queue: queue,
                 attempt: message.retries + 1, deadline: deadline, rootID: message.rootID, parentID: message.parentID,
                 retries: message.retries, worker: config.node)
    }

    /// What becomes of a message before it may run.
    enum Triage {
        case expired, parked(Date), revoked, unknown, unavailable
        case run(TaskSpec, any TaskHandler)
    }

    func triage(_ message: TaskMessage) -> Triage {
        if let expires = message.expires, expires < Date() { return .expired }
        if let eta = message.eta, eta.timeIntervalSinceNow > 0.01 { return .parked(eta) }
        if revocations.contains(message.id) { return .revoked }
        guard let spec = manifest.tasks[message.task], let handler = handlers[message.task] else { return .unknown }
        if let pool = handler as? PersistentPlugin, pool.unavailability != nil { return .unavailable }
        return .run(spec, handler)
    }

    /// The hard and soft time limits of a message (the task's, or the message's if shorter).
    private func limits(_ message: TaskMessage, _ spec: TaskSpec) -> (hard: Double?, soft: Double?) {
        var limit = spec.timeLimit
        if let h = message.hardTimeLimit, h > 0 { limit = min(limit ?? h, h) }
        var soft = spec.softTimeLimit
        if let sl = message.softTimeLimit, sl > 0 { soft = min(soft ?? sl, sl) }
        if let s = soft, let l = limit, s >= l { soft = nil }   // a soft limit past the hard one never strikes
        return (limit, soft)
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
    private func launch(_ message: TaskMessage, _ raw: [UInt8], spec: TaskSpec, handler: any TaskHandler, queue: String, _ log: TaskLog,
                        limit: Double?, soft: Double?) -> Launch {
        var call = taskCall(message, queue: queue, deadline: limit.map { Date().addingTimeInterval($0) })
        call.softDeadline = soft.map { Date().addingTimeInterval($0) }
        stats.withLock { $0.active += 1 }
        let entry = InFlight(raw: raw, taskID: message.id, listKey: Keys.queue(queue, priority: message.priority))
        if handler is PersistentPlugin && completer.storesOnBroker {
            // A quiet answer is stored and acked on the plugin's reader thread, where it
            // arrives: two hand-offs less on the result's way (reader to the cooperative pool,
            // pool to a Redis connection's thread: ~35 µs each here, seen with `perf sched`).
            // Only SUCCESS, only when nobody revoked or handed the task back meanwhile, only
            // through an idle completer lane; anything else takes the usual path.
            call.settleOnAnswer = { value in
                // The same decision as every other outcome; only its `.complete` is written here.
                guard case let .complete(meta) = self.decide(Outcome(result: .success(value), message: message, spec: spec)) else { return }
                guard entry.fate.withLock({ f in guard f == .running else { return false }; f = .settling; return true }) else { return }
                let item = Completer.Item(raw: raw, store: self.completionStore(meta, message))
                switch self.completer.writeNow([item]) {
                case .written:
                    entry.settled.store(true, ordering: .releasing)
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

    private func unlaunch(_ l: Launch) {
        inflight.withLock { _ = $0.removeValue(forKey: l.token) }
        stats.withLock { $0.active -= 1 }
    }

    /// Runs `body` (the handler) for a launched message, then stores its outcome and acks.
    private func runAndSettle(_ l: Launch, slots: Slots, body: @escaping @Sendable () async throws -> JSONValue) async {
        let (message, raw, spec, queue, log, entry) = (l.message, l.raw, l.spec, l.queue, l.log, l.entry)
        var runtime: Logger.Metadata { ["runtime_ms": .string(Self.ms(ContinuousClock.now - l.started))] }
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
            if entry.settled.load(ordering: .acquiring) {
                ran()
                self.stats.withLock { $0.processed += 1 }
                log.debug("task succeeded", metadata: runtime)
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
            f.message = "revoked (terminated)"
            await dispose(Outcome(result: .revoked(f), message: message, spec: spec), raw, queue: queue, log)
            return
        case .running, .settling:
            // `settling`: a write on the reader thread failed (see `launch`). (`running`
            // cannot be seen here: the run task settles those itself.)
            break
        }
        await settle(outcome, message, raw, spec: spec, queue: queue, log, runtime: runtime)
    }

    /// A message of a queue of persistent plugins, taken where it arrived (the fetcher's own
    /// thread): sent to a plugin process right there when nothing stands in the way (no eta
    /// or expiry due, not revoked, a free execution slot and a process with room now), with
    /// no hand-off between its arrival and the plugin. `.other`: take the usual path.
    enum Arrival: Sendable {
        case started(Launch, PersistentPlugin, PersistentPlugin.StartedCall)
        case other([UInt8])
    }

    func startOnArrival(_ raw: [UInt8], queue: String, generation: Int, slots: Slots) -> Arrival {
        guard !isStopping, let message = try? TaskMessage.decode(raw), case let .run(spec, handler) = triage(message),
              let plugin = handler as? PersistentPlugin, slots.tryAcquire() else { return .other(raw) }
        guard lease.covers(generation) else {
            slots.release()
            return .other(raw)
        }
        if logger.logLevel <= .debug { logger.debug("task started", metadata: ["task_id": .string(message.id), "task": .string(message.task)]) }
        let (limit, soft) = limits(message, spec)
        let l = launch(message, raw, spec: spec, handler: plugin, queue: queue, TaskLog(base: logger, id: message.id, task: message.task),
                       limit: limit, soft: soft)
        guard let started = plugin.tryStart(l.call) else {
            unlaunch(l)
            slots.release()
            return .other(raw)
        }
        return .started(l, plugin, started)
    }

    /// Stores the outcome of a run (or retries it) and acks.
    func settle(_ result: Result<JSONValue, any Error>, _ message: TaskMessage, _ raw: [UInt8], spec: TaskSpec, queue: String,
                        _ log: TaskLog, runtime: @autoclosure () -> Logger.Metadata) async {
        let outcome: Outcome.Result
        switch result {
        case let .success(value):
            stats.withLock { $0.processed += 1 }
            log.debug("task succeeded", metadata: runtime())
            outcome = .success(value)
        case let .failure(f as TaskFailure) where f.disposition == .handBack:
            outcome = .handBack
        case let .failure(error):
            // Every failure is stored and logged cut to size (TaskFailure+Limits).
            let f = ((error as? TaskFailure) ?? TaskFailure(type: String(describing: type(of: error)), message: "\(error)", module: "celerity")).capped()
            stats.withLock { $0.processed += 1; $0.failed += 1 }
            outcome = .failure(f)
        }
        await dispose(Outcome(result: outcome, message: message, spec: spec), raw, queue: queue, log, runtime: runtime())
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
        stats.withLock { $0.retried += 1 }
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

    /// Runs a handler; built-ins are abandoned (and fail) at the hard limit, plugins enforce it
    /// themselves by killing their process group.
    private func run(_ handler: any TaskHandler, _ call: TaskCall, limit: Double?, isPlugin: Bool) async throws -> JSONValue {
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

extension HandlerSpec {
    var isPlugin: Bool { if case .plugin = self { return true } else { return false } }
}

public struct WorkerError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A worker's stop request: when it came, and whether the grace period has run out.
final class StopFlag: Sendable {
    private let requestedAt = Mutex<Date?>(nil)
    let grace: Double
    init(grace: Double) { self.grace = grace }
    func request() { requestedAt.withLock { if $0 == nil { $0 = Date() } } }
    var isRequested: Bool { requestedAt.withLock { $0 != nil } }
    var graceExpired: Bool { requestedAt.withLock { $0.map { -$0.timeIntervalSinceNow > grace } ?? false } }
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
