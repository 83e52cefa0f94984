import Foundation
import RedisClient

/// Where a worker stores results, and where clients read them. A backend is the one place
/// that knows what a result looks like on the wire: the worker's batched pipeline asks it
/// (`write`) as its one-by-one path does (`store`). A new backend is a type here (and its
/// URL in `ResultBackendConfig`).
public protocol ResultBackend: Sendable {
    /// Stores `meta` for the task of `message`. Throws on Redis trouble: the caller must not ack then.
    func store(_ meta: ResultMeta, for message: TaskMessage) async throws
    /// What the worker's batched store-and-ack pipeline (`Completer`) writes for `meta`; nil
    /// when nothing is stored (no backend, or an rpc call without `reply_to`).
    func write(_ meta: ResultMeta, for message: TaskMessage) -> ResultWrite?
    /// Commands of the kind the backend sends, on keys of the kind it uses, for the worker's
    /// ACL check at startup (`probe`: a key name that exists nowhere).
    func permissionProbe(_ probe: String) -> [RedisCommand]
    /// Where chords are joined (ChordStore.swift); nil: this backend has no chords.
    var chords: (any ChordStore)? { get }
}

/// One result as the worker's batched pipeline writes it.
public enum ResultWrite: Sendable, Equatable {
    /// Celery's Redis backend: SET (with TTL) + PUBLISH on `celery-task-meta-<id>`.
    /// `success`: the document is a SUCCESS (may be written over anything); any other goes
    /// through `RedisResultBackend.storeScript` (never over a stored SUCCESS).
    case redisKey(String, [UInt8], success: Bool)
    /// Celery's rpc backend: LPUSH the reply envelope to the client's reply list.
    case rpcList(String, [UInt8])
}

/// Celery's Redis result backend: `celery-task-meta-<id>` set with a TTL and published on the
/// channel of the same name, in one script so a stored SUCCESS is never overwritten (Celery's rule).
public struct RedisResultBackend: ResultBackend {
    public let redis: Redis
    /// Seconds to keep results (0: forever).
    public let expires: Int
    /// Celery's `result_extended`: the node name written as `worker` (nil: not extended).
    public let extendedBy: String?

    public init(redis: Redis, expires: Int, extendedBy worker: String? = nil) {
        self.redis = redis
        self.expires = expires
        self.extendedBy = worker
    }

    /// KEYS[1] result key/channel; ARGV[1] document, ARGV[2] TTL seconds (0 = none).
    /// Returns 0 when a SUCCESS was already stored (nothing written), else 1.
    static let storeScript = RedisScript("""
    local cur = redis.call('GET', KEYS[1])
    if cur and string.find(cur, '"status"%s*:%s*"SUCCESS"') then return 0 end
    if tonumber(ARGV[2]) > 0 then
      redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
    else
      redis.call('SET', KEYS[1], ARGV[1])
    end
    redis.call('PUBLISH', KEYS[1], ARGV[1])
    return 1
    """)

    public func store(_ meta: ResultMeta, for message: TaskMessage) async throws {
        let document = meta.forRequest(message, extendedBy: extendedBy).encode()
        _ = try await redis.evalScript(RedisResultBackend.storeScript, keys: [Keys.resultMeta(meta.taskID)], args: [document, expires])
    }

    public func write(_ meta: ResultMeta, for message: TaskMessage) -> ResultWrite? {
        .redisKey(Keys.resultMeta(meta.taskID), meta.forRequest(message, extendedBy: extendedBy).encode(), success: meta.state == .success)
    }

    public func permissionProbe(_ probe: String) -> [RedisCommand] {
        let key = Keys.resultMeta(probe)
        return [RedisCommand("SET", key, probe, "EX", 1), RedisCommand("GET", key), RedisCommand("PUBLISH", key, probe)]
    }

    public var chords: (any ChordStore)? { self }
}

/// Celery's rpc backend: the document, wrapped in a message envelope, LPUSHed to the client's
/// `reply_to` list on the broker. Without a `reply_to` nothing is stored (as in Celery).
public struct RPCResultBackend: ResultBackend {
    public let redis: Redis
    /// Celery's `result_extended`: the node name written as `worker` (nil: not extended).
    public let extendedBy: String?
    public init(redis: Redis, extendedBy worker: String? = nil) {
        self.redis = redis
        self.extendedBy = worker
    }
    public func store(_ meta: ResultMeta, for message: TaskMessage) async throws {
        guard case let .rpcList(replyTo, envelope)? = write(meta, for: message) else { return }
        try await redis.call("LPUSH", replyTo, envelope)
    }

    public func write(_ meta: ResultMeta, for message: TaskMessage) -> ResultWrite? {
        message.replyTo.map { .rpcList($0, meta.forRequest(message, extendedBy: extendedBy).rpcEnvelope(replyTo: $0, correlationID: message.correlationID)) }
    }

    public func permissionProbe(_ probe: String) -> [RedisCommand] {
        [RedisCommand("LPUSH", "00000000-0000-0000-0000-000000000000", probe)]
    }

    /// Celery refuses chords on rpc:// ("The rpc result backend does not support chords!").
    public var chords: (any ChordStore)? { nil }
}

/// Results are not stored.
public struct NoResultBackend: ResultBackend {
    public init() {}
    public func store(_ meta: ResultMeta, for message: TaskMessage) async throws {}
    public func write(_ meta: ResultMeta, for message: TaskMessage) -> ResultWrite? { nil }
    public func permissionProbe(_ probe: String) -> [RedisCommand] { [] }
    public var chords: (any ChordStore)? { nil }
}
