import Foundation
import RedisClient

/// Where a worker stores results, and where clients read them.
public protocol ResultBackend: Sendable {
    /// Stores `meta` for the task of `message`. Throws on Redis trouble: the caller must not ack then.
    func store(_ meta: ResultMeta, for message: TaskMessage) async throws
}

/// Celery's Redis result backend: `celery-task-meta-<id>` set with a TTL and published on the
/// channel of the same name, in one script so a stored SUCCESS is never overwritten (Celery's rule).
public struct RedisResultBackend: ResultBackend {
    public let redis: Redis
    /// Seconds to keep results (0: forever).
    public let expires: Int

    public init(redis: Redis, expires: Int) {
        self.redis = redis
        self.expires = expires
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
        _ = try await redis.evalScript(RedisResultBackend.storeScript, keys: [Keys.resultMeta(meta.taskID)], args: [meta.encode(), expires])
    }
}

/// Celery's rpc backend: the document, wrapped in a message envelope, LPUSHed to the client's
/// `reply_to` list on the broker. Without a `reply_to` nothing is stored (as in Celery).
public struct RPCResultBackend: ResultBackend {
    public let redis: Redis
    public init(redis: Redis) { self.redis = redis }
    public func store(_ meta: ResultMeta, for message: TaskMessage) async throws {
        guard let replyTo = message.replyTo else { return }
        try await redis.call("LPUSH", replyTo, meta.rpcEnvelope(replyTo: replyTo, correlationID: message.correlationID))
    }
}

/// Results are not stored.
public struct NoResultBackend: ResultBackend {
    public init() {}
    public func store(_ meta: ResultMeta, for message: TaskMessage) async throws {}
}
