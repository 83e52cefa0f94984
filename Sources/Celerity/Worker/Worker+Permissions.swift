import Foundation
import Logging
import RedisClient
import Synchronization

/// Redis refused the worker something it cannot live without (ACL `NOPERM`, or a wrong
/// password): it exits with this message instead of retrying forever.
public struct WorkerPermissionError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// Errors of the background duties (heartbeat, recovery sweep, delayed forwarder, revocation
/// poll, queue pause poll). A refusal for want of permission is logged at error level with what is missing,
/// once, then at most once a minute per duty (it does not go away by itself); other errors
/// keep each duty's own handling.
final class DutyAlarm: Sendable {
    private let lastLogged = Mutex<[String: (at: Date, suppressed: Int)]>([:])
    let interval: TimeInterval

    init(interval: TimeInterval = 60) { self.interval = interval }

    /// True when `error` is a refused permission (then it was logged here, or counted).
    func permissionDenied(_ duty: String, _ error: any Error, logger: Logger) -> Bool {
        guard let e = error as? RedisError, e.isPermissionDenied else { return false }
        let now = Date()
        let suppressed: Int? = lastLogged.withLock { m in
            if let last = m[duty], now.timeIntervalSince(last.at) < interval {
                m[duty] = (last.at, last.suppressed + 1)
                return nil
            }
            let n = m[duty]?.suppressed ?? 0
            m[duty] = (now, 0)
            return n
        }
        guard let suppressed else { return true }
        logger.error("Redis refused the worker's \(duty): the ACL user lacks a permission (see docs/security.md)", metadata: [
            "error": .string(e.message), "needs": .string(DutyAlarm.needs[duty] ?? "see docs/security.md"),
            "refused_since_last_log": .stringConvertible(suppressed)])
        return true
    }

    /// What each duty needs, for the log line.
    static let needs: [String: String] = [
        "heartbeat": "SET, GET, DEL on celerity:worker:*; SADD on celerity:workers",
        "recovery sweep": "SET NX PX on celerity:lock:recovery; SMEMBERS, SREM on celerity:workers; EXISTS on celerity:worker:*; "
            + "LLEN, LRANGE, LREM on celerity:processing:*; RPUSH on every queue list; EVALSHA, SCRIPT LOAD",
        "delayed forwarder": "EVALSHA, SCRIPT LOAD; ZRANGEBYSCORE, ZREM on celerity:delayed; RPUSH on every queue list",
        "revocation poll": "ZREMRANGEBYSCORE, ZRANGE on celerity:revoked and celerity:revoked:terminate",
        "events": "PUBLISH on the channels /<db>.celeryev/* (Celery's events: worker heartbeats, task events)",
        "queue pause poll": "SMEMBERS on celerity:paused",
    ]
}

extension Worker {
    /// Before the first fetch: checks that Redis lets this worker's user run every command it
    /// sends, on the keys and channels it uses. Each command is queued in a transaction that
    /// is then discarded (Redis checks the ACL when it queues a command; nothing runs), plus
    /// one real SCRIPT LOAD and EVALSHA of a script that does nothing. A refusal of what the
    /// worker cannot live without (fetch, ack, results, scripts, heartbeat) throws
    /// `WorkerPermissionError`; a refusal of the rest (dead letters, delayed messages,
    /// revocations, the recovery of other workers, paused queues) is logged at error level.
    func checkPermissions() async throws {
        let processing = broker.processingKey
        let probe = "celerity-permission-probe"
        var essential: [RedisCommand] = []
        for q in config.queues {
            let keys = Keys.priorityQueues(q)
            for k in keys { essential.append(RedisCommand("LMOVE", k, processing, "RIGHT", "LEFT")) }
            essential.append(RedisCommand("BLMOVE", keys[0], processing, "RIGHT", "LEFT", 1))
            essential.append(RedisCommand("EXISTS", arguments: Array(keys.dropFirst())))
            essential.append(RedisCommand("RPUSH", keys[0], probe))
        }
        essential += [
            RedisCommand("LRANGE", processing, 0, -1), RedisCommand("LREM", processing, -1, probe),
            RedisCommand("SET", Keys.heartbeat(config.node), probe, "EX", 1), RedisCommand("GET", Keys.heartbeat(config.node)),
            RedisCommand("DEL", Keys.heartbeat(config.node)), RedisCommand("SADD", Keys.workers, config.node),
        ]
        // The result backend's own commands, checked where it writes (its own Redis, or the broker's).
        let results = self.results.permissionProbe(probe)
        let other = Keys.processing(probe)
        let optional = [
            RedisCommand("LPUSH", Keys.deadLetters, probe), RedisCommand("LTRIM", Keys.deadLetters, 0, 1), RedisCommand("EXPIRE", Keys.deadLetters, 1),
            RedisCommand("ZADD", Keys.delayed, 1, probe), RedisCommand("ZRANGEBYSCORE", Keys.delayed, "-inf", 1, "LIMIT", 0, 1), RedisCommand("ZREM", Keys.delayed, probe),
            RedisCommand("ZREMRANGEBYSCORE", Keys.revoked, "-inf", 1), RedisCommand("ZRANGE", Keys.revoked, 0, 1),
            RedisCommand("ZREMRANGEBYSCORE", Keys.revokedTerminate, "-inf", 1), RedisCommand("ZRANGE", Keys.revokedTerminate, 0, 1),
            RedisCommand("SET", Keys.recoveryLock, probe, "NX", "PX", 1), RedisCommand("GET", Keys.recoveryLock), RedisCommand("DEL", Keys.recoveryLock),
            RedisCommand("SMEMBERS", Keys.workers), RedisCommand("SREM", Keys.workers, probe), RedisCommand("EXISTS", Keys.heartbeat(probe)),
            RedisCommand("SMEMBERS", Keys.paused),
            RedisCommand("LLEN", other), RedisCommand("LRANGE", other, 0, -1), RedisCommand("LREM", other, -1, probe),
            RedisCommand("LPOS", processing, probe),
            RedisCommand("PUBLISH", EventDispatcher.channelPrefix(db: config.broker.db) + "worker.heartbeat", probe),
        ]
        var refused = try await Worker.refusals(essential + (results.isEmpty || separateResultsRedis != nil ? [] : results), on: broker.control)
        if let r = separateResultsRedis, !results.isEmpty { refused += try await Worker.refusals(results, on: r) }
        do {
            _ = try await broker.control.evalScript(Worker.probeScript, keys: [processing], args: [])
        } catch let e as RedisError where e.isPermissionDenied {
            refused.append(e.message)
        }
        if !refused.isEmpty {
            throw WorkerPermissionError(message: "Redis at \(config.broker) refuses commands this worker cannot run without; "
                + "give its ACL user these permissions (see docs/security.md):\n  " + refused.joined(separator: "\n  "))
        }
        let missing = try await Worker.refusals(optional, on: broker.control)
        if !missing.isEmpty {
            logger.error("""
                Redis refuses commands of the worker's background duties (dead letters, delayed messages, revocations, \
                recovery of dead workers, events, paused queues); they will fail until its ACL user gets them (see docs/security.md)
                """,
                         metadata: ["refused": .string(missing.joined(separator: "; "))])
        }
    }

    static let probeScript = RedisScript("return 1")

    /// The commands Redis would refuse for want of permission, as "NOPERM … (COMMAND key)";
    /// checked by queueing them in a MULTI that is discarded (nothing runs). If MULTI itself
    /// is refused, nothing else is sent (it would run).
    static func refusals(_ commands: [RedisCommand], on redis: Redis) async throws -> [String] {
        try await redis.withSession { s throws(RedisError) -> [String] in
            let multi = RedisCommand("MULTI")
            let reply = try s.send(multi)
            if case .error = reply {
                do throws(RedisError) { try reply.throwingError(naming: multi) } catch { if error.isPermissionDenied { return [error.message] } else { throw error } }
            }
            let replies = try s.pipeline(commands + [RedisCommand("DISCARD")])
            var out: [String] = []
            for (reply, command) in zip(replies, commands) {
                // Other errors (a command unknown to an old Redis) are not this check's business.
                do throws(RedisError) { try reply.throwingError(naming: command) } catch { if error.isPermissionDenied { out.append(error.message) } }
            }
            return out
        }
    }

    /// The results' own Redis when it is not the broker's.
    var separateResultsRedis: Redis? {
        guard let r = (results as? RedisResultBackend)?.redis, r !== broker.control else { return nil }
        return r
    }
}
