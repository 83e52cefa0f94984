import Foundation
import RedisClient
import Synchronization

/// Sends task calls to Celery-protocol queues on Redis and waits for their results.
///
/// Works with Celerity workers and with Python Celery workers alike. Links neither BigInt
/// nor BLAS. Redis keys touched: `<queue>` (LPUSH, priority lists for priority ≥ 3),
/// `_kombu.binding.<queue>` (SADD, once per queue), `celery-task-meta-<id>` (GET/MGET, and
/// PSUBSCRIBE `celery-task-meta-<prefix>*` or SUBSCRIBE for ids of other clients; Redis
/// backend) or the client's `reply_to` list (BRPOP, rpc backend).
public final class CelerityClient: Sendable {
    public let broker: RedisURL
    public let backend: ResultBackendConfig
    public let manifest: Manifest?
    /// This client's reply list for the rpc backend (Celery's `oid`).
    public let replyTo: String
    let redis: Redis
    let resultRedis: Redis?
    let declared = Mutex<Set<String>>([])
    let rpc: RPCReplies
    /// Task ids made by this client start with this (a random UUID's first 19 characters),
    /// so one PSUBSCRIBE `celery-task-meta-<prefix>*` brings every result of this client's
    /// calls: waiting costs no command per call. Ids stay UUID4-shaped.
    public let idPrefix: String
    let waiters = ResultWaiters()
    /// The result subscriber (Redis backend only), started at the first call that waits.
    let subscriber: RedisPubSub?
    let subscribed = Mutex<Task<Void, any Error>?>(nil)
    /// Set once the pattern subscription is confirmed (the fast path of `ensureSubscribed`).
    let isSubscribed = Atomic<Bool>(false)
    /// Set when Redis refused the pattern subscription for want of permission: an ACL
    /// allows PSUBSCRIBE only of patterns it lists literally (`&celery-task-meta-*` does not
    /// allow `celery-task-meta-<prefix>*`), while it allows SUBSCRIBE of every channel its
    /// patterns match. Then each wait subscribes to its task's channel, as Celery does.
    let perCallChannels = Atomic<Bool>(false)

    /// - Parameters:
    ///   - broker: `redis://…` (or `sentinel://…`, `unix://…`) URL of the broker.
    ///   - resultBackend: `redis://…`, `rpc://` or `none`; nil means the broker's Redis.
    ///   - manifest: routes tasks to their queues when given; its
    ///     `broker_transport_options.master_name` completes `sentinel://` URLs.
    public convenience init(broker: String, resultBackend: String? = nil, manifest: Manifest? = nil) throws {
        let brokerString = RedisURL.withMasterName(broker, manifest?.sentinelMasterName)
        let b = try RedisURL(string: brokerString)
        let cfg = try resultBackend.map { try ResultBackendConfig.parse(RedisURL.withMasterName($0, manifest?.sentinelMasterName)) }
            ?? ResultBackendConfig(kind: .redis(brokerString))
        try self.init(broker: b, backend: cfg, manifest: manifest)
    }

    public init(broker: RedisURL, backend: ResultBackendConfig, manifest: Manifest? = nil) throws {
        self.broker = broker
        self.backend = backend
        self.manifest = manifest
        self.replyTo = UUID().uuidString.lowercased()
        self.redis = Redis(url: broker, label: "client")
        switch backend.kind {
        case let .redis(u):
            let url = try RedisURL(string: u)
            resultRedis = url == broker ? redis : Redis(url: url, label: "client-results")
        case .sameAsBroker:
            resultRedis = redis
        case .rpc, .none:
            resultRedis = nil
        }
        rpc = RPCReplies(redis: Redis(url: broker, label: "client-rpc"), replyTo: replyTo)
        idPrefix = String(UUID().uuidString.lowercased().prefix(19))
        if let resultRedis {
            let waiters = self.waiters
            let channelPrefix = Keys.resultMeta("").utf8.count
            let reread = Redis(url: resultRedis.url, label: "client-reread")
            subscriber = RedisPubSub(url: resultRedis.url, label: "client-results", onMessage: { channel, payload in
                guard channel.count > channelPrefix, let meta = try? ResultMeta.decode(payload), meta.state.isReady else { return }
                waiters.deliver(String(decoding: channel[channelPrefix...], as: UTF8.self), meta)
            }, onReconnect: {
                // Results published while the subscription was down were missed: read the keys.
                let ids = waiters.invalidate()
                Task { await CelerityClient.readKeys(ids, on: reread, into: waiters) }
            })
        } else {
            subscriber = nil
        }
    }

    deinit { subscriber?.shutdown() }

    /// A fresh task id with this client's prefix (UUID4-shaped).
    public func newTaskID() -> String {
        idPrefix + FastUUID.string().dropFirst(19)
    }

    /// Starts this client's result subscription now, waiting at most `timeout` for Redis to
    /// confirm it (the first `send` that will wait for a result does it otherwise, bounded by
    /// 10 s). Throws a `ClientError` when Redis refuses it (e.g. an ACL user without the
    /// channel pattern `celery-task-meta-*`: `isPermissionDenied`), `TimeoutError` when no
    /// confirmation came in time. Does nothing for the rpc backend or none.
    public func subscribeToResults(timeout: Duration) async throws {
        try await ensureSubscribed(until: Date().addingTimeInterval(CelerityClient.seconds(timeout)))
    }

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    /// Starts the pattern subscription for this client's results once; later calls wait for it
    /// (each until its `deadline`, 10 s from now by default).
    func ensureSubscribed(until deadline: Date? = nil) async throws {
        guard let subscriber, !isSubscribed.load(ordering: .acquiring) else { return }
        let task = subscribed.withLock { t -> Task<Void, any Error> in
            if let t { return t }
            let pattern = Keys.resultMeta(idPrefix) + "*"
            let n = Task { try await subscriber.psubscribe([pattern]) }
            t = n
            return n
        }
        let deadline = deadline ?? Date().addingTimeInterval(10)
        do {
            guard try await awaitTask(task, until: deadline) else {
                throw TimeoutError(id: "", seconds: 0, detail: "Redis at \(subscriber.url) did not confirm the result subscription (PSUBSCRIBE \(Keys.resultMeta(idPrefix))*) in time")
            }
            isSubscribed.store(true, ordering: .releasing)
        } catch let t as TimeoutError {
            throw t
        } catch let e as RedisError where e.isPermissionDenied {
            // Fall back to one SUBSCRIBE per waited call, if this user may subscribe to result
            // channels at all: checked now on a channel of the same shape (no task has this
            // id), so a user who may not fails before sending anything.
            let probe = Keys.resultMeta(idPrefix)
            let sub = Task { try await subscriber.subscribe([probe]) }
            do {
                guard try await awaitTask(sub, until: deadline) else {
                    throw TimeoutError(id: "", seconds: 0, detail: "Redis at \(subscriber.url) did not confirm a result subscription (SUBSCRIBE \(probe)) in time")
                }
            } catch let t as TimeoutError { throw t } catch { throw ClientError.subscription(error, url: subscriber.url) }
            subscriber.unsubscribe([probe])
            perCallChannels.store(true, ordering: .releasing)
            isSubscribed.store(true, ordering: .releasing)
        } catch {
            subscribed.withLock { if $0 == task { $0 = nil } }
            throw ClientError.subscription(error, url: subscriber.url)
        }
    }

    /// Reads result keys (MGET, in chunks) and hands the ready documents to their waiters.
    static func readKeys(_ ids: [String], on redis: Redis, into waiters: ResultWaiters) async {
        var i = 0
        while i < ids.count {
            let chunk = Array(ids[i..<min(i + 1000, ids.count)])
            i += chunk.count
            guard let r = try? await redis.send(RedisCommand("MGET", arguments: chunk.map(Keys.resultMeta))), let items = r.array else { continue }
            for (id, item) in zip(chunk, items) {
                if let bytes = item.bytes, let meta = try? ResultMeta.decode(bytes), meta.state.isReady { waiters.deliver(id, meta) }
            }
        }
    }

    /// Options of one call (Celery's `apply_async` keywords).
    public struct SendOptions: Sendable {
        /// Overrides the manifest's routing.
        public var queue: String?
        /// Run no earlier than this many seconds from now.
        public var countdown: Double?
        public var eta: Date?
        /// Mark REVOKED instead of running after this time.
        public var expires: Date?
        /// 0–9; on Redis 0 is served first (Celery's rule).
        public var priority: Int = 0
        /// Hard time limit in seconds, sent in the message's `timelimit` header.
        public var timeLimit: Double?
        public var ignoreResult: Bool = false
        /// Use this id instead of a fresh UUID.
        public var taskID: String?
        public init(queue: String? = nil, countdown: Double? = nil, eta: Date? = nil, expires: Date? = nil, priority: Int = 0,
                    timeLimit: Double? = nil, ignoreResult: Bool = false, taskID: String? = nil) {
            self.queue = queue
            self.countdown = countdown
            self.eta = eta
            self.expires = expires
            self.priority = priority
            self.timeLimit = timeLimit
            self.ignoreResult = ignoreResult
            self.taskID = taskID
        }
    }

    /// The message a call would send (for bulk sending or inspection).
    /// A task with `unique:` in the manifest gets its key (`celerity_unique_key` header).
    public func message(_ task: String, args: [JSONValue] = [], kwargs: [JSONMember] = [], options: SendOptions = SendOptions()) -> TaskMessage {
        let spec = manifest?.tasks[task]
        let queue = options.queue ?? spec?.queue ?? "celery"
        var eta = options.eta
        if let c = options.countdown { eta = Date().addingTimeInterval(c) }
        var m = TaskMessage(id: options.taskID ?? newTaskID(), task: task, args: args, kwargs: kwargs, queue: queue,
                            priority: options.priority, eta: eta, expires: options.expires, replyTo: replyTo,
                            hardTimeLimit: options.timeLimit, ignoreResult: options.ignoreResult)
        if let unique = spec?.unique { m.uniqueKey = unique.redisKey(task: task, args: args, kwargs: kwargs) }
        return m
    }

    /// Checks a call against its task's argument schema (`params` in this client's manifest;
    /// a task without one accepts anything). `send`/`sendMany` do it before queueing.
    public func check(_ task: String, args: [JSONValue], kwargs: [JSONMember]) throws(ArgumentError) {
        guard let params = manifest?.tasks[task]?.params, let problem = params.validate(task: task, args: args, kwargs: kwargs) else { return }
        throw ArgumentError(task: task, problem: problem)
    }

    /// Sends one call and returns its handle (LPUSH to the queue's list for its priority).
    /// For a unique task (`unique:` in the manifest) whose key is held by a call still queued
    /// or running, nothing is sent: the handle is that call's (`isDuplicate`).
    public func send(_ task: String, args: [JSONValue] = [], kwargs: [JSONMember] = [], options: SendOptions = SendOptions()) async throws -> AsyncResult {
        let m = message(task, args: args, kwargs: kwargs, options: options)
        return try await sendMany([m])[0]
    }

    /// Sends many calls at once: one LPUSH per queue list per 1,000 messages, all pipelined
    /// (a few round trips for any number of calls). Order within a queue is kept.
    /// Each call is checked against its task's argument schema (the manifest's `params`)
    /// first: a bad one throws `ArgumentError` and nothing at all is queued.
    public func sendMany(_ messages: [TaskMessage]) async throws -> [AsyncResult] {
        guard !messages.isEmpty else { return [] }
        for m in messages { try check(m.task, args: m.args, kwargs: m.kwargs) }
        // Subscribe before publishing, so no result of ours can be published unseen.
        // (To send without waiting for results, use `publish`: it needs no subscription.)
        if messages.contains(where: { !$0.ignoreResult && $0.id.hasPrefix(idPrefix) }) { try await ensureSubscribed() }
        let mark = waiters.mark
        let duplicates = try await publish(messages)
        let own = !perCallChannels.load(ordering: .acquiring)
        guard !duplicates.isEmpty else {
            return messages.map { AsyncResult(id: $0.id, client: self, mark: own && $0.id.hasPrefix(idPrefix) ? mark : nil) }
        }
        return messages.indices.map { i in
            if let first = duplicates[i] { return AsyncResult(id: first, client: self, mark: nil, isDuplicate: true) }
            return AsyncResult(id: messages[i].id, client: self, mark: own && messages[i].id.hasPrefix(idPrefix) ? mark : nil)
        }
    }

    /// Publishes one prepared message. Returns nil when it was enqueued, or, for a unique
    /// task whose key is held, the id of the call holding it (nothing was enqueued).
    @discardableResult
    public func publish(_ m: TaskMessage) async throws -> String? { try await publish([m])[0] }

    /// Enqueues a unique call atomically. KEYS[1] its unique key, KEYS[2] its queue list;
    /// ARGV[1] task id, ARGV[2] ttl (ms), ARGV[3] message. Returns nil when it was enqueued,
    /// else the id that holds the key (nothing pushed).
    static let uniqueEnqueueScript = """
    if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
      redis.call('LPUSH', KEYS[2], ARGV[3])
      return false
    end
    return redis.call('GET', KEYS[1])
    """

    /// Publishes prepared messages in pipelined LPUSH batches. Returns the messages that were
    /// not enqueued, by index, with the id of the call that holds their unique key (a task
    /// with `unique:` in this client's manifest; see `UniqueSpec`); empty when all were.
    @discardableResult
    public func publish(_ messages: [TaskMessage]) async throws -> [Int: String] {
        var commands: [RedisCommand] = []
        var fresh: [String] = []
        for q in Set(messages.map(\.queue)) where declared.withLock({ $0.insert(q).inserted }) {
            fresh.append(q)
            // kombu's binding tables, so Python producers that publish via the exchange still route.
            commands.append(RedisCommand("SADD", Keys.binding(q), Keys.bindingMember(q)))
            commands.append(RedisCommand("SADD", Keys.bindingPermanent(q), Keys.bindingMember(q)))
        }
        // Consecutive messages for the same list share one LPUSH (LPUSH k a b: a is popped first).
        var key = ""
        var batch: [[UInt8]] = []
        func flush() {
            if !batch.isEmpty { commands.append(RedisCommand([Array("LPUSH".utf8), Array(key.utf8)] + batch)) }
            batch.removeAll(keepingCapacity: true)
        }
        // Unique calls: one script each (SET NX PX + LPUSH), at their place in the order.
        var uniqueAt: [Int: Int] = [:]   // command index → message index
        for (i, m) in messages.enumerated() {
            let k = Keys.queue(m.queue, priority: m.priority)
            if let uniqueKey = m.uniqueKey, let ttl = manifest?.tasks[m.task]?.unique?.ttl {
                flush()
                key = ""
                uniqueAt[commands.count] = i
                commands.append(RedisCommand("EVAL", CelerityClient.uniqueEnqueueScript, 2, uniqueKey, k, m.id, ttl * 1000, m.encode()))
                continue
            }
            if k != key || batch.count >= 1000 { flush(); key = k }
            batch.append(m.encode())
        }
        flush()
        var duplicates: [Int: String] = [:]
        let what = messages.count == 1 ? messages[0].task : "\(messages.count) calls"
        var i = 0
        while i < commands.count {
            var chunk = Array(commands[i..<min(i + 50, commands.count)])
            i += chunk.count
            // wait_replicas on the broker URL: WAIT in the same pipeline, after the pushes.
            let waiting = broker.waitReplicas > 0
            if waiting { chunk.append(RedisCommand("WAIT", broker.waitReplicas, broker.waitTimeoutMs)) }
            var replies: [RedisReply]
            do { replies = try await redis.pipeline(chunk) } catch let e as RedisError {
                declared.withLock { for q in fresh { $0.remove(q) } }
                throw ClientError("cannot send \(what) to \(broker): \(e.message)", cause: e)
            }
            if waiting, let confirmed = replies.popLast() {
                chunk.removeLast()
                if case let .integer(n) = confirmed, n < broker.waitReplicas {
                    throw ClientError("sent \(what) to \(broker), but only \(n) of \(broker.waitReplicas) replicas confirmed within \(broker.waitTimeoutMs) ms (wait_replicas): a failover now could lose them")
                }
            }
            for (j, (r, c)) in zip(replies, chunk).enumerated() {
                if !uniqueAt.isEmpty, let m = uniqueAt[i - chunk.count + j], let first = r.string { duplicates[m] = first }
                if case .error = r {
                    do { try r.throwingError(naming: c) } catch {
                        declared.withLock { for q in fresh { $0.remove(q) } }
                        throw ClientError("broker \(broker) refused \(what): \(error.message)\(error.isPermissionDenied ? " (the ACL user needs the command and write access to the key; see docs/security.md)" : "")", cause: error)
                    }
                }
            }
        }
        return duplicates
    }

    /// The stored result document of a task (Redis backend), or nil while PENDING.
    public func meta(of id: String) async throws -> ResultMeta? {
        guard let resultRedis else {
            throw ClientError(backend.kind == .rpc ? "the rpc backend keeps results in the sending client's reply list; they cannot be looked up by id" : "no result backend is configured")
        }
        let r: RedisReply
        do { r = try await resultRedis.call("GET", Keys.resultMeta(id)) } catch let e as RedisError { throw ClientError("cannot read result of \(id): \(e.message)", cause: e) }
        guard let bytes = r.bytes else { return nil }
        return try ResultMeta.decode(bytes)
    }

    /// Waits for a ready state (SUCCESS, FAILURE, REVOKED) of `id`.
    public func waitForResult(_ id: String, timeout: Duration) async throws -> ResultMeta {
        try await waitForResult(id, timeout: timeout, mark: nil)
    }

    func waitForResult(_ id: String, timeout: Duration, mark: Int?) async throws -> ResultMeta {
        let seconds = Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18
        let deadline = Date().addingTimeInterval(seconds)
        switch backend.kind {
        case .none:
            throw ClientError("no result backend is configured; results cannot be waited for")
        case .rpc:
            return try await rpc.wait(for: id, until: deadline)
        case .redis, .sameAsBroker:
            guard let resultRedis, let subscriber else { throw ClientError("no result connection") }
            let waiters = self.waiters
            let readKey: @Sendable () async -> Void = { await CelerityClient.readKeys([id], on: resultRedis, into: waiters) }
            let meta: ResultMeta?
            if id.hasPrefix(idPrefix) { try await ensureSubscribed(until: deadline) }
            if id.hasPrefix(idPrefix) && !perCallChannels.load(ordering: .acquiring) {
                // Sent by this client under the current mark: the result cannot have been missed.
                meta = await waiters.wait(id, until: deadline, registered: mark == waiters.mark ? nil : readKey)
            } else {
                // Someone else's call: subscribe to its channel, then read its key.
                let channel = Keys.resultMeta(id)
                let sub = Task { try await subscriber.subscribe([channel]) }
                do {
                    guard try await awaitTask(sub, until: deadline) else { throw TimeoutError(id: id, seconds: seconds) }
                } catch let t as TimeoutError { throw t } catch { throw ClientError.subscription(error, url: subscriber.url) }
                meta = await waiters.wait(id, until: deadline, registered: readKey)
                subscriber.unsubscribe([channel])
            }
            guard let meta else { throw TimeoutError(id: id, seconds: seconds) }
            return meta
        }
    }

    /// Waits for many results at once (Redis or rpc backend), in the order given. Results
    /// stream in on this client's one subscription; `progress(done, total)` is called as they
    /// come (about every 1%). Throws `TimeoutError` for the first one not ready by the deadline.
    public func gather(_ handles: [AsyncResult], timeout: Duration, progress: (@Sendable (Int, Int) -> Void)? = nil) async throws -> [ResultMeta] {
        let seconds = Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18
        let deadline = Date().addingTimeInterval(seconds)
        var out: [ResultMeta] = []
        out.reserveCapacity(handles.count)
        let step = max(handles.count / 100, 1)
        guard let resultRedis, let subscriber else {
            // rpc backend: its replies come one list for this client; wait in order.
            for (i, h) in handles.enumerated() {
                out.append(try await waitForResult(h.id, timeout: .milliseconds(Int(max(deadline.timeIntervalSinceNow, 0) * 1000)), mark: h.mark))
                if let progress, (i + 1) % step == 0 || i + 1 == handles.count { progress(i + 1, handles.count) }
            }
            return out
        }
        try await ensureSubscribed(until: deadline)
        let perCall = perCallChannels.load(ordering: .acquiring)
        let foreign = handles.filter { perCall || !$0.id.hasPrefix(idPrefix) }.map { Keys.resultMeta($0.id) }
        var start = 0
        while start < foreign.count {
            let chunk = Array(foreign[start..<min(start + 1000, foreign.count)])
            start += chunk.count
            let sub = Task { try await subscriber.subscribe(chunk) }
            do {
                guard try await awaitTask(sub, until: deadline) else { throw TimeoutError(id: handles[0].id, seconds: seconds) }
            } catch let t as TimeoutError { throw t } catch { throw ClientError.subscription(error, url: subscriber.url) }
        }
        defer { subscriber.unsubscribe(foreign) }
        // Read the keys of every result that could have been missed (published before we
        // subscribed, dropped from the stash, or sent before a reconnect); the rest stream in.
        var mark = waiters.mark
        await CelerityClient.readKeys(handles.filter { $0.mark != mark }.map(\.id), on: resultRedis, into: waiters)
        for (i, h) in handles.enumerated() {
            if waiters.mark != mark {
                mark = waiters.mark
                await CelerityClient.readKeys(handles[i...].map(\.id), on: resultRedis, into: waiters)
            }
            guard let m = await waiters.wait(h.id, until: deadline) else { throw TimeoutError(id: h.id, seconds: seconds) }
            out.append(m)
            if let progress, (i + 1) % step == 0 || i + 1 == handles.count { progress(i + 1, handles.count) }
        }
        return out
    }
}

/// The handle of one sent call.
public struct AsyncResult: Sendable {
    public let id: String
    public let client: CelerityClient
    /// The client's result mark when sent (nil: not sent by this client, or unknown).
    let mark: Int?
    /// True when the call was not enqueued because a call with the same unique key
    /// (`unique:` in the manifest) is still queued or running: `id` is that call's, and
    /// `get()` waits for its result.
    public let isDuplicate: Bool

    /// A handle for a task sent earlier (by any client), by its id.
    public init(id: String, client: CelerityClient) {
        self.init(id: id, client: client, mark: nil)
    }

    init(id: String, client: CelerityClient, mark: Int?, isDuplicate: Bool = false) {
        self.id = id
        self.client = client
        self.mark = mark
        self.isDuplicate = isDuplicate
    }

    /// The current state (PENDING while nothing is stored). Redis backend only.
    public func state() async throws -> TaskState {
        try await client.meta(of: id)?.state ?? .pending
    }

    /// Waits for the result: returns the value on SUCCESS, throws the `TaskFailure` on FAILURE
    /// or REVOKED, and `TimeoutError` when nothing is ready in time.
    public func get(timeout: Duration = .seconds(60)) async throws -> JSONValue {
        let m = try await client.waitForResult(id, timeout: timeout, mark: mark)
        if m.state == .success { return m.result }
        throw m.failure ?? TaskFailure(type: "Exception", message: "task ended in state \(m.state.rawValue)")
    }
}

/// Waiting for rpc replies: one BRPOP at a time on this client's reply list; replies for other
/// calls are kept until their waiter asks.
actor RPCReplies {
    let redis: Redis
    let replyTo: String
    var stash: [String: ResultMeta] = [:]

    init(redis: Redis, replyTo: String) {
        self.redis = redis
        self.replyTo = replyTo
    }

    func wait(for id: String, until deadline: Date) async throws -> ResultMeta {
        while true {
            if let m = stash.removeValue(forKey: id) { return m }
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { throw TimeoutError(id: id, seconds: 0) }
            // Short blocking steps so other waiters of this actor get their turn.
            let step = min(left, 1.0)
            let r: RedisReply
            do {
                r = try await redis.blocking(RedisCommand("BRPOP", replyTo, max(step, 0.01)), timeout: step).throwingError()
            } catch let e as RedisError {
                throw ClientError(e.isPermissionDenied ? "broker refused to wait for \(id) on its reply list \(replyTo): \(e.message) (the ACL user needs BRPOP and the reply-list keys; see docs/security.md)"
                                                     : "lost the broker while waiting for \(id): \(e.message)", cause: e)
            }
            guard let parts = r.array, parts.count == 2, let raw = parts[1].bytes else { continue }
            let (corr, meta) = try ResultMeta.decodeRPCEnvelope(raw)
            if meta.state.isReady { stash[corr] = meta }
        }
    }
}
