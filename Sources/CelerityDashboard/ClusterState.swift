import Celerity
import Foundation
import RedisClient
import Synchronization

/// What the dashboard reads and changes in Redis. Every read is a few pipelined commands per
/// queue and per worker (the `Inspector` snapshot), never a walk over tasks; the dead-letter
/// and delayed pages read at most `pageSize` entries.
struct ClusterState: Sendable {
    let redis: Redis
    let results: Redis
    let inspector: Inspector
    let control: ControlClient
    let client: CelerityClient
    let manifest: Manifest?
    let pageSize = 200
    let rates = RateTracker()

    init(broker: String, resultBackend: String?, manifest: Manifest?) throws {
        let url = try RedisURL(string: broker)
        redis = Redis(url: url, label: "dashboard")
        let backendURL = try resultBackend.flatMap { $0.hasPrefix("redis") || $0.hasPrefix("unix") || $0.hasPrefix("sentinel") ? try RedisURL(string: $0) : nil } ?? url
        results = Redis(url: backendURL, label: "dashboard-results")
        var inspector = Inspector(redis: redis, manifest: manifest)
        // Per queue counts of dead letters read the whole list: only on the dead-letter page.
        inspector.countDeadLettersByQueue = false
        self.inspector = inspector
        control = ControlClient(redis: Redis(url: url, label: "dashboard-control"))
        client = try CelerityClient(broker: broker, resultBackend: "none", manifest: manifest)
        self.manifest = manifest
    }

    /// The broker URL without its password.
    var brokerDisplay: String { redis.url.description }

    // MARK: Reading

    /// The snapshot, with each queue's oldest message age filled in (`headAges`).
    func overview(now: Date = Date()) async throws -> Inspector.Snapshot {
        var s = try await inspector.snapshot(now: now)
        let ages = try await headAges(s, now: now)
        let r = rates.update(s, now: now)
        for i in s.queues.indices {
            s.queues[i].oldestAge = ages[s.queues[i].name]
            s.queues[i].rateIn = r[s.queues[i].name]?.in
            s.queues[i].rateOut = r[s.queues[i].name]?.out
        }
        return s
    }

    /// How long the message at the pop end of each queue has been there, as first seen by a
    /// dashboard: a Celery message carries no send time, so the dashboard notes in Redis
    /// (`celerity:queue-head`, field: list key, value: `<task id> <unix time>`) when it first
    /// saw each list's next message; every dashboard reads and writes the same notes, so they
    /// agree and a restart keeps them. The age is exact to the refresh interval of whichever
    /// dashboard or scrape looked first; a queue is reported at the age of its oldest list.
    func headAges(_ s: Inspector.Snapshot, now: Date) async throws -> [String: Double] {
        let t = now.timeIntervalSince1970
        var keys: [String] = []
        var ids: [String?] = []
        var owner: [String] = []
        for q in s.queues {
            for l in q.lists {
                keys.append(l.key); ids.append(l.depth > 0 ? (l.next?.id ?? "?") : nil); owner.append(q.name)
            }
        }
        var ages: [String: Double] = [:]
        for q in s.queues { ages[q.name] = q.depth > 0 ? 0 : nil }
        guard !keys.isEmpty else {
            return ages
        }
        let seen = try await redis.send(RedisCommand("HMGET", arguments: [Self.headKey] + keys)).throwingError().array ?? []
        var updates: [String] = []
        var emptied: [String] = []
        for (i, key) in keys.enumerated() {
            let note = i < seen.count ? seen[i].string : nil
            guard let id = ids[i] else {
                // An empty list: its note goes, and the next message is timed from when it is seen.
                if note != nil { emptied.append(key) }
                continue
            }
            var first = t
            if let note, let space = note.lastIndex(of: " "), note[..<space] == id, let at = Double(note[note.index(after: space)...]) {
                first = at
            } else {
                updates += [key, "\(id) \(t)"]
            }
            ages[owner[i]] = max(ages[owner[i]] ?? 0, max(0, t - first))
        }
        if !updates.isEmpty { _ = try await redis.send(RedisCommand("HSET", arguments: [Self.headKey] + updates)) }
        if !emptied.isEmpty { _ = try await redis.send(RedisCommand("HDEL", arguments: [Self.headKey] + emptied)) }
        return ages
    }

    static let headKey = "celerity:queue-head"

    /// Dead letters, newest first, filtered by queue and by a text found in the reason, task
    /// name or id; at most `pageSize` (and how many matched in all).
    func deadLetters(queue: String?, text: String?) async throws -> (entries: [DeadLetters.Entry], matched: Int) {
        let matching = try await selectDead(ids: nil, queue: queue, text: text)
        return (Array(matching.prefix(pageSize)), matching.count)
    }

    static func matches(_ e: DeadLetters.Entry, _ text: String?) -> Bool {
        guard let text, !text.isEmpty else { return true }
        let t = e.task
        return [e.reason, e.id, t?.name ?? "", t?.id ?? "", e.worker].contains { $0.localizedCaseInsensitiveContains(text) }
    }

    struct Delayed: Sendable {
        var due: Date
        var queue: String
        var id: String?
        var task: String?
        var retries: Int
    }

    /// The next `pageSize` delayed messages (by due time) and how many there are.
    func delayed() async throws -> (entries: [Delayed], count: Int) {
        let r = try await redis.pipeline([RedisCommand("ZRANGE", Keys.delayed, 0, pageSize - 1, "WITHSCORES"),
                                          RedisCommand("ZCARD", Keys.delayed)]).map { try $0.throwingError() }
        let flat = r[0].array ?? []
        var out: [Delayed] = []
        var i = 0
        while i + 1 < flat.count {
            defer { i += 2 }
            guard let member = flat[i].bytes, let due = flat[i + 1].string.flatMap(Double.init) else { continue }
            let cut = member.firstIndex(of: 0) ?? member.endIndex
            let queue = Keys.queueName(fromListKey: String(decoding: member[..<cut], as: UTF8.self))
            let body = cut < member.endIndex ? Array(member[(cut + 1)...]) : []
            let m = try? TaskMessage.decode(body)
            out.append(Delayed(due: Date(timeIntervalSince1970: due), queue: queue, id: m?.id, task: m?.task, retries: m?.retries ?? 0))
        }
        return (out, r[1].int ?? 0)
    }

    /// A task as the result backend and the dead letters know it.
    struct TaskView: Sendable {
        var id: String
        var meta: JSONValue?
        var dead: DeadLetters.Entry?
        var revoked: Bool
    }

    func task(_ id: String) async throws -> TaskView {
        async let meta = results.call("GET", Keys.resultMeta(id))
        async let revoked = redis.call("ZSCORE", Keys.revoked, id)
        let dead = try await DeadLetters(redis: redis).entry(id)
        let m = try await meta.throwingError().bytes.flatMap { try? JSONValue(parsing: $0) }
        let r = try await revoked.throwingError().string != nil
        return TaskView(id: id, meta: m, dead: dead, revoked: r)
    }

    // MARK: Actions

    /// Retries the dead letters with these ids (entry or task ids); all matching `queue` and
    /// `text` when `ids` is nil. Returns how many went back to their queues.
    func retryDead(ids: [String]?, queue: String?, text: String?) async throws -> Int {
        let dl = DeadLetters(redis: redis)
        var n = 0
        for e in try await selectDead(ids: ids, queue: queue, text: text) where try await dl.retry(e) { n += 1 }
        return n
    }

    /// Deletes the dead letters with these ids (or all matching). Returns how many.
    func deleteDead(ids: [String]?, queue: String?, text: String?) async throws -> Int {
        var n = 0
        for e in try await selectDead(ids: ids, queue: queue, text: text) {
            n += try await redis.call("LREM", Keys.deadLetters, 1, e.raw).throwingError().int ?? 0
        }
        return n
    }

    private func selectDead(ids: [String]?, queue: String?, text: String?) async throws -> [DeadLetters.Entry] {
        let all = try await DeadLetters(redis: redis).list(queue: queue?.isEmpty == false ? queue : nil)
        if let ids {
            let wanted = Set(ids)
            return all.filter { wanted.contains($0.id) || ($0.task.map { wanted.contains($0.id) } ?? false) }
        }
        return all.filter { Self.matches($0, text) }
    }

    /// Revokes a task for Celerity workers (Redis) and Python Celery workers (broadcast).
    func revoke(_ id: String, terminate: Bool) async throws {
        try await client.revoke(id, terminate: terminate)
        try await control.broadcast("revoke", arguments: .object([JSONMember("task_id", .array([.string(id)])),
                                                                 JSONMember("terminate", .bool(terminate)),
                                                                 JSONMember("signal", .string("SIGTERM"))]), reply: false)
    }

    /// Empties every priority list of `queue` (as `celery purge`); returns how many messages went.
    func purge(_ queue: String) async throws -> Int {
        let keys = Keys.priorityQueues(queue)
        let commands = [RedisCommand("MULTI")] + keys.map { RedisCommand("LLEN", $0) } + [RedisCommand("DEL", arguments: keys), RedisCommand("EXEC")]
        let r = try await redis.pipeline(commands)
        // A command refused when queued (an ACL without DEL on the queue) aborts the EXEC: name it.
        for (reply, command) in zip(r.dropLast(), commands) { _ = try reply.throwingError(naming: command) }
        guard let exec = try r.last?.throwingError().array else { return 0 }
        return exec.prefix(keys.count).reduce(0) { $0 + ($1.int ?? 0) }
    }

    /// Pauses or resumes `queue` for every Celerity worker (`celerity:paused`); true if that
    /// changed something.
    func setPaused(_ queue: String, _ paused: Bool) async throws -> Bool {
        let p = QueuePause(redis: redis)
        return paused ? try await p.pause(queue) : try await p.resume(queue)
    }

    /// Asks one worker to stop (warm shutdown, Celery's `shutdown`, which sends no reply);
    /// false if the worker has no live heartbeat.
    func shutdown(_ node: String) async throws -> Bool {
        guard try await redis.call("EXISTS", Keys.heartbeat(node)).throwingError().int == 1 else { return false }
        try await control.broadcast("shutdown", destination: [node], reply: false)
        return true
    }
}

// MARK: Task history and per-minute totals

extension ClusterState {
    /// What the task list can be filtered by (all optional; text matches are case-insensitive
    /// substrings, `state` exact).
    struct HistoryQuery: Sendable {
        var id: String?
        var task: String?
        var state: String?
        var worker: String?
        /// Only records that ended within this many seconds.
        var within: Double?
        var limit = 100

        var isEmpty: Bool { id == nil && task == nil && state == nil && worker == nil && within == nil }
    }

    /// Records of `celerity:history` (newest first) that match `q`: read 2,000 at a time from
    /// the newest, until `q.limit` matched, the records get older than `within`, or the list
    /// ends. Returns them and how many records were read.
    func history(_ q: HistoryQuery, now: Date = Date()) async throws -> (records: [JSONValue], scanned: Int) {
        let chunk = 2000
        var out: [JSONValue] = []
        var start = 0, read = 0
        let oldest = q.within.map { now.timeIntervalSince1970 - $0 }
        scan: while out.count < q.limit {
            let items = try await redis.call("LRANGE", Keys.history, start, start + chunk - 1).throwingError().array ?? []
            start += items.count
            for item in items {
                read += 1
                guard let bytes = item.bytes, let r = try? JSONValue(parsing: bytes) else { continue }
                if let oldest, let at = r["at"]?.doubleValue, at < oldest { break scan }
                if Self.matches(r, q) {
                    out.append(r)
                    if out.count >= q.limit { break scan }
                }
            }
            if items.count < chunk { break }
        }
        return (out, read)
    }

    static func matches(_ r: JSONValue, _ q: HistoryQuery) -> Bool {
        func has(_ key: String, _ want: String?) -> Bool {
            guard let want, !want.isEmpty else { return true }
            return (r[key]?.stringValue ?? "").localizedCaseInsensitiveContains(want)
        }
        if let s = q.state, !s.isEmpty, r["state"]?.stringValue != s.uppercased() { return false }
        return has("id", q.id) && has("task", q.task) && has("worker", q.worker)
    }

    /// Every record of one task (its attempts: retries, then the end), oldest first.
    func timeline(_ id: String) async throws -> [JSONValue] {
        var q = HistoryQuery()
        q.id = id
        q.limit = 50
        return try await history(q).records.filter { $0["id"]?.stringValue == id }.reversed()
    }

    struct Minute: Sendable {
        var minute: Int
        var processed: Int
        var failed: Int
        var retried: Int
    }

    /// The cluster's totals of the last `minutes` minutes, oldest first (the current one last).
    func minuteTotals(minutes: Int, now: Date = Date()) async throws -> [Minute] {
        let current = Int(now.timeIntervalSince1970 / 60)
        let range = (current - minutes + 1)...current
        let replies = try await redis.pipeline(range.map { RedisCommand("HMGET", Keys.minuteTotals($0), "processed", "failed", "retried") })
        return zip(range, replies).map { m, r in
            let v = (try? r.throwingError().array) ?? []
            func n(_ i: Int) -> Int { i < v.count ? (v[i].string.flatMap { Int($0) } ?? 0) : 0 }
            return Minute(minute: m, processed: n(0), failed: n(1), retried: n(2))
        }
    }
}

// MARK: Schedules

extension ClusterState {
    /// The manifest's schedules with their last and next fire (empty without a manifest).
    func schedules() async throws -> [BeatStore.Row] {
        guard let entries = manifest?.schedules, !entries.isEmpty else { return [] }
        return BeatStore.rows(entries, try await BeatStore.read(entries.map(\.name), on: redis))
    }
}

/// Each queue's rates in and out, from two snapshots: out is what the live Celerity workers
/// finished from it (their heartbeats' `queues_done`, written every 2 s), in is out plus the
/// change of its depth. Kept by each dashboard process from its own reads (a page left open
/// reads every 5 s); the first read has none. A worker that stopped takes its count away:
/// a queue's count going down starts it again from that read.
final class RateTracker: Sendable {
    struct Reading { var at: Date; var done: [String: Int]; var depth: [String: Int] }
    private let state = Mutex<(last: Reading?, rates: [String: (in: Double, out: Double)])>((nil, [:]))

    func update(_ s: Inspector.Snapshot, now: Date) -> [String: (in: Double, out: Double)] {
        var done: [String: Int] = [:]
        for w in s.workers where w.alive {
            for (q, n) in w.heartbeat?.queuesDone ?? [:] { done[q, default: 0] += n }
        }
        let reading = Reading(at: now, done: done, depth: Dictionary(s.queues.map { ($0.name, $0.depth) }, uniquingKeysWith: { a, _ in a }))
        return state.withLock { st in
            // Heartbeats change every 2 s: closer reads keep the rates of the last interval.
            if let last = st.last, now.timeIntervalSince(last.at) < 2 { return st.rates }
            if let last = st.last {
                let dt = now.timeIntervalSince(last.at)
                var rates: [String: (in: Double, out: Double)] = [:]
                for q in s.queues {
                    guard let d0 = last.done[q.name] ?? (reading.done[q.name] != nil ? 0 : nil), let depth0 = last.depth[q.name] else { continue }
                    let d1 = reading.done[q.name] ?? 0
                    guard d1 >= d0 else { continue }
                    let out = Double(d1 - d0) / dt
                    rates[q.name] = (in: max(0, out + Double(q.depth - depth0) / dt), out: out)
                }
                st.rates = rates
            }
            st.last = reading
            return st.rates
        }
    }
}
