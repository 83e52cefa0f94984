import Foundation
import RedisClient
import Synchronization

/// Sends task calls to Celery-protocol queues on Redis and waits for their results.
///
/// Works with Celerity workers and with Python Celery workers alike. Links neither BigInt
/// nor BLAS. Redis keys touched: `<queue>` (LPUSH, priority lists for priority ≥ 3),
/// `_kombu.binding.<queue>` (SADD, once per queue), `celery-task-meta-<id>` (GET/SUBSCRIBE,
/// Redis backend) or the client's `reply_to` list (BRPOP, rpc backend).
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

    /// - Parameters:
    ///   - broker: `redis://…` URL of the broker.
    ///   - resultBackend: `redis://…`, `rpc://` or `none`; nil means the broker's Redis.
    ///   - manifest: routes tasks to their queues when given.
    public convenience init(broker: String, resultBackend: String? = nil, manifest: Manifest? = nil) throws {
        let b = try RedisURL(string: broker)
        let cfg = try resultBackend.map { try ResultBackendConfig.parse($0) } ?? ResultBackendConfig(kind: .redis(broker))
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
    public func message(_ task: String, args: [JSONValue] = [], kwargs: [JSONMember] = [], options: SendOptions = SendOptions()) -> TaskMessage {
        let queue = options.queue ?? manifest?.queue(for: task) ?? "celery"
        var eta = options.eta
        if let c = options.countdown { eta = Date().addingTimeInterval(c) }
        return TaskMessage(id: options.taskID ?? UUID().uuidString.lowercased(), task: task, args: args, kwargs: kwargs, queue: queue,
                           priority: options.priority, eta: eta, expires: options.expires, replyTo: replyTo,
                           hardTimeLimit: options.timeLimit, ignoreResult: options.ignoreResult)
    }

    /// Sends one call and returns its handle (LPUSH to the queue's list for its priority).
    public func send(_ task: String, args: [JSONValue] = [], kwargs: [JSONMember] = [], options: SendOptions = SendOptions()) async throws -> AsyncResult {
        let m = message(task, args: args, kwargs: kwargs, options: options)
        try await publish(m)
        return AsyncResult(id: m.id, client: self)
    }

    /// Publishes a prepared message.
    public func publish(_ m: TaskMessage) async throws {
        var commands: [RedisCommand] = []
        let fresh = declared.withLock { $0.insert(m.queue).inserted }
        if fresh {
            // kombu's binding tables, so Python producers that publish via the exchange still route.
            commands.append(RedisCommand("SADD", Keys.binding(m.queue), Keys.bindingMember(m.queue)))
            commands.append(RedisCommand("SADD", Keys.bindingPermanent(m.queue), Keys.bindingMember(m.queue)))
        }
        commands.append(RedisCommand("LPUSH", Keys.queue(m.queue, priority: m.priority), m.encode()))
        let replies: [RedisReply]
        do { replies = try await redis.pipeline(commands) } catch let e as RedisError {
            if fresh { _ = declared.withLock { $0.remove(m.queue) } }
            throw ClientError("cannot send \(m.task) to \(broker): \(e.message)")
        }
        for r in replies { if case let .error(msg) = r { throw ClientError("broker refused \(m.task): \(msg)") } }
    }

    /// The stored result document of a task (Redis backend), or nil while PENDING.
    public func meta(of id: String) async throws -> ResultMeta? {
        guard let resultRedis else {
            throw ClientError(backend.kind == .rpc ? "the rpc backend keeps results in the sending client's reply list; they cannot be looked up by id" : "no result backend is configured")
        }
        let r: RedisReply
        do { r = try await resultRedis.call("GET", Keys.resultMeta(id)) } catch let e as RedisError { throw ClientError("cannot read result of \(id): \(e.message)") }
        guard let bytes = r.bytes else { return nil }
        return try ResultMeta.decode(bytes)
    }

    /// Waits for a ready state (SUCCESS, FAILURE, REVOKED) of `id`.
    public func waitForResult(_ id: String, timeout: Duration) async throws -> ResultMeta {
        let seconds = Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18
        let deadline = Date().addingTimeInterval(seconds)
        switch backend.kind {
        case .none:
            throw ClientError("no result backend is configured; results cannot be waited for")
        case .rpc:
            return try await rpc.wait(for: id, until: deadline)
        case .redis, .sameAsBroker:
            guard let resultRedis else { throw ClientError("no result connection") }
            // Subscribe first, then GET (covers a result stored before the subscription),
            // then wait on the channel: no polling.
            let sub = Redis(url: resultRedis.url, label: "client-subscribe")
            defer { Task { await sub.close() } }
            let channel = Keys.resultMeta(id)
            do {
                _ = try await sub.send(RedisCommand("SUBSCRIBE", channel)).throwingError()
                if let m = try await meta(of: id), m.state.isReady { return m }
                while true {
                    let left = deadline.timeIntervalSinceNow
                    if left <= 0 { throw TimeoutError(id: id, seconds: seconds) }
                    guard let push = try await sub.nextPush(timeout: left) else { throw TimeoutError(id: id, seconds: seconds) }
                    guard let parts = push.array, parts.count == 3, parts[0].string == "message", let payload = parts[2].bytes else { continue }
                    let m = try ResultMeta.decode(payload)
                    if m.state.isReady { return m }
                }
            } catch let e as RedisError {
                throw ClientError("lost the result backend while waiting for \(id): \(e.message)")
            }
        }
    }
}

/// The handle of one sent call.
public struct AsyncResult: Sendable {
    public let id: String
    public let client: CelerityClient

    /// A handle for a task sent earlier (by any client), by its id.
    public init(id: String, client: CelerityClient) {
        self.id = id
        self.client = client
    }

    /// The current state (PENDING while nothing is stored). Redis backend only.
    public func state() async throws -> TaskState {
        try await client.meta(of: id)?.state ?? .pending
    }

    /// Waits for the result: returns the value on SUCCESS, throws the `TaskFailure` on FAILURE
    /// or REVOKED, and `TimeoutError` when nothing is ready in time.
    public func get(timeout: Duration = .seconds(60)) async throws -> JSONValue {
        let m = try await client.waitForResult(id, timeout: timeout)
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
            } catch let e as RedisError { throw ClientError("lost the broker while waiting for \(id): \(e.message)") }
            guard let parts = r.array, parts.count == 2, let raw = parts[1].bytes else { continue }
            let (corr, meta) = try ResultMeta.decodeRPCEnvelope(raw)
            if meta.state.isReady { stash[corr] = meta }
        }
    }
}

public struct ClientError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

public struct TimeoutError: Error, Sendable, CustomStringConvertible {
    public var id: String
    public var seconds: Double
    public var description: String { "no result for task \(id) within \(seconds) s (is a worker consuming its queue?)" }
}
