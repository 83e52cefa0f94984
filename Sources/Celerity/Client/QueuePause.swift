import Foundation
import RedisClient

/// Pauses and resumes queues for every Celerity worker at once (as asynqmon and Sidekiq Pro
/// do): a paused queue is not fetched from by any worker; its messages stay queued (senders
/// may go on sending), and those already fetched finish. Resuming makes the workers asked to
/// consume it fetch from it again. Workers read the paused set at start-up and once a second,
/// so a pause or resume applies within about a second, also to workers started later; the
/// pause lasts until resumed (it survives worker restarts).
///
/// Redis: the set `celerity:paused` of queue names (SADD, SREM, SMEMBERS). A queue's name is
/// its main list's (the priority sub-lists follow it). Python Celery workers do not read it.
///
/// ```swift
/// let pauses = try QueuePause(broker: "redis://localhost:6379/0")
/// try await pauses.pause("reports")
/// print(try await pauses.paused())   // ["reports"]
/// try await pauses.resume("reports")
/// ```
public struct QueuePause: Sendable {
    public let redis: Redis

    public init(redis: Redis) { self.redis = redis }
    /// Throws `RedisError` (`.invalidURL`) for a bad URL; nothing connects until a call.
    public init(broker: String) throws { redis = try Redis(broker, label: "queue-pause") }

    /// Pauses `queue` for every worker. Returns false when it was paused already.
    @discardableResult
    public func pause(_ queue: String) async throws -> Bool {
        try await run("pause", queue, RedisCommand("SADD", Keys.paused, queue)) == 1
    }

    /// Resumes `queue`. Returns false when it was not paused.
    @discardableResult
    public func resume(_ queue: String) async throws -> Bool {
        try await run("resume", queue, RedisCommand("SREM", Keys.paused, queue)) == 1
    }

    /// The paused queues, sorted by name.
    public func paused() async throws -> [String] {
        do {
            return (try await redis.call("SMEMBERS", Keys.paused).array ?? []).compactMap(\.string).sorted()
        } catch let e as RedisError {
            throw ClientError("cannot read the paused queues at \(redis.url): \(e.message)", cause: e)
        }
    }

    private func run(_ what: String, _ queue: String, _ command: RedisCommand) async throws -> Int {
        guard !queue.isEmpty else { throw ClientError("cannot \(what) a queue with an empty name") }
        do {
            return try await redis.send(command).throwingError(naming: command).int ?? 0
        } catch let e as RedisError {
            throw ClientError("cannot \(what) queue \(queue) at \(redis.url): \(e.message)", cause: e)
        }
    }
}
