import Foundation
import Logging
import RedisClient
import ServiceLifecycle
import Synchronization

/// A Celerity worker: consumes queues, runs handlers concurrently, stores results, acks.
///
/// Lifecycle (a swift-service-lifecycle `Service`): on graceful shutdown (SIGTERM/SIGINT via
/// `ServiceGroup`) it stops fetching, lets in-flight tasks finish (up to `shutdownGrace`),
/// removes its heartbeat and returns. Anything not acked stays in its processing list and
/// is requeued when a worker of the same name starts again.
public final class Worker: Service, Sendable {
    public let config: WorkerConfiguration
    public let logger: Logger
    let broker: WorkerBroker
    let results: any ResultBackend
    /// Batched result writes + acks (the hot path).
    let completer: Completer
    /// The manifest, the handlers and the persistent pools now: replaced as a whole by
    /// `reload` (Worker+Reload.swift). A call takes its handler from the table once, when it
    /// starts, and keeps it. `manifest`, `handlers`, `persistentPools` and `poolsByQueue` read it.
    let tableLock: Mutex<TaskTable>
    /// The generation of the table now (bumped by each reload): lets a message that waited
    /// for an execution slot see that its handler was replaced meanwhile, for one atomic load.
    let tableGeneration: Atomic<Int>
    let builtins: BuiltinRegistry
    /// Reloads run one at a time, in order.
    let reloading = AsyncLock()
    /// Pools retired by a reload and not yet stopped (stopped at the worker's stop if still there).
    let retiring = Mutex<[ObjectIdentifier: PersistentPlugin]>([:])
    /// What `pool_restart` (remote control) calls: set by whoever can load the manifest again.
    let reloadRequest = Mutex<(@Sendable () -> Void)?>(nil)
    /// Pools started by a reload, for `serve` to supervise.
    let poolStarts: AsyncStream<PersistentPlugin>.Continuation
    private let addedPools: AsyncStream<PersistentPlugin>
    /// When a stop was requested (nil while running).
    let stopRequested: StopFlag
    let stats = Mutex(Stats())
    let startedAt = Date()

    struct Stats {
        var processed = 0, failed = 0, active = 0, retried = 0, revoked = 0
        /// Outcomes and runtimes by task name (`celery inspect stats`' `total`, the heartbeat
        /// document's `tasks`: the dashboard's metrics).
        var perTask: [String: TaskTally] = [:]
        /// Tasks finished (any outcome) by the queue they came from (the dashboard's rates).
        var perQueue: [String: Int] = [:]
    }
    /// Celery's logical clock for remote control and events.
    let controlClock = LamportClock()
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
    /// Celery's events: worker events always, task events while on (Control/Events.swift).
    public let events: EventDispatcher
    /// What remote control changed: concurrency, consumed queues, time limits.
    let runtime: RuntimeSettings
    /// Global rate limits and concurrency caps (tasks.yaml `rate_limit`, `max_concurrency`).
    let gate: TaskGate
    /// Execution slots (the concurrency) and the prefetch room (concurrency × multiplier)
    /// shared by the queues that have no room of their own; `pool_grow`/`pool_shrink` resize both.
    let slots: Slots
    let prefetch: Slots
    /// Queues added by `add_consumer`, for `serve` to start their fetch loops.
    let queueStarts: AsyncStream<QueueConsumer>.Continuation
    private let addedQueues: AsyncStream<QueueConsumer>

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
        // Built-in tasks check the arguments their built-in declares (unless tasks.yaml says otherwise).
        let manifest = manifest.withBuiltinSchemas(builtins)
        self.logger = logger
        self.broker = WorkerBroker(url: config.broker, node: config.node)
        self.strays = StrayAudit(broker: broker, logger: logger)
        self.revocations = Revocations(broker: broker, alarm: dutyAlarm, logger: logger)
        self.events = EventDispatcher(url: config.broker, node: config.node, enabled: config.taskEvents, history: config.history, logger: logger, alarm: dutyAlarm)
        self.runtime = RuntimeSettings(concurrency: config.concurrency, queues: config.queues)
        self.gate = TaskGate(control: broker.control, processingKey: broker.processingKey, manifest: manifest, leaseSeconds: config.heartbeatTTL)
        self.slots = Slots(config.concurrency)
        // Messages fetched and not yet acked: Celery's prefetch (concurrency × multiplier).
        self.prefetch = Slots(config.concurrency * max(config.prefetchMultiplier, 1))
        (addedQueues, queueStarts) = AsyncStream.makeStream(of: QueueConsumer.self)
        var separateResults: Redis?
        let extendedBy = config.resultBackend.extended ? config.node : nil
        switch config.resultBackend.kind {
        case let .redis(urlString):
            let url: RedisURL
            do { url = try RedisURL(string: urlString) } catch { throw ManifestError(nil, "result backend: \(error.message)") }
            if url != config.broker { separateResults = Redis(url: url, label: "results-\(config.node)") }
            results = RedisResultBackend(redis: separateResults ?? broker.control, expires: config.resultBackend.expires, extendedBy: extendedBy)
        case .sameAsBroker:
            results = RedisResultBackend(redis: broker.control, expires: config.resultBackend.expires, extendedBy: extendedBy)
        case .rpc:
            results = RPCResultBackend(redis: broker.control, extendedBy: extendedBy)
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
        self.builtins = builtins
        let t = try TaskTable.build(manifest: manifest, config: config, builtins: builtins, logger: logger, generation: 0, reusing: nil)
        tableLock = Mutex(t.table)
        tableGeneration = Atomic(0)
        (addedPools, poolStarts) = AsyncStream.makeStream(of: PersistentPlugin.self)
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
        try await NodeClaim(node: config.node, ttl: config.heartbeatTTL, logger: logger, isStopping: { self.isStopping },
                            read: { try await self.withRedisRetry("claim node name") { try await self.broker.currentHeartbeat() } }).claim()
        let maxRedeliveries = manifest.maxRedeliveries
        if let (requeued, dead) = try await withRedisRetry("recover", { try await self.broker.redeliverAll(from: self.broker.processingKey, maxRedeliveries: maxRedeliveries) }),
           requeued + dead > 0 {
            logger.warning("handed back messages left in flight by an earlier run of this node", metadata: [
                "requeued": .stringConvertible(requeued), "dead_lettered_poison_pills": .stringConvertible(dead)])
        }
        // Queues paused cluster-wide are not fetched from, from the first fetch on.
        let pauses = QueuePauses(broker: broker, runtime: runtime, interval: .seconds(1), alarm: dutyAlarm, logger: logger) { self.queueStarts.yield($0) }
        do {
            if let paused = try await withRedisRetry("read paused queues", { try await self.broker.pausedQueues() }) { pauses.apply(paused) }
        } catch {
            if !dutyAlarm.permissionDenied("queue pause poll", error, logger: logger) { logger.warning("could not read the paused queues (celerity:paused); fetching from every queue, read again every second", metadata: ["error": .string("\(error)")]) }
        }
        let heartbeat = Heartbeat(broker: broker, lease: lease, ttl: config.heartbeatTTL, interval: .seconds(config.heartbeatSeconds),
                                  alarm: dutyAlarm, logger: logger) { self.heartbeatDocument() }
        try await withRedisRetry("heartbeat") { try await heartbeat.beat() }
        // Rates set at run time (`rate_limit`) apply from the first message.
        do { try await gate.refreshOverrides() } catch {
            logger.warning("could not read the rates set at run time (celerity:rate-conf); read again every second", metadata: ["error": .string("\(error)")])
        }
        revocations.onTerminate { ids in self.terminate(ids) }
        _ = await revocations.once()
        let eventHeartbeat = self.eventHeartbeat
        events.send("worker-online", fields: eventHeartbeat.fields())
        // The background duties (Duties/): each a child task of this group, on Swift's pool.
        let stopping: @Sendable () -> Bool = { self.isStopping }
        let duties: [any Duty] = [
            heartbeat,
            ThroughputSummary(logger: logger, counts: { self.stats.withLock { ThroughputSummary.Counts(processed: $0.processed, failed: $0.failed, retried: $0.retried) } },
                              store: { d in
                                  do { try await self.broker.addMinuteTotals(processed: d.processed, failed: d.failed, retried: d.retried) } catch {
                                      if !self.dutyAlarm.permissionDenied("per-minute totals", error, logger: self.logger) {
                                          self.logger.warning("per-minute totals not written: \(error)")
                                      }
                                  }
                              }),
            DelayedForwarder(broker: broker, interval: .milliseconds(250), alarm: dutyAlarm, logger: logger, isStopping: stopping),
            Recoverer(broker: broker, maxRedeliveries: manifest.maxRedeliveries, interval: .seconds(config.recoverySeconds),
                      alarm: dutyAlarm, logger: logger, isStopping: stopping),
            revocations,
            eventHeartbeat,
            GateKeeper(gate: gate, alarm: dutyAlarm, logger: logger),
            pauses,
        ]
        logger.info("worker ready", metadata: ["node": .string(config.node)])

        await withDiscardingTaskGroup { background in
            for lane in 0..<Worker.completerLanes { background.addTask { await self.completer.run(lane: lane) } }
            for duty in duties { background.addTask { await duty.run() } }
            background.addTask { await self.events.run() }
            background.addTask { await self.strays.run { self.isStopping } }
            let watchdog = StopWatchdog(broker: self.broker, stop: self.stopRequested, isCold: { self.isColdStop },
                                        inFlight: { self.inflight.withLock { Array($0.values) } },
                                        pools: { self.persistentPools + self.retiring.withLock { Array($0.values) } }, logger: self.logger)
            background.addTask { await watchdog.run() }
            // Celery's remote control (`celery inspect`, `celery control`, Flower, revoke from Python).
            let pidbox = Pidbox(url: self.config.broker, node: self.config.node, clock: self.controlClock, logger: self.logger) { await self.control($0) }
            background.addTask { await pidbox.run(isStopping: { self.isStopping }) }
            for pool in self.persistentPools {
                background.addTask { await pool.supervise() }
            }
            // Pools started by a reload; the stream ends at the worker's stop.
            background.addTask {
                await withDiscardingTaskGroup { supervised in
                    for await pool in self.addedPools { supervised.addTask { await pool.supervise() } }
                }
            }
            await withDiscardingTaskGroup { fetchers in
                for consumer in self.runtime.consumers { self.startFetchers(consumer, in: &fetchers) }
                // Queues added by `add_consumer` while running; the stream ends at a stop.
                let starts = self.queueStarts
                fetchers.addTask {
                    while !self.isStopping && !Task.isCancelled { try? await Task.sleep(for: .milliseconds(200)) }
                    starts.finish()
                }
                for await consumer in self.addedQueues where !self.isStopping && !consumer.isCancelled {
                    self.startFetchers(consumer, in: &fetchers)
                }
            }
            // Every task has finished: write what is left, then stop the flusher.
            self.completer.close()
            // No task is in flight any more: plugin processes may go (those of pools retired
            // by a reload and still draining too).
            let pools = self.persistentPools + self.retiring.withLock { Array($0.values) }
            for pool in pools { await pool.shutdown() }
            self.poolStarts.finish()
            background.cancelAll()
        }
        do { try await broker.clearHeartbeat() } catch { logger.warning("could not remove heartbeat: \(error)") }
        await events.close(last: "worker-offline", fields: eventHeartbeat.fields())
        let s = stats.withLock { $0 }
        logger.info("worker stopped", metadata: ["processed": .stringConvertible(s.processed), "failed": .stringConvertible(s.failed)])
    }

    /// Starts the fetch loops of one consumed queue (they end when it is cancelled).
    private func startFetchers(_ consumer: QueueConsumer, in fetchers: inout DiscardingTaskGroup) {
        let q = consumer.name
        // A queue whose every task is a tiny built-in gets a prefetch room of its own,
        // large: its messages never wait for an execution slot, and the worker keeps
        // many batches in flight (fetch, run, store) to keep Redis and both cores busy.
        // `-c 1` promises one task at a time, in the order fetched (priority first):
        // then every queue takes the usual path with a single fetch loop, since
        // light batches and a second loop would run messages side by side.
        let serial = config.concurrency == 1
        let light = !serial && isLight(q)
        let pool = light ? Slots(Worker.lightRoom) : prefetch
        let room: Int? = light ? Worker.lightRoom : nil   // nil: the shared room, as resized now
        let slots = self.slots
        for _ in 0..<(serial ? 1 : Worker.fetchersPerQueue) {
            fetchers.addTask { await self.fetchLoop(consumer, prefetch: pool, room: room, batchesInFlight: light ? 8 : 4, slots: slots) }
        }
    }

    /// The shared prefetch room now (concurrency × multiplier).
    var sharedRoom: Int { runtime.concurrency * max(config.prefetchMultiplier, 1) }

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

    /// What this worker's heartbeat says of it (`celerity status` and the dashboard read it).
    func heartbeatDocument() -> JSONValue {
        let s = stats.withLock { $0 }
        return JSONValue.object([
            JSONMember("node", .string(config.node)), JSONMember("pid", .int(Int(getpid()))),
            JSONMember("host", .string(ProcessInfo.processInfo.hostName)),
            JSONMember("queues", .array(runtime.queues.map { .string($0) })),
            // Those of `queues` it does not fetch from because they are paused cluster-wide.
            JSONMember("paused", .array(runtime.pausedQueues.map { .string($0) })), JSONMember("concurrency", .int(runtime.concurrency)),
            JSONMember("active", .int(s.active)), JSONMember("processed", .int(s.processed)),
            JSONMember("failed", .int(s.failed)), JSONMember("retried", .int(s.retried)), JSONMember("revoked", .int(s.revoked)),
            JSONMember("started", .string(CeleryDate.format(startedAt))), JSONMember("at", .string(CeleryDate.format(Date()))),
            JSONMember("rss", .int(Self.residentBytes())),
            JSONMember("events", .bool(events.isEnabled)),
            JSONMember("tasks", .object(s.perTask.keys.sorted().map { JSONMember($0, s.perTask[$0]!.document) })),
            JSONMember("queues_done", .object(s.perQueue.keys.sorted().map { JSONMember($0, .int(s.perQueue[$0]!)) })),
            JSONMember("plugins", .object(pluginDocuments())),
        ])
    }

    /// Each persistent pool by its command line (`#2`, `#3` after a command line that two
    /// pools share with different options).
    private func pluginDocuments() -> [JSONMember] {
        var seen: [String: Int] = [:]
        return persistentPools.sorted { $0.name < $1.name }.map { pool in
            seen[pool.name, default: 0] += 1
            let n = seen[pool.name]!
            return JSONMember(n == 1 ? pool.name : "\(pool.name) #\(n)", pool.processDocument)
        }
    }

    /// This process's resident set in bytes (/proc/self/statm; 0 where there is none).
    static func residentBytes() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// Whether every task routed to `queue` is an inline built-in (see `TaskHandler.inlineBody`)
    /// run inline (not `track_started`).
    func isLight(_ queue: String) -> Bool {
        everyTask(of: queue, Self.lightTest)
    }

    /// Whether `queue` has tasks and `test` holds for the manifest entry and handler of each.
    private func everyTask(of queue: String, _ test: (TaskSpec, (any TaskHandler)?) -> Bool) -> Bool {
        currentTable.everyTask(of: queue, test)
    }

    /// Whether every task routed to `queue` runs in a persistent plugin.
    func isPersistentPluginQueue(_ queue: String) -> Bool {
        everyTask(of: queue, Self.persistentTest)
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
