import Foundation
import RedisClient

/// A read-only look at the broker: which queues hold how much (and which are paused), which
/// workers are alive and what they hold, delayed work, dead letters, revocations. It never writes, never runs
/// KEYS or SCAN, and takes three pipelined round trips (plus one Lua script that counts dead
/// letters per queue, in the first of them).
///
/// ```swift
/// let inspector = try Inspector(broker: "redis://localhost:6379/0", manifest: manifest)
/// let s = try await inspector.snapshot()
/// print(s.queue("add")?.depth ?? 0, s.workers.filter(\.alive).count)
/// ```
///
/// Which queues: those named in `queues:` if given; otherwise the manifest's (its tasks'
/// queues, then its workers' groups), those of every live worker's heartbeat, and the paused ones.
public struct Inspector: Sendable {
    public let redis: Redis
    public let manifest: Manifest?
    /// Count dead letters per queue: a server-side script that reads every entry (measured:
    /// 29 ms of Redis time for a full list, 10,000 entries of 1 KB). Off: `byQueue` is nil.
    public var countDeadLettersByQueue = true

    public init(redis: Redis, manifest: Manifest? = nil) {
        self.redis = redis
        self.manifest = manifest
    }

    /// Throws `RedisError` (`.invalidURL`) for a bad URL; nothing connects until `snapshot`.
    public init(broker: String, manifest: Manifest? = nil) throws {
        self.init(redis: try Redis(broker, label: "inspector"), manifest: manifest)
    }

    /// Reads the broker. `queues`: only these (in this order); nil: the manifest's and the
    /// live workers'. `now` is the time ages are measured from.
    public func snapshot(queues only: [String]? = nil, now: Date = Date()) async throws -> Snapshot {
        let t = now.timeIntervalSince1970
        // 1. Globals: known workers, delayed, dead letters, revoked.
        var first = [
            RedisCommand("SMEMBERS", Keys.workers),
            RedisCommand("ZCARD", Keys.delayed),
            RedisCommand("ZCOUNT", Keys.delayed, "-inf", t),
            RedisCommand("ZRANGE", Keys.delayed, 0, 0, "WITHSCORES"),
            RedisCommand("LLEN", Keys.deadLetters),
            RedisCommand("LINDEX", Keys.deadLetters, 0),
            RedisCommand("ZCARD", Keys.revoked),
            RedisCommand("ZCOUNT", Keys.revoked, "(" + String(t), "+inf"),
            RedisCommand("ZCARD", Keys.revokedTerminate),
            RedisCommand("ZCOUNT", Keys.revokedTerminate, "(" + String(t), "+inf"),
            RedisCommand("SMEMBERS", Keys.paused),
        ]
        if countDeadLettersByQueue { first.append(RedisCommand("EVAL", Inspector.deadByQueueScript, 1, Keys.deadLetters)) }
        let g = try await redis.pipeline(first).map { try $0.throwingError() }
        let nodes = (g[0].array ?? []).compactMap(\.string).sorted()
        let paused = Set((g[10].array ?? []).compactMap(\.string))

        // 2. Each known worker: heartbeat, its time to live, its processing list.
        var perNode: [RedisCommand] = []
        for n in nodes {
            perNode += [RedisCommand("GET", Keys.heartbeat(n)), RedisCommand("PTTL", Keys.heartbeat(n)), RedisCommand("LLEN", Keys.processing(n))]
        }
        let w = try await redis.pipeline(perNode).map { try $0.throwingError() }
        var workers: [WorkerInfo] = []
        for (i, n) in nodes.enumerated() {
            let beat = w[3 * i].bytes.map(Inspector.heartbeat(from:))
            let ttl = w[3 * i + 1].int ?? -2
            workers.append(WorkerInfo(node: n, alive: beat != nil, heartbeat: beat,
                                      sinceBeat: beat?.at.map { Inspector.round(now.timeIntervalSince($0)) },
                                      expiresIn: beat != nil && ttl >= 0 ? Double(ttl) / 1000 : nil,
                                      inFlight: w[3 * i + 2].int ?? 0))
        }
        workers.sort { ($0.alive ? 0 : 1, $0.node) < ($1.alive ? 0 : 1, $1.node) }

        // 3. Each queue: depth and pop-end message of its four lists.
        var names: [String] = []
        var sources: [String: [String]] = [:]
        func add(_ q: String, _ source: String) {
            if sources[q] == nil { names.append(q); sources[q] = [] }
            if !sources[q]!.contains(source) { sources[q]!.append(source) }
        }
        if let only {
            for q in only { add(q, "option") }
        } else {
            for q in manifest?.queues ?? [] { add(q, "manifest") }
            for group in manifest?.workers ?? [] { for q in group.queues { add(q, "manifest") } }
            for q in Set(workers.filter(\.alive).flatMap { $0.heartbeat?.queues ?? [] }).sorted() { add(q, "worker") }
            for q in paused.sorted() { add(q, "paused") }
        }
        var perQueue: [RedisCommand] = []
        for q in names {
            for key in Keys.priorityQueues(q) { perQueue += [RedisCommand("LLEN", key), RedisCommand("LINDEX", key, -1)] }
        }
        let r = try await redis.pipeline(perQueue).map { try $0.throwingError() }
        var queues: [QueueInfo] = []
        for (qi, q) in names.enumerated() {
            var lists: [ListInfo] = []
            for (li, key) in Keys.priorityQueues(q).enumerated() {
                let base = (qi * 4 + li) * 2
                lists.append(ListInfo(priority: [0, 3, 6, 9][li], key: key, depth: r[base].int ?? 0,
                                      next: r[base + 1].bytes.map(Inspector.messageInfo(from:))))
            }
            let consumers = workers.filter { $0.alive && ($0.heartbeat?.queues.contains(q) ?? false) }.map(\.node)
            queues.append(QueueInfo(name: q, depth: lists.reduce(0) { $0 + $1.depth }, lists: lists, consumers: consumers, sources: sources[q] ?? [],
                                    paused: paused.contains(q)))
        }

        // The globals of round trip 1.
        let nextDelayed = g[3].array ?? []
        let nextMember = nextDelayed.first?.bytes
        let nextDue = nextDelayed.count >= 2 ? nextDelayed[1].string.flatMap(Double.init).map { Date(timeIntervalSince1970: $0) } : nil
        let nextQueue = nextMember.flatMap { m in m.firstIndex(of: 0).map { Keys.queueName(fromListKey: String(decoding: m[..<$0], as: UTF8.self)) } }
        let delayed = DelayedInfo(count: g[1].int ?? 0, overdue: g[2].int ?? 0, nextDue: nextDue, nextQueue: nextQueue)

        let newest = g[5].bytes.flatMap { try? JSONValue(parsing: $0) }
        var byQueue: [QueueCount]?
        if countDeadLettersByQueue, let flat = g.last?.array {
            var counts: [QueueCount] = []
            var i = 0
            while i + 1 < flat.count {
                counts.append(QueueCount(queue: flat[i].string ?? "", count: flat[i + 1].int ?? 0))
                i += 2
            }
            byQueue = counts.sorted { ($1.count, $0.queue) < ($0.count, $1.queue) }
        }
        let dead = DeadLetterInfo(count: g[4].int ?? 0, byQueue: byQueue,
                                  newestAt: newest?["at"]?.stringValue.flatMap(CeleryDate.parse), newestReason: newest?["reason"]?.stringValue)
        let revoked = RevokedInfo(count: g[6].int ?? 0, live: g[7].int ?? 0, terminate: g[8].int ?? 0, terminateLive: g[9].int ?? 0)

        return Snapshot(at: now, broker: redis.url.description, queues: queues, workers: workers,
                        delayed: delayed, deadLetters: dead, revoked: revoked)
    }

    /// KEYS[1] the dead-letter list. Returns `[queue, count, queue, count, …]`. Entries are read
    /// 500 at a time; the queue is matched in the entry's prefix as workers write it
    /// (`{"id":"…","queue":"…"`), and decoded with cjson only when that does not match.
    static let deadByQueueScript = #"""
    local counts, order = {}, {}
    local n = redis.call('LLEN', KEYS[1])
    local i = 0
    while i < n do
      local chunk = redis.call('LRANGE', KEYS[1], i, i + 499)
      if #chunk == 0 then break end
      for _, e in ipairs(chunk) do
        local q = string.match(e, '^{"id":"[^"\\]*","queue":"([^"\\]*)"')
        if not q then
          local ok, v = pcall(cjson.decode, e)
          if ok and type(v) == 'table' and type(v.queue) == 'string' then q = v.queue else q = '' end
        end
        if not counts[q] then counts[q] = 0; order[#order + 1] = q end
        counts[q] = counts[q] + 1
      end
      i = i + #chunk
    end
    local out = {}
    for _, q in ipairs(order) do out[#out + 1] = q; out[#out + 1] = counts[q] end
    return out
    """#

    /// A heartbeat document; fields missing or of the wrong type are nil.
    static func heartbeat(from raw: [UInt8]) -> Heartbeat {
        let v = (try? JSONValue(parsing: raw)) ?? .null
        return Heartbeat(node: v["node"]?.stringValue, pid: v["pid"]?.intValue, host: v["host"]?.stringValue,
                         queues: v["queues"]?.arrayValue?.compactMap(\.stringValue) ?? [],
                         paused: v["paused"]?.arrayValue?.compactMap(\.stringValue),
                         concurrency: v["concurrency"]?.intValue, active: v["active"]?.intValue, processed: v["processed"]?.intValue,
                         started: v["started"]?.stringValue.flatMap(CeleryDate.parse), at: v["at"]?.stringValue.flatMap(CeleryDate.parse),
                         failed: v["failed"]?.intValue, retried: v["retried"]?.intValue, revoked: v["revoked"]?.intValue,
                         rss: v["rss"]?.intValue, events: v["events"]?.boolValue,
                         tasks: v["tasks"]?.objectValue.map { members in
                             var out: [String: TaskTally] = [:]
                             for m in members { if let t = TaskTally(document: m.value) { out[m.key] = t } }
                             return out
                         }, queuesDone: v["queues_done"]?.objectValue.map { members in
                             var out: [String: Int] = [:]
                             for m in members { if let n = m.value.intValue { out[m.key] = n } }
                             return out
                         }, plugins: v["plugins"]?.objectValue.map { members in
                             var out: [String: PluginProcesses] = [:]
                             for m in members {
                                 out[m.key] = PluginProcesses(processes: m.value["processes"]?.intValue ?? 0, restarts: m.value["restarts"]?.intValue ?? 0,
                                                              recycles: m.value["recycles"]?.intValue ?? 0, available: m.value["available"]?.boolValue ?? true)
                             }
                             return out
                         })
    }

    /// The headers of a queued envelope (the body is not decoded).
    static func messageInfo(from raw: [UInt8]) -> MessageInfo {
        let h = (try? JSONValue(parsing: raw))?["headers"]
        return MessageInfo(id: h?["id"]?.stringValue, task: h?["task"]?.stringValue,
                           eta: h?["eta"]?.stringValue.flatMap(CeleryDate.parse), retries: h?["retries"]?.intValue ?? 0,
                           redeliveries: h?["celerity_redeliveries"]?.intValue ?? 0, bytes: raw.count)
    }

    /// Seconds to the millisecond (no false precision in a report).
    static func round(_ seconds: Double) -> Double { (seconds * 1000).rounded() / 1000 }
}
