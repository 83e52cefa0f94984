import Foundation
import RedisClient

/// Where a result backend joins a chord's parts: the Redis backend's native scheme of Celery
/// 5.7 (celery/backends/redis.py), on the same keys with the same semantics, so that a chord
/// whose parts run on a mix of Python and Celerity workers completes exactly once. rpc:// has
/// none (Celery refuses chords there).
///
/// Keys (prefix `celery-taskset-meta-<group>`): `.s` the chord's size (set by whoever sends
/// the header, before its parts), `.j` the parts' results (sorted set, score `group_index`),
/// `.d` the parts seen (`<task id>:<index>`: a part delivered twice counts once), `.t` a size
/// correction, `.c` the claim of whoever sends the body (a token, then `done`).
public protocol ChordStore: Sendable {
    /// Sets the size of chord `group` (and clears an old claim of a re-sent chord).
    func setChordSize(_ group: String, _ size: Int) async throws
    /// Records the outcome of one part (a part recorded already counts once).
    func partReturned(group: String, taskID: String, index: Int?, state: TaskState, result: JSONValue) async throws -> ChordPartReturn
    /// Renews the claim before the body is sent; false: it was lost (send nothing).
    func extendClaim(_ join: ChordJoin) async throws -> Bool
    /// After the body was sent: the chord's data goes, `.c` becomes `done` (late duplicates
    /// of parts are ignored from then on).
    func finish(_ join: ChordJoin) async throws
    /// Sends the body (`messages`: list key, envelope) and finishes the chord in one step,
    /// only while the claim is still ours; false: it was not (nothing sent). Only for a store
    /// on the broker's own Redis.
    func sendBody(_ join: ChordJoin, messages: [(listKey: String, envelope: [UInt8])]) async throws -> Bool
    /// After a failed chord was reported: its size goes, so a late duplicate cannot fail it again.
    func dropSize(_ group: String) async throws
}

/// What recording a chord part found.
public enum ChordPartReturn: Sendable {
    /// Recorded: the chord is not complete yet, or it is done (its body sent or failed).
    case recorded
    /// This part completed the chord and this caller won the claim to send its body: the
    /// parts' results, in order.
    case claimed(ChordJoin)
    /// The chord is complete but another caller holds the claim: it is sending the body, or
    /// it died before it did (its part is then run again, and finds this); the claim lapses
    /// within `claimSeconds` (21 s once renewed), and the next to record a part claims it.
    case claimedElsewhere
}

/// A completed chord, claimed by this worker.
public struct ChordJoin: Sendable {
    public struct Part: Sendable {
        public var taskID: String
        public var state: TaskState
        /// The value, or the exception document of a failed part.
        public var result: JSONValue
    }
    public var group: String
    public var token: String
    public var parts: [Part]
}

extension RedisResultBackend: ChordStore {
    static func chordKey(_ group: String, _ suffix: String = "") -> String { "celery-taskset-meta-" + group + suffix }
    /// Seconds a claim holds before the body is sent (Celery: twice its join timeout, at least 5).
    static let claimSeconds = 10

    /// KEYS: .j .t .s .d <group> .c; ARGV: task id, entry, ordered (1), score, expires,
    /// group expires, claim seconds, token. Returns {ready count, size diff, size, claimed}, or
    /// {-1, 0, 0, 0} once the chord is done. Written from the semantics Celery 5.7 documents
    /// for its own script, since a mixed chord needs both to act alike on the same keys.
    static let partReturnScript = RedisScript("""
    if redis.call('GET', KEYS[6]) == 'done' then return {-1, 0, 0, 0} end
    local seen = ARGV[1] .. ':' .. ARGV[4]
    if redis.call('SISMEMBER', KEYS[4], seen) == 0 then
      if ARGV[3] == '1' then redis.call('ZADD', KEYS[1], ARGV[4], ARGV[2]) else redis.call('RPUSH', KEYS[1], ARGV[2]) end
      redis.call('SADD', KEYS[4], seen)
    end
    local ready
    if ARGV[3] == '1' then ready = redis.call('ZCOUNT', KEYS[1], '-inf', '+inf') else ready = redis.call('LLEN', KEYS[1]) end
    local expires, gexpires = tonumber(ARGV[5]), tonumber(ARGV[6])
    if expires > 0 then
      for _, k in ipairs({KEYS[1], KEYS[2], KEYS[3], KEYS[4]}) do redis.call('EXPIRE', k, expires) end
      if gexpires > 0 then redis.call('EXPIRE', KEYS[5], gexpires) end
    end
    local diff = redis.call('GET', KEYS[2])
    local size = redis.call('GET', KEYS[3])
    local claimed = 0
    if size and ready == tonumber(size) + tonumber(diff or 0) then
      if redis.call('SET', KEYS[6], ARGV[8], 'NX', 'EX', tonumber(ARGV[7])) then claimed = 1 end
    end
    return {ready, diff, size, claimed}
    """)

    /// KEYS: .c .s; ARGV: token, seconds. Renews our claim, or takes a lapsed one back while
    /// the chord's data is still there.
    static let extendClaimScript = RedisScript("""
    local cur = redis.call('GET', KEYS[1])
    if cur == ARGV[1] then return redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2])) end
    if not cur and redis.call('EXISTS', KEYS[2]) == 1 then
      if redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]), 'NX') then return 1 end
    end
    return 0
    """)

    /// KEYS: .c .j .t .s .d; ARGV: token, seconds to keep `done`.
    static let finishScript = RedisScript("""
    if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
    redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
    if tonumber(ARGV[2]) > 0 then redis.call('SET', KEYS[1], 'done', 'EX', tonumber(ARGV[2])) end
    return 1
    """)

    /// KEYS: .c .j .t .s .d, then one list per message; ARGV: token, seconds to keep `done`,
    /// then the messages. The body goes out with the chord marked done, or not at all.
    static let sendBodyScript = RedisScript("""
    if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
    for i = 6, #KEYS do redis.call('LPUSH', KEYS[i], ARGV[i - 3]) end
    redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
    if tonumber(ARGV[2]) > 0 then redis.call('SET', KEYS[1], 'done', 'EX', tonumber(ARGV[2])) end
    return 1
    """)

    public func setChordSize(_ group: String, _ size: Int) async throws {
        _ = try await redis.pipeline([
            RedisCommand("DEL", Self.chordKey(group, ".c")),
            expires > 0 ? RedisCommand("SET", Self.chordKey(group, ".s"), String(size), "EX", String(expires))
                        : RedisCommand("SET", Self.chordKey(group, ".s"), String(size)),
        ])
    }

    public func partReturned(group: String, taskID: String, index: Int?, state: TaskState, result: JSONValue) async throws -> ChordPartReturn {
        let entry = JSONValue.array([.int(1), .string(taskID), .string(state.rawValue), result]).serializedBytes()
        let token = FastUUID.string().replacingOccurrences(of: "-", with: "")
        let k = { (s: String) in Self.chordKey(group, s) }
        let reply = try await redis.evalScript(Self.partReturnScript, keys: [k(".j"), k(".t"), k(".s"), k(".d"), k(""), k(".c")],
                                               args: [taskID, entry, "1", index.map(String.init) ?? "+inf", expires, expires, Self.claimSeconds, token])
        guard case let .array(r) = reply, r.count == 4 else { return .recorded }
        guard r[3].int == 1 else {
            if let ready = r[0].int, ready >= 0, let size = r[2].int, ready == size + (r[1].int ?? 0) { return .claimedElsewhere }
            return .recorded
        }
        let members = try await redis.call("ZRANGE", k(".j"), 0, -1)
        guard case let .array(items) = members else { return .recorded }
        var parts: [ChordJoin.Part] = []
        for item in items {
            guard let b = item.bytes, let v = try? JSONValue(parsing: b), let a = v.arrayValue, a.count == 4,
                  let tid = a[1].stringValue, let s = a[2].stringValue, let st = TaskState(rawValue: s) else {
                throw WorkflowError("chord \(group): an unreadable part result in \(k(".j"))")
            }
            parts.append(.init(taskID: tid, state: st, result: a[3]))
        }
        return .claimed(ChordJoin(group: group, token: token, parts: parts))
    }

    public func extendClaim(_ join: ChordJoin) async throws -> Bool {
        let r = try await redis.evalScript(Self.extendClaimScript, keys: [Self.chordKey(join.group, ".c"), Self.chordKey(join.group, ".s")],
                                           args: [join.token, 2 * Self.claimSeconds + 1])
        return r.int == 1
    }

    public func finish(_ join: ChordJoin) async throws {
        let k = { (s: String) in Self.chordKey(join.group, s) }
        _ = try await redis.evalScript(Self.finishScript, keys: [k(".c"), k(".j"), k(".t"), k(".s"), k(".d")],
                                       args: [join.token, max(4 * Self.claimSeconds, 300)])
    }

    public func sendBody(_ join: ChordJoin, messages: [(listKey: String, envelope: [UInt8])]) async throws -> Bool {
        let k = { (s: String) in Self.chordKey(join.group, s) }
        let keys: [any RedisArgument] = [k(".c"), k(".j"), k(".t"), k(".s"), k(".d")] + messages.map { $0.listKey as any RedisArgument }
        let args: [any RedisArgument] = [join.token, max(4 * Self.claimSeconds, 300)] + messages.map { $0.envelope as any RedisArgument }
        let r = try await redis.evalScript(Self.sendBodyScript, keys: keys, args: args)
        return r.int == 1
    }

    public func dropSize(_ group: String) async throws {
        _ = try await redis.call("DEL", Self.chordKey(group, ".s"))
    }
}
