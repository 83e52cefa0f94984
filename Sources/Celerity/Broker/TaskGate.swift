import Foundation
import RedisClient
import Synchronization

/// Rate limits and concurrency caps that hold across every worker (tasks.yaml `rate_limit`
/// with `burst`, and `max_concurrency`), kept in Redis and decided there, one script per
/// message of a limited task. The worker asks after it fetched the message, so the limits
/// also apply to calls sent by Python Celery clients.
///
/// Rate: GCRA (the generic cell rate algorithm) with reservations. `celerity:rate:<task>`
/// holds the theoretical arrival time in Redis's own clock (`TIME`, ms), so the workers'
/// clocks do not matter. Every message asking takes the next turn (the key moves on by one
/// period); its start may be now, soon (the worker waits for it holding the message but no
/// execution slot), or later: then the message leaves the worker for `celerity:rate-wait:<task>`
/// (parked, scored by its turn) until just before its turn, when any worker puts it back at
/// the head of its queue; its turn is kept for it in `celerity:rate-turn:<id>`. So a long
/// backlog costs one script per message, not one per message per retry, and it never sits
/// in a worker's memory; a worker killed meanwhile loses nothing (the message is in its
/// processing list or parked).
///
/// Caps: `celerity:cap:<task>` is a sorted set of the task ids running now, scored by the end
/// of their lease (renewed while they run); a crashed worker's entries lapse after
/// `leaseSeconds`. A message that finds the cap full waits in `celerity:cap-wait:<task>` (in
/// Redis, holding nothing); each release hands its place to the oldest waiter (which is put
/// back at the head of its queue with the place reserved for it).
///
/// The `rate_limit` remote-control command changes a task's rate for every worker at once
/// (`celerity:rate-conf`, read by the script; 0: no limit).
///
/// No library here does this (swift-nio and Hummingbird have no distributed limiter), and
/// the state must live in Redis, so this is our own code.
public final class TaskGate: Sendable {
    struct Policy: Sendable {
        var rate: TaskSpec.RateLimit?
        var cap: Int?
    }
    let control: Redis
    let processingKey: String
    /// By task name; replaced when the worker reloads its manifest (`update`).
    private let policyTable: Mutex<[String: Policy]>
    var policies: [String: Policy] { policyTable.withLock { $0 } }
    /// Rates set at run time (`rate_limit`), per second (0: the task is not limited), and as
    /// written.
    private let overrides = Mutex<[String: (perSecond: Double, text: String)]>([:])
    /// Whether any task is limited now (the hot path reads this one atomic per message).
    private let anyGated: Atomic<Bool>
    /// The places held by the capped tasks running here (their members in the running set,
    /// whose leases are renewed), by task name and task id.
    private let leased = Mutex<[String: [String: [String]]]>([:])
    /// Tasks with messages parked by a rate limit in Redis (found by `maintain`).
    private let discovered = Mutex<Set<String>>([])
    let leaseSeconds: Int

    /// Waits up to this long in the worker; longer waits are parked in Redis.
    static let horizonMs = 500.0
    /// A parked message goes back to its queue this long before its turn (the keeper runs
    /// every 250 ms).
    static let lookaheadMs = 300.0
    /// A message later than this for its reserved turn takes a new one.
    static let toleranceMs = 1000.0

    init(control: Redis, processingKey: String, manifest: Manifest, leaseSeconds: Int) {
        self.control = control
        self.processingKey = processingKey
        let p = Self.policies(of: manifest)
        policyTable = Mutex(p)
        anyGated = Atomic(!p.isEmpty)
        self.leaseSeconds = max(leaseSeconds, 2)
    }

    private static func policies(of manifest: Manifest) -> [String: Policy] {
        var p: [String: Policy] = [:]
        for (name, spec) in manifest.tasks where spec.rateLimit != nil || spec.maxConcurrency != nil {
            p[name] = Policy(rate: spec.rateLimit, cap: spec.maxConcurrency)
        }
        return p
    }

    /// The limits of a reloaded manifest apply to the messages admitted from now on. A place
    /// held under a cap that is gone is still released (see `release`); messages parked or
    /// waiting for a limit that is gone are sent back by `maintain`, as for a task removed.
    func update(_ manifest: Manifest) {
        let p = Self.policies(of: manifest)
        policyTable.withLock { $0 = p }
        recomputeGated()
    }

    /// Whether messages of `task` must ask the gate before they start.
    func isGated(_ task: String) -> Bool {
        guard anyGated.load(ordering: .relaxed) else { return false }
        return gated(task)
    }

    private func gated(_ task: String) -> Bool {
        let o = overrides.withLock { $0[task]?.perSecond }
        return policyTable.withLock { p in
            if let o { return o > 0 || p[task]?.cap != nil }
            return p[task] != nil
        }
    }

    /// The rate of `task` now as written (`100/s`), nil: none.
    func rateText(_ task: String) -> String? {
        if let o = overrides.withLock({ $0[task] }) { return o.perSecond > 0 ? o.text : nil }
        return policyTable.withLock { $0[task]?.rate?.text }
    }

    private func recomputeGated() {
        let any = !policies.isEmpty || overrides.withLock { $0.values.contains { $0.perSecond > 0 } }
        anyGated.store(any, ordering: .relaxed)
    }

    // MARK: - Admission

    enum Verdict: Equatable, Sendable {
        /// Start now.
        case go
        /// Start after this wait (its turn is reserved; the message stays in the processing list).
        case wait(Duration)
        /// Moved to the delayed set until just before its turn.
        case parked
        /// The cap is full: moved to the task's waiting list.
        case waiting
        /// No longer in this worker's processing list (another worker took it back).
        case gone
    }

    /// KEYS: 1 processing list, 2 rate state, 3 runtime rates, 4 reserved turn of this message,
    /// 5 running ids (cap), 6 waiting list (cap), 7 parked messages of the task (rate), 8 the
    /// set of tasks with messages parked or waiting.
    /// ARGV: 1 message, 2 its list key, 3 task, 4 task id, 5 period ms (0: none), 6 burst,
    /// 7 cap (0: none), 8 lease ms, 9 horizon ms, 10 lookahead ms, 11 the member of this run in
    /// the running set (`<id> <token>`: unique per run, so a release never frees another
    /// run's place), 12 tolerance ms.
    /// Returns {verdict, µs}: 0 go, 1 wait µs, 2 parked, 3 waiting, 4 gone.
    static let admitScript = RedisScript("""
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
    local period = tonumber(ARGV[5])
    local o = redis.call('HGET', KEYS[3], ARGV[3])
    if o then
      local r = tonumber(string.match(o, '^[^ ]+'))
      if r and r > 0 then period = 1000 / r else period = 0 end
    end
    local cap = tonumber(ARGV[7])
    if cap > 0 then
      redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
      -- A place handed over to this message by a release (`r:<id>`) is its own; else it
      -- needs a free one.
      local reserved = redis.call('ZSCORE', KEYS[5], 'r:' .. ARGV[4])
      if not reserved and redis.call('ZCARD', KEYS[5]) >= cap then
        if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 0 then return {4, 0} end
        redis.call('LPUSH', KEYS[6], ARGV[2] .. '\\0' .. ARGV[4] .. '\\0' .. ARGV[1])
        redis.call('SADD', KEYS[8], ARGV[3])
        return {3, 0}
      end
    end
    local wait = 0
    if period > 0 then
      local slot = tonumber(redis.call('GET', KEYS[4]) or '')
      if slot then redis.call('DEL', KEYS[4]) end
      if not slot or now - slot > tonumber(ARGV[12]) then
        local burst = tonumber(ARGV[6])
        local tat = tonumber(redis.call('GET', KEYS[2]) or '0')
        if tat < now then tat = now end
        slot = tat - (burst - 1) * period
        tat = tat + period
        redis.call('SET', KEYS[2], tostring(tat), 'PX', math.ceil(tat - now) + 1000)
      end
      wait = slot - now
      if wait > tonumber(ARGV[9]) then
        if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 0 then return {4, 0} end
        redis.call('SET', KEYS[4], tostring(slot), 'PX', math.ceil(wait) + 60000)
        redis.call('ZADD', KEYS[7], slot - tonumber(ARGV[10]), ARGV[2] .. '\\0' .. ARGV[4] .. '\\0' .. ARGV[1])
        -- A place handed over to it goes to the next waiter (at the next sweep).
        if cap > 0 then redis.call('ZREM', KEYS[5], 'r:' .. ARGV[4]) end
        redis.call('SADD', KEYS[8], ARGV[3])
        return {2, 0}
      end
    end
    if cap > 0 then
      redis.call('ZREM', KEYS[5], 'r:' .. ARGV[4])
      redis.call('ZADD', KEYS[5], now + tonumber(ARGV[8]), ARGV[11])
    end
    if wait > 0 then return {1, math.floor(wait * 1000)} end
    return {0, 0}
    """)

    /// One message asking: what `admit` needs of it.
    struct Request: Sendable {
        var raw: [UInt8]
        var task: String
        var id: String
        var listKey: String
    }

    /// Asks whether the message `raw` (of `task`, id `id`, from list `listKey`) may start now.
    /// On `.go` and `.wait` a capped task holds a place: call `release` when it is over.
    func admit(_ raw: [UInt8], task: String, id: String, listKey: String) async throws -> Verdict {
        try await admit([Request(raw: raw, task: task, id: id, listKey: listKey)])[0]
    }

    /// The same for a batch, in one round trip (one script run per message, pipelined).
    /// A refusal of any of them (an error reply) throws; those before it were decided.
    func admit(_ requests: [Request]) async throws -> [Verdict] {
        let members = requests.map { q in q.id + " " + String(UInt64.random(in: 0...UInt64.max), radix: 36) }
        let policies = self.policies
        let calls = zip(requests, members).map { q, member -> (keys: [any RedisArgument], args: [any RedisArgument]) in
            let policy = policies[q.task]
            let rate = policy?.rate
            let period = rate.map { 1000 / $0.perSecond } ?? 0
            return ([processingKey, Keys.rateState(q.task), Keys.rateOverrides, Keys.rateTurn(q.id), Keys.running(q.task), Keys.capWaiting(q.task), Keys.rateParked(q.task),
                     Keys.limitedTasks],
                    [q.raw, q.listKey, q.task, q.id, period, rate?.burst ?? 1, policy?.cap ?? 0, leaseSeconds * 1000,
                     Self.horizonMs, Self.lookaheadMs, member, Self.toleranceMs])
        }
        let replies = try await control.evalScriptMany(Self.admitScript, calls: calls)
        var out: [Verdict] = []
        out.reserveCapacity(replies.count)
        for (i, (q, r)) in zip(requests, replies).enumerated() {
            try r.throwingError(naming: RedisCommand("EVALSHA", "admit", Keys.rateState(q.task), Keys.running(q.task)))
            let parts = r.array ?? []
            let micros = parts.count > 1 ? parts[1].int ?? 0 : 0
            let v: Verdict
            switch parts.first?.int ?? 0 {
            case 1: v = .wait(.microseconds(micros))
            case 2: v = .parked
            case 3: v = .waiting
            case 4: v = .gone
            default: v = .go
            }
            if policies[q.task]?.cap != nil, v == .go || v.isWait { hold(q.task, q.id, members[i]) }
            out.append(v)
        }
        return out
    }

    private func hold(_ task: String, _ id: String, _ member: String) {
        leased.withLock { $0[task, default: [:]][id, default: []].append(member) }
    }

    // MARK: - Caps: release, renewal, sweep

    /// KEYS: 1 running set, 2 waiting list. ARGV: 1 the member whose place ends ("" for none:
    /// a sweep), 2 cap, 3 lease ms. Drops lapsed leases, then hands each free place to the
    /// oldest waiter: its message goes back to the pop end of its list (it runs next) with the
    /// place reserved for it (`r:<id>`, taken over when it is admitted). A waiter whose list
    /// this worker may not write stays waiting; the others still move (then an error answer).
    static let releaseScript = RedisScript("""
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
    if ARGV[1] ~= '' then redis.call('ZREM', KEYS[1], ARGV[1]) end
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
    local free = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[1])
    local moved = 0
    local refused = {}
    local why = nil
    while free > 0 do
      local m = redis.call('RPOP', KEYS[2])
      if not m then break end
      local a = string.find(m, '\\0', 1, true)
      local b = a and string.find(m, '\\0', a + 1, true)
      if b then
        local key = string.sub(m, 1, a - 1)
        local r = redis.pcall('RPUSH', key, string.sub(m, b + 1))
        if type(r) == 'table' and r.err then
          refused[#refused + 1] = m
          why = why or (r.err .. ' (RPUSH ' .. key .. ' of a message waiting for its concurrency cap)')
        else
          redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), 'r:' .. string.sub(m, a + 1, b - 1))
          free = free - 1
          moved = moved + 1
        end
      end
    end
    for i = #refused, 1, -1 do redis.call('RPUSH', KEYS[2], refused[i]) end
    if why then return redis.error_reply(why) end
    return moved
    """)

    /// A capped task is over (whatever its outcome), or will not run: frees the place it held
    /// (or the one handed over to it).
    func release(task: String, id: String) async throws {
        // A cap removed by a reload while this call held a place under it: the place is
        // freed all the same (and the waiters, if any, go back to their queue).
        let held = leased.withLock { $0[task]?[id]?.isEmpty == false }
        guard let cap = policies[task]?.cap ?? (held ? Int(Int32.max) : nil) else { return }
        let member = leased.withLock { l -> String in
            guard var members = l[task]?[id], let m = members.popLast() else { return "r:" + id }
            if members.isEmpty { l[task]?.removeValue(forKey: id) } else { l[task]?[id] = members }
            return m
        }
        let r = try await control.evalScript(Self.releaseScript, keys: [Keys.running(task), Keys.capWaiting(task)], args: [member, cap, leaseSeconds * 1000])
        try r.throwingError(naming: RedisCommand("EVALSHA", "release"))
    }

    /// KEYS: running-id sets; ARGV: 1 lease ms, then per key a count and that many ids.
    static let renewScript = RedisScript("""
    local t = redis.call('TIME')
    local until_ = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000 + tonumber(ARGV[1])
    local i = 2
    for k = 1, #KEYS do
      local n = tonumber(ARGV[i])
      for j = 1, n do redis.call('ZADD', KEYS[k], 'XX', until_, ARGV[i + j]) end
      i = i + n + 1
    end
    return 1
    """)

    /// Renews the leases of the capped tasks running here, then (any worker may) gives the
    /// places of lapsed leases (a crashed worker's) to waiters. Runs every second.
    func maintain() async throws {
        let held = leased.withLock { l in l.filter { !$0.value.isEmpty }.mapValues { Array($0.values.joined()) } }
        if !held.isEmpty {
            var keys: [String] = []
            var args: [any RedisArgument] = [leaseSeconds * 1000]
            for (task, ids) in held {
                keys.append(Keys.running(task))
                args.append(ids.count)
                args.append(contentsOf: ids.map { $0 as any RedisArgument })
            }
            let r = try await control.evalScript(Self.renewScript, keys: keys, args: args)
            try r.throwingError(naming: RedisCommand("EVALSHA", "renew"))
        }
        try await refreshOverrides()
        // Tasks with messages parked or waiting in Redis, whatever this worker's tasks.yaml says
        // (a limit removed from it, or a task gone, must not strand them). The admit script
        // registers each task it parks for in `celerity:limited`; the entry goes when both
        // its lists are empty (in one script, so a park that comes later registers again).
        let members = try await control.call("SMEMBERS", Keys.limitedTasks)
        try members.throwingError(naming: RedisCommand("SMEMBERS", Keys.limitedTasks))
        var registered = members.array?.compactMap(\.string) ?? []
        for task in registered {
            let r = try await control.evalScript(Self.forgetScript, keys: [Keys.limitedTasks, Keys.rateParked(task), Keys.capWaiting(task)], args: [task])
            if r.int == 1 { registered.removeAll { $0 == task } }
        }
        discovered.withLock { $0 = Set(registered) }
        let waiting = registered
        var failure: (any Error)?
        let policies = self.policies
        for task in Set(waiting).union(policies.compactMap { $0.value.cap != nil ? $0.key : nil }) {
            // No cap here (any more): every waiter goes back to its queue.
            let cap = policies[task]?.cap ?? Int(Int32.max)
            do {
                let r = try await control.evalScript(Self.releaseScript, keys: [Keys.running(task), Keys.capWaiting(task)], args: ["", cap, leaseSeconds * 1000])
                try r.throwingError(naming: RedisCommand("EVALSHA", "sweep", Keys.capWaiting(task)))
            } catch {
                failure = failure ?? error
            }
        }
        if let failure { throw failure }
    }

    /// KEYS: 1 the registry, 2 parked, 3 waiting. ARGV: 1 task. Forgets a task with nothing
    /// parked or waiting (1), else keeps it (0).
    static let forgetScript = RedisScript("""
    if redis.call('ZCARD', KEYS[2]) == 0 and redis.call('LLEN', KEYS[3]) == 0 then
      redis.call('SREM', KEYS[1], ARGV[1])
      return 1
    end
    return 0
    """)

    // MARK: - Rates changed at run time

    /// Reads the rates set by `rate_limit` (every worker, every second).
    func refreshOverrides() async throws {
        let r = try await control.call("HGETALL", Keys.rateOverrides)
        try r.throwingError(naming: RedisCommand("HGETALL", Keys.rateOverrides))
        let items = r.array?.compactMap(\.string) ?? []
        var fresh: [String: (perSecond: Double, text: String)] = [:]
        var i = 0
        while i + 1 < items.count {
            let parts = items[i + 1].split(separator: " ", maxSplits: 1)
            if let d = parts.first.flatMap({ Double($0) }), d.isFinite, d >= 0 {
                fresh[items[i]] = (d, parts.count > 1 ? String(parts[1]) : "\(d)/s")
            }
            i += 2
        }
        overrides.withLock { $0 = fresh }
        recomputeGated()
    }

    /// KEYS: 1 runtime rates, 2 rate state, 3 parked messages. ARGV: 1 task, 2 new value.
    /// A changed rate starts afresh: the state is dropped, and every parked message goes back
    /// to the head of its queue (its reserved turn forgotten) to take a turn under the new
    /// rate. Several workers get the same broadcast: only the first one changes anything.
    static let setRateScript = RedisScript("""
    if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return 0 end
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
    redis.call('DEL', KEYS[2])
    return 1
    """)

    /// Sets the rate of `task` for every worker (0: none, whatever tasks.yaml says); `text`
    /// is how it was written (`10/m`), for listings.
    func setRate(_ task: String, perSecond: Double, text: String) async throws {
        let r = try await control.evalScript(Self.setRateScript, keys: [Keys.rateOverrides, Keys.rateState(task), Keys.rateParked(task)],
                                             args: [task, "\(perSecond) \(text)"])
        try r.throwingError(naming: RedisCommand("HSET", Keys.rateOverrides))
        if r.int == 1 { try await forward(task, all: true) }
        overrides.withLock { $0[task] = (perSecond, text) }
        recomputeGated()
    }

    /// KEYS: 1 parked messages of a task. ARGV: 1 most to move, 2 "1": all of them (their
    /// turns forgotten), else those whose time came (Redis's clock). Each goes to the pop end
    /// of its list (it runs next); ZREM decides who moves it, so it moves once whichever
    /// worker runs this. A list this worker may not write keeps its message; the others still
    /// move (then an error answer).
    static let forwardScript = RedisScript("""
    local all = ARGV[2] == '1'
    local upto = '+inf'
    if not all then
      local t = redis.call('TIME')
      upto = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
    end
    local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', upto, 'LIMIT', 0, tonumber(ARGV[1]))
    local moved = 0
    local why = nil
    for _, m in ipairs(due) do
      local a = string.find(m, '\\0', 1, true)
      local b = a and string.find(m, '\\0', a + 1, true)
      if b then
        local key = string.sub(m, 1, a - 1)
        local r = redis.pcall('RPUSH', key, string.sub(m, b + 1))
        if type(r) == 'table' and r.err then
          why = why or (r.err .. ' (RPUSH ' .. key .. ' of a message parked by its rate limit)')
        else
          redis.call('ZREM', KEYS[1], m)
          if all then redis.call('DEL', 'celerity:rate-turn:' .. string.sub(m, a + 1, b - 1)) end
          moved = moved + 1
        end
      else
        redis.call('ZREM', KEYS[1], m)
      end
    end
    if why then return redis.error_reply(why) end
    return moved
    """)

    /// Puts parked messages of `task` whose turn is near back on their queues (all of them
    /// with `all`); returns how many moved.
    @discardableResult
    func forward(_ task: String, all: Bool = false) async throws -> Int {
        var total = 0
        while true {
            let r = try await control.evalScript(Self.forwardScript, keys: [Keys.rateParked(task)], args: [500, all ? "1" : "0"])
            try r.throwingError(naming: RedisCommand("EVALSHA", "forward", Keys.rateParked(task)))
            let n = r.int ?? 0
            total += n
            if n < 500 { return total }
        }
    }

    /// The tasks whose parked messages the keeper looks after: those with a rate here, those
    /// whose rate was set at run time, and any other with messages parked in Redis (found by
    /// `maintain`). For a task with no rate here, `forward` moves them all.
    var rateLimitedTasks: [(task: String, all: Bool)] {
        var names = Set(policies.compactMap { $0.value.rate != nil ? $0.key : nil })
        for (task, _) in overrides.withLock({ $0 }) { names.insert(task) }
        names.formUnion(discovered.withLock { $0 })
        return names.sorted().map { ($0, rateText($0) == nil) }
    }
}

extension TaskGate.Verdict {
    var isWait: Bool { if case .wait = self { return true } else { return false } }
}
