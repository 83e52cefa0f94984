import Foundation
import Logging
import Synchronization

// Hot reload (docs/plugins.md, "Hot reload"): a new manifest becomes a new task table,
// swapped in at once. Calls keep the handler they started with; persistent pools whose
// plugin changed are drained (their calls answered), then stopped; queues follow the manifest
// when the worker consumes every queue of it (no -Q).

/// What a worker runs its tasks with, replaced as a whole by a reload: the manifest, a handler
/// for every task, the persistent pools (and those of each consumed queue). Immutable.
final class TaskTable: Sendable {
    let generation: Int
    let manifest: Manifest
    let handlers: [String: any TaskHandler]
    let persistentPools: [PersistentPlugin]
    let poolsByQueue: [String: [PersistentPlugin]]
    /// Each pool by what it was built from, and the stamps of its plugin's files then: a
    /// reload keeps a pool only when both are the same.
    let pools: [PoolKey: PersistentPlugin]
    let stamps: [PoolKey: [String: FileStamp?]]

    /// What makes a pool: its plugin (program, arguments, environment, options), the tasks it
    /// serves (sent in the handshake), the queue it is named for, whether it starts on demand.
    struct PoolKey: Hashable, Sendable {
        var spec: PluginSpec
        var tasks: [String]
        var queue: String
        var onDemand: Bool
    }

    init(generation: Int, manifest: Manifest, handlers: [String: any TaskHandler], pools: [PoolKey: PersistentPlugin],
         stamps: [PoolKey: [String: FileStamp?]], queues: [String]) {
        self.generation = generation
        self.manifest = manifest
        self.handlers = handlers
        self.pools = pools
        self.stamps = stamps
        persistentPools = pools.keys.sorted { $0.spec.argv.joined(separator: " ") < $1.spec.argv.joined(separator: " ") }.map { pools[$0]! }
        var byQueue: [String: [PersistentPlugin]] = [:]
        for name in manifest.taskOrder {
            guard let spec = manifest.tasks[name], queues.contains(spec.queue), let pool = handlers[name] as? PersistentPlugin else { continue }
            if !(byQueue[spec.queue]?.contains { $0 === pool } ?? false) { byQueue[spec.queue, default: []].append(pool) }
        }
        poolsByQueue = byQueue
    }

    /// Whether `queue` has tasks and `test` holds for the manifest entry and handler of each.
    func everyTask(of queue: String, _ test: (TaskSpec, (any TaskHandler)?) -> Bool) -> Bool {
        let tasks = manifest.tasks.values.filter { $0.queue == queue }
        return !tasks.isEmpty && tasks.allSatisfy { test($0, handlers[$0.name]) }
    }

    struct Built {
        let table: TaskTable
        /// Pools made for this table (not taken over from the old one).
        let started: [PersistentPlugin]
        /// Pools of the old table it does not keep.
        let retired: [PersistentPlugin]
    }

    /// A handler for every task of the manifest, not only those routed to the queues served
    /// here: as in Celery, a task runs on whichever consumed queue it arrives. Persistent
    /// plugins whose tasks are all routed elsewhere start their processes on the first call.
    /// `old`: the table now; its handlers and pools are kept where nothing changed.
    static func build(manifest: Manifest, config: WorkerConfiguration, queues: [String]? = nil, builtins: BuiltinRegistry, logger: Logger,
                      generation: Int, reusing old: TaskTable?) throws(ManifestError) -> Built {
        let queues = queues ?? config.queues
        var hs: [String: any TaskHandler] = [:]
        var pools: [PoolKey: PersistentPlugin] = [:]
        var stamps: [PoolKey: [String: FileStamp?]] = [:]
        var started: [PersistentPlugin] = []
        var oneShots: [PluginSpec: OneShotPlugin] = [:]
        for case let h as OneShotPlugin in old?.handlers.values.map({ $0 }) ?? [] { oneShots[h.spec] = h }
        let all = manifest.taskOrder.compactMap { manifest.tasks[$0] }
        let served = all.filter { queues.contains($0.queue) }
        var poolOf: [PluginSpec: PersistentPlugin] = [:]
        for spec in all {
            switch spec.handler {
            case let .builtin(b):
                guard let h = builtins.handlers[b] else {
                    // Routed elsewhere: NotRegistered here if it ever comes, as before.
                    if !queues.contains(spec.queue) { continue }
                    throw ManifestError(manifest.path, "task '\(spec.name)' names unknown built-in '\(b)' (known: \(builtins.names.sorted().joined(separator: ", ")))")
                }
                hs[spec.name] = h
            case let .plugin(p):
                switch p.mode {
                case .oneshot:
                    // Its limit comes with each call (`TaskCall.deadline`, from `limits`), so
                    // that `time_limit` can change it at run time. Each call reads the plugin's
                    // files afresh: nothing to restart when they change.
                    let h = oneShots[p] ?? OneShotPlugin(spec: p, timeLimit: nil, logger: logger)
                    oneShots[p] = h
                    hs[spec.name] = h
                case let .persistent(options):
                    // Tasks naming the same program and options share one pool of processes.
                    if poolOf[p] == nil {
                        let names = all.filter { $0.handler == .plugin(p) }.map(\.name)
                        let onDemand = !served.contains { $0.handler == .plugin(p) }
                        let key = PoolKey(spec: p, tasks: names, queue: spec.queue, onDemand: onDemand)
                        let now = FileStamp.of(p.files)
                        if let kept = old?.pools[key], old?.stamps[key] == now {
                            poolOf[p] = kept
                        } else {
                            let pool = PersistentPlugin(spec: p, options: options, tasks: names, worker: config.node, queue: spec.queue,
                                                        startsOnDemand: onDemand, logger: logger)
                            poolOf[p] = pool
                            started.append(pool)
                        }
                        pools[key] = poolOf[p]!
                        stamps[key] = now
                    }
                    hs[spec.name] = poolOf[p]!
                }
            }
        }
        let kept = Set(pools.values.map(ObjectIdentifier.init))
        let retired = (old?.persistentPools ?? []).filter { !kept.contains(ObjectIdentifier($0)) }
        let table = TaskTable(generation: generation, manifest: manifest, handlers: hs, pools: pools, stamps: stamps, queues: queues)
        return Built(table: table, started: started, retired: retired)
    }
}

/// A lock held across suspension points, taken in the order asked (reloads run one at a time).
final class AsyncLock: Sendable {
    private let state = Mutex<(held: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func lock() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if !s.held { s.held = true; return true }
                s.waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }

    func unlock() {
        let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if s.waiters.isEmpty { s.held = false; return nil }
            return s.waiters.removeFirst()
        }
        next?.resume()
    }
}

extension Worker {
    /// The task table now (one lock, one retain): read it once per message.
    var currentTable: TaskTable { tableLock.withLock { $0 } }
    public var manifest: Manifest { currentTable.manifest }
    var handlers: [String: any TaskHandler] { currentTable.handlers }
    /// Persistent plugin process pools of the table now, supervised until a reload retires them.
    var persistentPools: [PersistentPlugin] { currentTable.persistentPools }
    var poolsByQueue: [String: [PersistentPlugin]] { currentTable.poolsByQueue }

    /// What a reload changed (also logged).
    public struct ReloadReport: Sendable, Equatable {
        public var added: [String] = [], changed: [String] = [], removed: [String] = []
        /// Persistent pools started and stopped (by command line); a pool restarted is in both.
        public var poolsStarted: [String] = [], poolsStopped: [String] = []
        public var queuesAdded: [String] = [], queuesDropped: [String] = []
        public var isEmpty: Bool { self == ReloadReport() }
    }

    /// Sets what `pool_restart` (remote control) does: load the manifest again and `reload` it.
    /// Without one, `pool_restart` answers that reloading is not available.
    public func onReloadRequest(_ body: @escaping @Sendable () -> Void) { reloadRequest.withLock { $0 = body } }

    /// Runs this worker's tasks with `new` from now on (SIGHUP, `--reload`, `pool_restart`).
    ///
    /// The new table reuses the handlers and persistent pools of the old one where nothing
    /// changed (a pool is kept only when its plugin spec, tasks and queue are equal and its
    /// program and script files have the same size, mtime and inode). Calls already started
    /// keep their handler; messages still waiting for an execution slot take the new one.
    /// Pools no longer in the table are drained (every call sent to them is answered), then
    /// shut down; this returns once they are. Without `-Q`, queues of the new manifest are
    /// consumed and those it dropped are not (their prefetched messages still run).
    /// Rate limits and caps follow the new manifest. Throws (and changes nothing) when the new
    /// manifest names a built-in this worker lacks.
    @discardableResult
    public func reload(_ loaded: Manifest) async throws(ManifestError) -> ReloadReport {
        // Built-in tasks check what their built-in declares, as at start-up.
        let new = loaded.withBuiltinSchemas(builtins)
        await reloading.lock()
        defer { reloading.unlock() }
        if isStopping { return ReloadReport() }
        let old = currentTable
        let oldQueues = runtime.queues
        let queues: [String] = config.queuesFromManifest ? new.queues : config.queues
        let built = try TaskTable.build(manifest: new, config: config, queues: queues, builtins: builtins, logger: logger,
                                        generation: old.generation + 1, reusing: old)
        var report = ReloadReport()
        for name in new.taskOrder {
            guard let spec = new.tasks[name] else { continue }
            if let before = old.manifest.tasks[name] { if before != spec { report.changed.append(name) } } else { report.added.append(name) }
        }
        report.removed = old.manifest.taskOrder.filter { new.tasks[$0] == nil }
        report.poolsStarted = built.started.map(\.name)
        report.poolsStopped = built.retired.map(\.name)
        // Retired pools are still stopped at the worker's stop if their drain is not over.
        retiring.withLock { r in for p in built.retired { r[ObjectIdentifier(p)] = p } }
        for pool in built.started { poolStarts.yield(pool) }
        // The swap: from here on, every message takes its handler from the new table.
        tableLock.withLock { $0 = built.table }
        tableGeneration.store(built.table.generation, ordering: .releasing)
        gate.update(new)
        if config.queuesFromManifest {
            let wanted = new.queues
            for q in wanted where !oldQueues.contains(q) {
                if case let .added(consumer) = runtime.addQueue(q) { queueStarts.yield(consumer) }
                report.queuesAdded.append(q)
            }
            for q in old.manifest.queues where !wanted.contains(q) && runtime.cancelQueue(q) { report.queuesDropped.append(q) }
        }
        // A queue kept whose kind changed (now all inline built-ins, or all persistent plugins,
        // or no longer): its fetch loops start again, shaped for what it holds now.
        for q in runtime.queues where !report.queuesAdded.contains(q) {
            let before = (old.everyTask(of: q, Self.lightTest), old.everyTask(of: q, Self.persistentTest))
            let after = (built.table.everyTask(of: q, Self.lightTest), built.table.everyTask(of: q, Self.persistentTest))
            if before != after, runtime.cancelQueue(q), case let .added(consumer) = runtime.addQueue(q) { queueStarts.yield(consumer) }
        }
        logger.info("manifest reloaded: new task table in use", metadata: [
            "generation": .stringConvertible(built.table.generation),
            "tasks_added": .string(report.added.joined(separator: ",")), "tasks_changed": .string(report.changed.joined(separator: ",")),
            "tasks_removed": .string(report.removed.joined(separator: ",")),
            "pools_started": .string(report.poolsStarted.joined(separator: ",")), "pools_retired": .string(report.poolsStopped.joined(separator: ",")),
            "queues_added": .string(report.queuesAdded.joined(separator: ",")), "queues_dropped": .string(report.queuesDropped.joined(separator: ",")),
        ])
        // Drain: calls that took a retired pool before the swap are answered by it; then it stops.
        if !built.retired.isEmpty {
            // A call that read the old table just before the swap reaches its pool within
            // microseconds; one that finds the pool stopped is handed back to its queue.
            try? await Task.sleep(for: .milliseconds(50))
            await withDiscardingTaskGroup { group in
                for pool in built.retired {
                    group.addTask {
                        while !pool.isIdle && !self.isStopping { try? await Task.sleep(for: .milliseconds(20)) }
                        await pool.shutdown()
                        _ = self.retiring.withLock { $0.removeValue(forKey: ObjectIdentifier(pool)) }
                    }
                }
            }
        }
        logger.info("reload complete", metadata: ["generation": .stringConvertible(built.table.generation),
                                                  "pools_stopped": .string(report.poolsStopped.joined(separator: ","))])
        return report
    }

    /// A task run inline where it is fetched (a tiny built-in, not `track_started`).
    static func lightTest(_ spec: TaskSpec, _ handler: (any TaskHandler)?) -> Bool { handler?.inlineBody != nil && !spec.trackStarted }
    static func persistentTest(_ spec: TaskSpec, _ handler: (any TaskHandler)?) -> Bool { handler is PersistentPlugin }

    /// `pool_restart` (Celery's remote-control command): reloads the manifest as SIGHUP does.
    func poolRestart() -> JSONValue {
        guard let request = reloadRequest.withLock({ $0 }) else {
            return Self.error("reload is not available in this worker (it was not started by `celerity worker`)")
        }
        logger.info("remote control: pool_restart: reloading the manifest")
        request()
        return Self.ok("reload started")
    }
}
