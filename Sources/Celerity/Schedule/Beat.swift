import Foundation
import Logging
import RedisClient
import ServiceLifecycle
import Synchronization

/// Sends the manifest's `schedules:` entries at their times: Celerity's `beat`.
///
/// Any number of beats (processes, `worker -B`, restarts, skewed clocks) send exactly one
/// message per tick:
/// - the clock is Redis's `TIME`, read every loop (the local clock only measures sleeps);
/// - each fire is ONE Lua script (`fireScript`) that atomically checks the entry's last fired
///   tick in `celerity:beat:last` is older than this tick (compare-and-set), checks the entry's
///   definition fingerprint, that the tick is not in the future by Redis's own clock and the
///   `limit`, records the tick (and the count) and LPUSHes the Celery protocol-v2 message.
///   A second beat trying the same tick gets 0 and sends nothing.
///
/// Keys (hashes, field = entry name): `celerity:beat:last` (last fired or skipped tick, Unix
/// seconds: the compare-and-set value), `celerity:beat:fired` (last tick sent),
/// `celerity:beat:count` (fires so far, for `limit`), `celerity:beat:def` (fingerprint of the
/// entry's definition), `celerity:beat:manual` (last `schedule run`).
public final class Beat: Service, Sendable {
    public let entries: [ScheduleEntry]
    public let broker: RedisURL
    public let node: String
    let logger: Logger
    let redis: Redis
    /// Test hook only: seconds added to this process's local clock, to show it is not used for
    /// deciding ticks (set by `CELERITY_BEAT_LOCAL_CLOCK_SKEW`).
    let localSkew: Double
    let fired = Atomic<Int>(0)

    /// A tick fired this late (or later) counts as missed and follows the entry's `misfire`
    /// policy; younger ticks are caught up one by one (a beat delayed by a busy machine).
    public static let grace: Double = 3

    public init(entries: [ScheduleEntry], broker: RedisURL, node: String = "beat@\(ProcessInfo.processInfo.hostName)", logger: Logger = Logger(label: "celerity.beat"),
                localClockSkew: Double = 0) {
        self.entries = entries
        self.broker = broker
        self.node = node
        self.logger = logger
        self.localSkew = localClockSkew
        self.redis = Redis(url: broker, label: "beat")
    }

    /// Messages this beat sent (regular and misfire ticks).
    public var sentCount: Int { fired.load(ordering: .relaxed) }

    public func run() async throws {
        logger.info("beat \(node) started: \(entries.count) schedule\(entries.count == 1 ? "" : "s") (\(entries.map(\.name).joined(separator: ", "))); clock: Redis TIME at \(broker)")
        await cancelWhenGracefulShutdown {
            await self.loop()
        }
        logger.info("beat \(node) stopped (\(sentCount) sent)")
    }

    // MARK: - Loop

    func loop() async {
        var cleaned = false
        while !Task.isCancelled {
            var wait = 1.0
            do {
                if !cleaned {
                    let removed = try await BeatStore.removeStale(keeping: Set(entries.map(\.name)), on: redis)
                    if !removed.isEmpty { logger.info("removed the state of schedules no longer in the manifest: \(removed.joined(separator: ", "))") }
                    cleaned = true
                }
                wait = try await tick()
            } catch {
                logger.warning("beat: \(error); retrying in 1 s")
            }
            // Sleep until the nearest tick, at most 1 s (so new state is seen), at least 5 ms.
            let ms = Int((min(max(wait, 0.005), 1.0) * 1000).rounded(.up))
            do { try await Task.sleep(for: .milliseconds(ms)) } catch { return }
        }
    }

    /// The local clock as this process sees it (skewed in tests).
    func localNow() -> Double { Date().timeIntervalSince1970 + localSkew }

    /// One pass: reads the state, fires what is due. Returns seconds until the nearest tick.
    func tick() async throws -> Double {
        let local = localNow()
        let state = try await BeatStore.read(entries.map(\.name), on: redis)
        // Redis time as an offset to the local clock: local errors cancel out.
        let offset = state.time - local
        func now() -> Double { localNow() + offset }
        var nearest = 1.0
        for e in entries {
            let fp = BeatStore.fingerprint(e)
            var s = state.entries[e.name] ?? BeatStore.EntryState()
            if s.definition != fp {
                if try await BeatStore.initialize(e.name, fingerprint: fp, on: redis) {
                    logger.info("schedule \(e.name): \(s.definition == nil ? "new" : "definition changed"); starts from now (\(e.rule))")
                }
                continue   // re-read next pass
            }
            // Fire every due tick; at most a few (catch-up within `grace`).
            var guardCount = 0
            while guardCount < 16, let last = s.last {
                guardCount += 1
                guard let first = e.nextFire(after: Date(timeIntervalSince1970: Double(last)), firedCount: s.count) else { break }
                let t = now()
                let firstT = Int(first.timeIntervalSince1970.rounded(.down))
                if Double(firstT) > t {
                    nearest = min(nearest, Double(firstT) - t)
                    break
                }
                var target = firstT
                var send = true
                var misfire = false
                if t - Double(firstT) > Beat.grace {
                    misfire = true
                    target = Beat.latestDue(e, from: first, now: t) ?? firstT
                    send = e.misfire == .runOnce
                }
                let msg = Beat.message(e, tick: target, node: node, misfire: misfire)
                let (r, holder) = try await BeatStore.fire(e, tick: target, fingerprint: fp, send: send, message: msg, on: redis)
                switch r {
                case 2:
                    logger.info("schedule \(e.name): tick \(ScheduleDate.format(Date(timeIntervalSince1970: Double(target)), in: e.timeZone)) skipped: \(e.task) \(holder ?? "?") with the same unique key is still queued or running")
                    s.last = target
                case 1:
                    if send {
                        fired.add(1, ordering: .relaxed)
                        logger.info("schedule \(e.name): sent \(e.task) for \(ScheduleDate.format(Date(timeIntervalSince1970: Double(target)), in: e.timeZone))\(misfire ? " (missed ticks: run once)" : "") id \(msg.id)")
                        s.count += 1
                    } else {
                        logger.info("schedule \(e.name): missed ticks up to \(ScheduleDate.format(Date(timeIntervalSince1970: Double(target)), in: e.timeZone)) skipped (misfire: skip)")
                    }
                    s.last = target
                case 0:
                    // Another beat fired it (or a later tick) first.
                    logger.debug("schedule \(e.name): tick \(target) already fired")
                    s.last = target
                case -2:
                    // Not yet due on Redis's clock (the local estimate ran ahead): wait a little.
                    nearest = min(nearest, 0.01)
                    guardCount = 99
                default:
                    // -1 definition changed under us, -3 limit reached: re-read next pass.
                    guardCount = 99
                }
            }
        }
        return nearest
    }

    /// The latest tick at or before `now`, starting from the due tick `from`.
    static func latestDue(_ e: ScheduleEntry, from: Date, now: Double) -> Int? {
        let nowDate = Date(timeIntervalSince1970: now)
        var candidate = from
        if case .every = e.rule {
            // Directly: the tick before the next one after now.
            if let next = e.nextFire(after: nowDate) {
                guard case let .every(iv) = e.rule else { return nil }
                let prev = next.addingTimeInterval(-Double(iv.seconds))
                if prev >= from { candidate = prev }
            }
            return Int(candidate.timeIntervalSince1970.rounded(.down))
        }
        // Cron: jump near now, then walk (bounded).
        if from.timeIntervalSince1970 < now - 86400, let probe = e.nextFire(after: Date(timeIntervalSince1970: now - 86400)), probe <= nowDate {
            candidate = probe
        }
        var steps = 0
        while steps < 200_000, let n = e.nextFire(after: candidate), n <= nowDate {
            candidate = n
            steps += 1
        }
        return Int(candidate.timeIntervalSince1970.rounded(.down))
    }

    /// The Celery message for one tick of `e`: an ordinary protocol-v2 task message (Python
    /// workers can run it) with the headers `celerity_beat_entry` and `celerity_beat_tick`.
    public static func message(_ e: ScheduleEntry, tick: Int?, node: String, misfire: Bool = false) -> TaskMessage {
        var m = TaskMessage(id: FastUUID.string(), task: e.task, args: e.args, kwargs: e.kwargs, queue: e.queue, origin: node)
        m.headers = [JSONMember("celerity_beat_entry", .string(e.name))]
        if let tick { m.headers.append(JSONMember("celerity_beat_tick", .int(tick))) } else { m.headers.append(JSONMember("celerity_beat_manual", .bool(true))) }
        if misfire { m.headers.append(JSONMember("celerity_beat_misfire", .string(e.misfire.rawValue))) }
        m.uniqueKey = e.unique?.redisKey(task: e.task, args: e.args, kwargs: e.kwargs)
        return m
    }
}

/// The beat's Redis state and scripts (shared by `Beat` and `celerity schedule`).
public enum BeatStore {
    public static let lastKey = "celerity:beat:last"
    public static let countKey = "celerity:beat:count"
    public static let defKey = "celerity:beat:def"
    public static let manualKey = "celerity:beat:manual"
    public static let firedKey = "celerity:beat:fired"

    public struct EntryState: Sendable, Hashable {
        /// The last fired (or skipped, or the restart point) tick, Unix seconds: the
        /// compare-and-set value.
        public var last: Int?
        /// The last tick actually sent.
        public var lastSent: Int?
        public var count: Int = 0
        public var definition: String?
        /// `schedule run`: "<unix time> <task id>".
        public var manual: String?
        public init() {}
    }

    public struct State: Sendable {
        /// Redis `TIME`, Unix seconds.
        public var time: Double
        public var entries: [String: EntryState]
    }

    /// A fingerprint of everything that defines an entry (FNV-1a 64 over a canonical text).
    public static func fingerprint(_ e: ScheduleEntry) -> String {
        let rule: String
        switch e.rule {
        case let .cron(c): rule = "cron:" + c.source
        case let .every(iv): rule = "every:\(iv.seconds)"
        }
        let parts = [e.task, rule, e.timeZone.identifier, JSONValue.array(e.args).serialized(), JSONValue.object(e.kwargs).serialized(), e.queue, e.misfire.rawValue,
                     e.start.map { String($0.timeIntervalSince1970) } ?? "-", e.end.map { String($0.timeIntervalSince1970) } ?? "-", e.limit.map(String.init) ?? "-"]
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in parts.joined(separator: "\u{1f}").utf8 {
            h ^= UInt64(b)
            h = h &* 0x0000_0100_0000_01b3
        }
        let hex = String(h, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// Redis TIME and the state of `names`, in one round trip.
    public static func read(_ names: [String], on redis: Redis) async throws -> State {
        var commands = [RedisCommand("TIME")]
        if !names.isEmpty {
            for key in [lastKey, countKey, defKey, manualKey, firedKey] { commands.append(RedisCommand("HMGET", arguments: [key] + names)) }
        }
        let replies = try await redis.pipeline(commands)
        for (r, c) in zip(replies, commands) { _ = try r.throwingError(naming: c) }
        guard let t = replies[0].array, t.count == 2, let secs = t[0].int, let micros = t[1].int else {
            throw RedisError(.unexpectedReply, "TIME answered \(replies[0])")
        }
        var out: [String: EntryState] = [:]
        if !names.isEmpty {
            let last = replies[1].array ?? [], count = replies[2].array ?? [], def = replies[3].array ?? [], manual = replies[4].array ?? [], sent = replies[5].array ?? []
            for (i, n) in names.enumerated() {
                var s = EntryState()
                s.last = i < last.count ? last[i].int : nil
                s.count = (i < count.count ? count[i].int : nil) ?? 0
                s.definition = i < def.count ? def[i].string : nil
                s.manual = i < manual.count ? manual[i].string : nil
                s.lastSent = i < sent.count ? sent[i].int : nil
                out[n] = s
            }
        }
        return State(time: Double(secs) + Double(micros) / 1_000_000, entries: out)
    }

    /// Sets the entry's fingerprint and restarts it from Redis's current second (count 0),
    /// unless the fingerprint is already there. True when it did.
    static let initScript = RedisScript("""
    if redis.call('HGET', KEYS[3], ARGV[1]) == ARGV[2] then return 0 end
    local now = redis.call('TIME')[1]
    redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
    redis.call('HSET', KEYS[1], ARGV[1], now)
    redis.call('HSET', KEYS[2], ARGV[1], 0)
    return 1
    """)

    static func initialize(_ name: String, fingerprint: String, on redis: Redis) async throws -> Bool {
        try await redis.evalScript(initScript, keys: [lastKey, countKey, defKey], args: [name, fingerprint]).int == 1
    }

    /// One fire, atomically. KEYS: last, count, def, queue list, kombu binding, binding_permanent, fired,
    /// and (a unique task) its unique key. ARGV: name, fingerprint, tick, send (1/0), message,
    /// limit (0: none), binding member, and (a unique task) ttl in ms, task id.
    /// Returns 1 fired (or skipped, send=0), 0 this tick (or a later one) was already fired,
    /// -1 the stored definition differs, -2 the tick is in the future by Redis's clock,
    /// -3 the limit is reached, {2, id}: a unique task whose key `id` holds (still queued or
    /// running): the tick is recorded as done, nothing sent, not counted.
    static let fireScript = RedisScript("""
    local name, t = ARGV[1], tonumber(ARGV[3])
    if redis.call('HGET', KEYS[3], name) ~= ARGV[2] then return -1 end
    if t > tonumber(redis.call('TIME')[1]) then return -2 end
    local last = tonumber(redis.call('HGET', KEYS[1], name) or '-1')
    if last ~= nil and last >= t then return 0 end
    if ARGV[4] == '1' then
      local n = tonumber(redis.call('HGET', KEYS[2], name) or '0')
      local limit = tonumber(ARGV[6])
      if limit > 0 and n >= limit then return -3 end
      if KEYS[8] and not redis.call('SET', KEYS[8], ARGV[9], 'NX', 'PX', ARGV[8]) then
        redis.call('HSET', KEYS[1], name, ARGV[3])
        return {2, redis.call('GET', KEYS[8])}
      end
      redis.call('HINCRBY', KEYS[2], name, 1)
      redis.call('SADD', KEYS[5], ARGV[7])
      redis.call('SADD', KEYS[6], ARGV[7])
      redis.call('LPUSH', KEYS[4], ARGV[5])
      redis.call('HSET', KEYS[7], name, ARGV[3])
    end
    redis.call('HSET', KEYS[1], name, ARGV[3])
    return 1
    """)

    /// The script's answer, and for 2 (a unique task still queued or running) the id holding its key.
    static func fire(_ e: ScheduleEntry, tick: Int, fingerprint: String, send: Bool, message: TaskMessage, on redis: Redis) async throws -> (Int, String?) {
        var keys: [any RedisArgument] = [lastKey, countKey, defKey, Keys.queue(e.queue, priority: message.priority), Keys.binding(e.queue), Keys.bindingPermanent(e.queue), firedKey]
        var args: [any RedisArgument] = [e.name, fingerprint, tick, send ? "1" : "0", message.encode(), e.limit ?? 0, Keys.bindingMember(e.queue)]
        if let key = message.uniqueKey, let unique = e.unique {
            keys.append(key)
            args += [unique.ttl * 1000, message.id]
        }
        let r = try await redis.evalScript(fireScript, keys: keys, args: args)
        if let a = r.array, a.count == 2, a[0].int == 2 { return (2, a[1].string) }
        guard let i = r.int else { throw RedisError(.unexpectedReply, "the beat's fire script answered \(r)") }
        return (i, nil)
    }

    /// `celerity schedule run`: sends the entry's message now and records it as a manual run
    /// ("<unix time> <task id>" in `celerity:beat:manual`); the regular ticks, the count and
    /// the limit are not touched.
    static let manualScript = RedisScript("""
    local now = redis.call('TIME')[1]
    redis.call('SADD', KEYS[2], ARGV[3])
    redis.call('SADD', KEYS[3], ARGV[3])
    redis.call('LPUSH', KEYS[1], ARGV[1])
    redis.call('HSET', KEYS[4], ARGV[2], now .. ' ' .. ARGV[4])
    return now
    """)

    /// Sends `e` once now; returns the message sent.
    public static func runNow(_ e: ScheduleEntry, node: String, on redis: Redis) async throws -> TaskMessage {
        let m = Beat.message(e, tick: nil, node: node)
        _ = try await redis.evalScript(manualScript, keys: [Keys.queue(e.queue, priority: m.priority), Keys.binding(e.queue), Keys.bindingPermanent(e.queue), manualKey],
                                       args: [m.encode(), e.name, Keys.bindingMember(e.queue), m.id])
        return m
    }

    /// Deletes the state of entries not in `keeping`; returns their names.
    public static func removeStale(keeping: Set<String>, on redis: Redis) async throws -> [String] {
        let known = try await redis.call("HKEYS", defKey).array?.compactMap(\.string) ?? []
        let stale = known.filter { !keeping.contains($0) }.sorted()
        if stale.isEmpty { return [] }
        let commands = [lastKey, countKey, defKey, manualKey, firedKey].map { RedisCommand("HDEL", arguments: [$0] + stale) }
        for (r, c) in zip(try await redis.pipeline(commands), commands) { _ = try r.throwingError(naming: c) }
        return stale
    }
}

extension BeatStore {
    /// One schedule as `celerity schedule list` and the dashboard show it.
    public struct Row: Sendable {
        public var entry: ScheduleEntry
        /// The schedule's text (with its time zone when a cron is not in UTC).
        public var schedule: String
        /// The last tick sent (nil: none, or the definition changed since).
        public var last: Date?
        /// The next fire (nil: never again: an end or a limit reached).
        public var next: Date?
        /// No beat fired a tick that is due (`next` is then counted from now).
        public var overdue: Bool
        public var count: Int
        /// `new` (never run), `changed` (its definition differs from the last run's), `overdue`, `ok`.
        public var state: String
        /// The last `celerity schedule run`.
        public var lastManualRun: Date?

        /// The row as `celerity schedule list --json` prints it (times in UTC).
        public var json: JSONValue {
            let utc = TimeZone(identifier: "UTC")!
            func d(_ date: Date?) -> JSONValue { date.map { .string(ScheduleDate.format($0, in: utc)) } ?? .null }
            return .object([
                JSONMember("name", .string(entry.name)), JSONMember("task", .string(entry.task)), JSONMember("queue", .string(entry.queue)),
                JSONMember("schedule", .string(schedule)), JSONMember("misfire", .string(entry.misfire.rawValue)),
                JSONMember("last", d(last)), JSONMember("next", d(next)),
                JSONMember("count", .int(count)), JSONMember("limit", entry.limit.map { .int($0) } ?? .null),
                JSONMember("state", .string(state)), JSONMember("last_manual_run", d(lastManualRun)),
            ])
        }
    }

    /// The rows of `entries` from their state in Redis (`read`).
    public static func rows(_ entries: [ScheduleEntry], _ state: State) -> [Row] {
        let now = Date(timeIntervalSince1970: state.time)
        return entries.map { e in
            let s = state.entries[e.name] ?? EntryState()
            let current = s.definition == fingerprint(e)
            // With no (current) state, a beat starts the entry from now.
            let last = current ? s.last : nil
            let count = current ? s.count : 0
            var next = e.nextFire(after: last.map { Date(timeIntervalSince1970: Double($0)) } ?? now, firedCount: count)
            var overdue = false
            if let n = next, n.timeIntervalSince1970 < state.time - Beat.grace {
                overdue = true   // no beat is running: a beat starting now follows `misfire`
                next = e.nextFire(after: now, firedCount: count)
            }
            var rule = e.rule.description
            if case .cron = e.rule, e.timeZone.identifier != "UTC" { rule += " \(e.timeZone.identifier)" }
            let manual = s.manual.flatMap { $0.split(separator: " ").first.flatMap { Double($0) } }
            return Row(entry: e, schedule: rule, last: (current ? s.lastSent : nil).map { Date(timeIntervalSince1970: Double($0)) }, next: next,
                       overdue: overdue, count: count, state: !current ? (s.definition == nil ? "new" : "changed") : (overdue ? "overdue" : "ok"),
                       lastManualRun: manual.map { Date(timeIntervalSince1970: $0) })
        }
    }
}
