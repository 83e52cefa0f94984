import Foundation
import RedisClient

// The worker's answers to Celery's remote-control commands (`celery inspect ...`,
// `celery control ...`, Flower, `app.control.revoke`), in the shapes a Python Celery 5.7
// worker replies with (docs/monitoring.md lists them, and what is refused).

extension Worker {
    /// The reply to `r` (nil: none, as for `shutdown` and casts that want none).
    func control(_ r: ControlRequest) async -> JSONValue? {
        switch r.method {
        case "ping": return Self.ok("pong")
        case "stats": return await statsReply()
        case "active": return .array(activeTasks().map { $0.info(self, safe: r.flag("safe"), started: true) })
        case "reserved": return .array(await reservedTasks().map { $0.info(self, safe: r.flag("safe"), started: false) })
        case "scheduled":
            return .array(await scheduledTasks().map { t in
                .object([JSONMember("eta", .string(CeleryDate.format(t.eta))), JSONMember("priority", .int(t.task.message.priority)),
                         JSONMember("request", t.task.info(self, safe: r.flag("safe"), started: false))])
            })
        case "registered":
            return .array(handlers.keys.filter { !$0.hasPrefix("celery.") }.sorted().map { .string(registeredItem($0, r)) })
        case "active_queues": return .array(runtime.queues.map(Self.queueInfo))
        case "revoked": return .array(revocations.all.sorted().map { .string($0) })
        case "conf": return confReply()
        case "query_task": return await queryTask(r)
        case "clock": return .object([JSONMember("clock", .int(controlClock.now))])
        case "report": return Self.ok("\nsoftware -> celerity:\(CelerityVersion.string) (swift)\nplatform -> \(ProcessInfo.processInfo.operatingSystemVersionString)\nbroker -> \(config.broker.description)\n")
        case "revoke": return await revoke(r)
        case "terminate": return await revoke(r, terminate: true)
        case "shutdown":
            logger.warning("remote control: shutdown requested (warm)")
            requestStop()
            return nil
        case "enable_events":
            return Self.ok(events.enable() ? "task events enabled" : "task events already enabled")
        case "disable_events":
            return Self.ok(events.disable() ? "task events disabled" : "task events already disabled")
        case "heartbeat":
            // A cast (Flower sends it at start-up): an immediate worker-heartbeat, as Python's.
            events.send("worker-heartbeat", fields: [JSONMember("freq", .double(5))] + EventDispatcher.software)
            return nil
        case "pool_grow": return poolResize(r, grow: true)
        case "pool_shrink": return poolResize(r, grow: false)
        case "add_consumer": return addConsumer(r)
        case "cancel_consumer": return cancelConsumer(r)
        case "rate_limit": return await rateLimit(r)
        case "time_limit": return timeLimit(r)
        case "pool_restart": return poolRestart()
        case "autoscale":
            return .object([JSONMember("error", .string("'\(r.method)' is not supported by Celerity workers yet"))])
        case "hello":
            // Another worker starting up: our revoked ids (none to our own hello).
            guard r.argument("from_node")?.stringValue != config.node else { return nil }
            return .object([JSONMember("revoked", .array(revocations.all.sorted().map { .string($0) })), JSONMember("clock", .int(controlClock.now))])
        default:
            return .object([JSONMember("error", .string("KeyError('\(r.method)')"))])
        }
    }

    static func ok(_ text: String) -> JSONValue { .object([JSONMember("ok", .string(text))]) }

    private var brokerHost: (host: String, port: Int) {
        switch config.broker.endpoint {
        case let .tcp(host, port): return (host, port)
        case let .unix(path): return (path, 0)
        case let .sentinel(group): return (group.sentinels.first?.host ?? group.masterName, group.sentinels.first?.port ?? 0)
        }
    }

    private func statsReply() async -> JSONValue {
        let s = stats.withLock { $0 }
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let uptime = Int(Date().timeIntervalSince(startedAt))
        return .object([
            JSONMember("total", .object(s.perTask.keys.sorted().compactMap { name in
                let n = s.perTask[name]!.total
                return n > 0 ? JSONMember(name, .int(n)) : nil
            })),
            JSONMember("pid", .int(Int(getpid()))),
            JSONMember("clock", .string(String(controlClock.now))),
            JSONMember("uptime", .int(uptime)),
            JSONMember("pool", .object([
                JSONMember("implementation", "celerity:TaskGroup"), JSONMember("max-concurrency", .int(runtime.concurrency)),
                JSONMember("processes", .array([.int(Int(getpid()))])), JSONMember("max-tasks-per-child", "N/A"),
                JSONMember("put-guarded-by-semaphore", false), JSONMember("timeouts", .array([0, 0])),
            ])),
            JSONMember("broker", .object([
                JSONMember("hostname", .string(brokerHost.host)), JSONMember("userid", config.broker.username.map { .string($0) } ?? .null),
                JSONMember("virtual_host", .string(String(config.broker.db))), JSONMember("port", .int(brokerHost.port)),
                JSONMember("insist", false), JSONMember("ssl", false), JSONMember("transport", "redis"),
                JSONMember("connect_timeout", 4), JSONMember("transport_options", .object([])), JSONMember("login_method", .null),
                JSONMember("uri_prefix", .null), JSONMember("heartbeat", .double(120)), JSONMember("failover_strategy", "round-robin"),
                JSONMember("alternates", .array([])),
            ])),
            JSONMember("prefetch_count", .int(runtime.concurrency * config.prefetchMultiplier)),
            JSONMember("rusage", .object([
                JSONMember("utime", .double(Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6)),
                JSONMember("stime", .double(Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6)),
                JSONMember("maxrss", .int(usage.ru_maxrss)),
            ])),
        ])
    }

    /// A queue as kombu describes it (`active_queues`; Flower's worker page reads `name`).
    static func queueInfo(_ q: String) -> JSONValue {
        .object([
            JSONMember("name", .string(q)),
            JSONMember("exchange", .object([JSONMember("name", .string(q)), JSONMember("type", "direct"), JSONMember("arguments", .null),
                                            JSONMember("durable", true), JSONMember("passive", false), JSONMember("auto_delete", false),
                                            JSONMember("delivery_mode", .null), JSONMember("no_declare", false)])),
            JSONMember("routing_key", .string(q)), JSONMember("queue_arguments", .null), JSONMember("binding_arguments", .null),
            JSONMember("consumer_arguments", .null), JSONMember("durable", true), JSONMember("exclusive", false), JSONMember("auto_delete", false),
            JSONMember("no_ack", false), JSONMember("alias", .null), JSONMember("bindings", .array([])), JSONMember("no_declare", .null),
            JSONMember("expires", .null), JSONMember("message_ttl", .null), JSONMember("max_length", .null),
            JSONMember("max_length_bytes", .null), JSONMember("max_priority", .null),
        ])
    }

    /// What the worker was started with, passwords masked as Celery masks them.
    private func confReply() -> JSONValue {
        var routes: [JSONMember] = []
        for name in manifest.taskOrder { if let q = manifest.tasks[name]?.queue { routes.append(JSONMember(name, .object([JSONMember("queue", .string(q))]))) } }
        let backend: String
        switch config.resultBackend.kind {
        case let .redis(u): backend = RedisURL.redact(u)
        case .rpc: backend = "rpc://"
        case .none: backend = "disabled"
        case .sameAsBroker: backend = config.broker.description
        }
        return .object([
            JSONMember("broker_url", .string(config.broker.description)), JSONMember("result_backend", .string(backend)),
            JSONMember("result_expires", .int(config.resultBackend.expires)), JSONMember("task_routes", .object(routes)),
            JSONMember("worker_concurrency", .int(runtime.concurrency)), JSONMember("worker_prefetch_multiplier", .int(config.prefetchMultiplier)),
            JSONMember("include", .array(handlers.keys.sorted().map { .string($0) })),
        ])
    }

    /// The messages running here.
    func activeTasks() -> [HeldTask] {
        inflight.withLock { Array($0.values) }.compactMap { e in
            (try? TaskMessage.decode(e.raw)).map { HeldTask(message: $0, startedAt: e.startedAt) }
        }
    }

    /// The messages this worker holds and has not started (its processing list, less what runs).
    func reservedTasks() async -> [HeldTask] {
        let running = Set(inflight.withLock { $0.values.map(\.taskID) })
        guard let raws = try? await broker.control.call("LRANGE", broker.processingKey, 0, -1).array?.compactMap(\.bytes) else { return [] }
        return raws.compactMap { try? TaskMessage.decode($0) }.filter { !running.contains($0.id) }.map { HeldTask(message: $0, startedAt: nil) }
    }

    /// Messages with an eta ahead, for the queues this worker consumes. They wait in Redis
    /// (`celerity:delayed`), held by no worker: every Celerity worker consuming their queue
    /// lists them (a Python worker lists those it holds in memory).
    func scheduledTasks() async -> [(eta: Date, task: HeldTask)] {
        guard let reply = try? await broker.control.call("ZRANGE", Keys.delayed, 0, 999, "WITHSCORES").array else { return [] }
        var out: [(Date, HeldTask)] = []
        var i = 0
        while i + 1 < reply.count {
            defer { i += 2 }
            guard let member = reply[i].bytes, let score = reply[i + 1].string.flatMap(Double.init),
                  let zero = member.firstIndex(of: 0) else { continue }
            let queue = Keys.queueName(fromListKey: String(decoding: member[..<zero], as: UTF8.self))
            guard runtime.isConsuming(queue), let m = try? TaskMessage.decode(Array(member[(zero + 1)...])) else { continue }
            out.append((Date(timeIntervalSince1970: score), HeldTask(message: m, startedAt: nil)))
        }
        return out
    }

    private func queryTask(_ r: ControlRequest) async -> JSONValue {
        var ids = Set<String>()
        switch r.argument("ids") {
        case let .array(a)?: ids = Set(a.compactMap(\.stringValue))
        case let .string(s)?: ids = [s]
        default: break
        }
        var out: [JSONMember] = []
        for t in activeTasks() where ids.contains(t.message.id) { out.append(JSONMember(t.message.id, .array(["active", t.info(self, safe: false, started: true)]))) }
        for t in await reservedTasks() where ids.contains(t.message.id) { out.append(JSONMember(t.message.id, .array(["reserved", t.info(self, safe: false, started: false)]))) }
        for t in await scheduledTasks() where ids.contains(t.task.message.id) { out.append(JSONMember(t.task.message.id, .array(["scheduled", t.task.info(self, safe: false, started: false)]))) }
        return .object(out)
    }

    /// Celery's `revoke`: flagged here at once and in `celerity:revoked` (so every Celerity
    /// worker, and this one after a restart, knows it); with `terminate`, a running execution
    /// here is stopped. A task not running here with no result yet is stored REVOKED now, as
    /// Celery 5.7 does, so a client waiting on it learns at once.
    private func revoke(_ r: ControlRequest, terminate forced: Bool = false) async -> JSONValue {
        var ids: [String] = []
        switch r.argument("task_id") {
        case let .string(s)?: ids = [s]
        case let .array(a)?: ids = a.compactMap(\.stringValue)
        default: return .object([JSONMember("error", "task_id is required")])
        }
        let terminate = forced || r.flag("terminate")
        // Celery's default is SIGTERM (`signal` null or absent, as AsyncResult.revoke sends it).
        var signal = SIGTERM
        if terminate, let named = r.argument("signal") {
            let text = named.stringValue ?? named.intValue.map { String($0) } ?? ""
            guard let n = Signals.number(text) else { return .object([JSONMember("error", .string("TypeError('signal name \(text) is not supported')"))]) }
            signal = n
        }
        let until = Date().timeIntervalSince1970 + 3 * 3600   // Celery keeps revoked ids 3 hours
        var cmds = ids.map { RedisCommand("ZADD", Keys.revoked, until, $0) }
        if terminate { cmds += ids.map { RedisCommand("ZADD", Keys.revokedTerminate, until, $0) } }
        _ = try? await broker.control.pipeline(cmds)
        revocations.add(Set(ids))
        let running = Set(inflight.withLock { $0.values.map(\.taskID) }).intersection(ids)
        if terminate && !running.isEmpty { self.terminate(running, signal: signal) }
        for id in ids where !running.contains(id) { await storeRevokedIfPending(id) }
        logger.info("remote control: revoked", metadata: ["ids": .string(ids.joined(separator: ",")), "terminate": .stringConvertible(terminate)])
        if terminate {
            return Self.ok(running.isEmpty ? "terminate: tasks unknown" : "terminate: " + running.sorted().joined(separator: ", "))
        }
        return Self.ok("tasks {\(ids.map { "'\($0)'" }.joined(separator: ", "))} flagged as revoked")
    }

    private func storeRevokedIfPending(_ id: String) async {
        guard results.chords != nil, let current = try? await broker.control.call("GET", Keys.resultMeta(id)) else { return }
        if let b = current.bytes, let meta = try? ResultMeta.decode(b), meta.state != .pending && meta.state != .retry { return }
        let stub = TaskMessage(id: id, task: "", queue: "")
        try? await results.store(ResultMeta.failure(id, .revoked("revoked"), state: .revoked), for: stub)
    }
}

/// A message held by this worker, for `active`, `reserved` and `query_task`.
struct HeldTask {
    let message: TaskMessage
    let startedAt: Date?

    /// Celery's `Request.info()`; with `safe`, args and kwargs as repr strings (Flower asks so).
    func info(_ worker: Worker, safe: Bool, started: Bool) -> JSONValue {
        let m = message
        return .object([
            JSONMember("id", .string(m.id)), JSONMember("name", .string(m.task)),
            JSONMember("args", safe ? .string(JSONValue.array(m.args).serialized()) : .array(m.args)),
            JSONMember("kwargs", safe ? .string(JSONValue.object(m.kwargs).serialized()) : .object(m.kwargs)),
            JSONMember("type", .string(m.task)), JSONMember("hostname", .string(worker.config.node)),
            JSONMember("time_start", startedAt.map { .double($0.timeIntervalSince1970) } ?? .null),
            JSONMember("acknowledged", .bool(false)),
            JSONMember("delivery_info", .object([JSONMember("exchange", ""), JSONMember("routing_key", .string(m.queue)),
                                                 JSONMember("priority", .int(m.priority)), JSONMember("redelivered", false)])),
            JSONMember("worker_pid", started ? .int(Int(getpid())) : .null),
        ])
    }
}

extension Worker {
    /// One line of `registered`: the name, then `[attr=value …]` for the attributes asked
    /// (`taskinfoitems`; Celery's default: exchange, routing_key, rate_limit) that the task
    /// has, as Celery's `_extract_info` writes them.
    func registeredItem(_ task: String, _ r: ControlRequest) -> String {
        let given = r.argument("taskinfoitems")?.arrayValue?.compactMap(\.stringValue) ?? []
        let asked = given.isEmpty ? ["exchange", "routing_key", "rate_limit"] : given
        let spec = manifest.tasks[task]
        var fields: [String] = []
        for item in asked {
            let value: String?
            switch item {
            case "rate_limit": value = gate.rateText(task)
            case "max_concurrency": value = spec?.maxConcurrency.map { "\($0)" }
            case "time_limit": value = (runtime.timeLimits(for: task)?.hard ?? spec?.timeLimit).map { "\($0)" }
            case "soft_time_limit": value = (runtime.timeLimits(for: task)?.soft ?? spec?.softTimeLimit).map { "\($0)" }
            case "max_retries": value = spec.map { "\($0.retries)" }
            case "ignore_result": value = spec.map { $0.storeResult ? "False" : "True" }
            case "track_started": value = spec.map { $0.trackStarted ? "True" : "False" }
            default: value = nil
            }
            if let value { fields.append("\(item)=\(value)") }
        }
        return fields.isEmpty ? task : "\(task) [\(fields.joined(separator: " "))]"
    }
}
