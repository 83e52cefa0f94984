import Foundation
import RedisClient

/// The dead-letter list (`celerity:dead`): messages that could not be run, with why and when.
/// Entries are JSON: `{"id", "queue", "reason", "worker", "at", "message"}`, newest first;
/// the list is capped and expires when untouched (see `WorkerBroker`).
public struct DeadLetters: Sendable {
    public struct Entry: Sendable {
        public var id: String
        public var queue: String
        public var reason: String
        public var worker: String
        public var at: String
        /// The message exactly as it was on the queue.
        public var message: String
        /// The entry as stored (needed to remove exactly this one).
        public var raw: [UInt8]

        /// Task name and id, when the message can be read.
        public var task: (name: String, id: String)? {
            guard let m = try? TaskMessage.decode(Array(message.utf8)) else { return nil }
            return (m.task, m.id)
        }
    }

    public let redis: Redis
    public init(redis: Redis) { self.redis = redis }
    public init(broker: String) throws { redis = try Redis(broker, label: "dead-letters") }

    /// Entries, newest first, optionally only those of `queue`.
    public func list(queue: String? = nil, limit: Int = 10_000) async throws -> [Entry] {
        let r = try await redis.call("LRANGE", Keys.deadLetters, 0, -1)
        var out: [Entry] = []
        for item in r.array ?? [] {
            guard let bytes = item.bytes, let v = try? JSONValue(parsing: bytes) else { continue }
            let e = Entry(id: v["id"]?.stringValue ?? "", queue: v["queue"]?.stringValue ?? "", reason: v["reason"]?.stringValue ?? "",
                          worker: v["worker"]?.stringValue ?? "", at: v["at"]?.stringValue ?? "", message: v["message"]?.stringValue ?? "", raw: bytes)
            if let queue, e.queue != queue { continue }
            out.append(e)
            if out.count >= limit { break }
        }
        return out
    }

    public func entry(_ id: String) async throws -> Entry? {
        try await list().first { $0.id == id || $0.task?.id == id }
    }

    /// Puts an entry's message back at the back of its queue (redelivery count reset) and
    /// removes the entry, atomically. Returns false if it was gone or has no queue.
    @discardableResult
    public func retry(_ e: Entry) async throws -> Bool {
        guard !e.queue.isEmpty else { return false }
        let raw = Array(e.message.utf8)
        let again = TaskMessage.markRedelivered(raw, count: 0) ?? raw
        let key = Keys.queue(e.queue, priority: (try? JSONValue(parsing: raw))?["properties"]?["priority"]?.intValue ?? 0)
        let r = try await redis.evalScript(DeadLetters.retryScript, keys: [Keys.deadLetters, key], args: [e.raw, again])
        return r.int == 1
    }

    static let retryScript = RedisScript("""
    if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
      redis.call('LPUSH', KEYS[2], ARGV[2])
      return 1
    end
    return 0
    """)

    /// Removes entries (all, or those of `queue`). Returns how many.
    @discardableResult
    public func purge(queue: String? = nil) async throws -> Int {
        guard let queue else {
            let n = try await redis.call("LLEN", Keys.deadLetters).int ?? 0
            try await redis.call("DEL", Keys.deadLetters)
            return n
        }
        var n = 0
        for e in try await list(queue: queue) { n += try await redis.call("LREM", Keys.deadLetters, 1, e.raw).int ?? 0 }
        return n
    }
}

extension CelerityClient {
    /// Revokes a task: a queued or delayed call of it never runs (REVOKED is stored); with
    /// `terminate`, a running execution is stopped too (plugins are killed; a built-in's result
    /// is discarded). Workers pick revocations up within half a second; they are kept for
    /// `keep` seconds (default: a day).
    /// Redis: ZADD `celerity:revoked` (and `celerity:revoked:terminate`), scored by expiry.
    public func revoke(_ id: String, terminate: Bool = false, keep: Double = 86_400) async throws {
        let until = Date().timeIntervalSince1970 + keep
        var cmds = [RedisCommand("ZADD", Keys.revoked, until, id)]
        if terminate { cmds.append(RedisCommand("ZADD", Keys.revokedTerminate, until, id)) }
        do {
            for r in try await redis.pipeline(cmds) { try r.throwingError() }
        } catch let e as RedisError {
            throw ClientError("cannot revoke \(id) at \(broker): \(e.message)", cause: e)
        }
    }
}
