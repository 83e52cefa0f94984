import Foundation
import RedisClient
import Yams

/// A task's `unique:` policy in tasks.yaml:
///
///     tasks:
///       reports.build: { builtin: echo, unique: { ttl: 1h, key: [0, region] } }
///
/// While a call is queued or running, another call with the same key is not enqueued: the
/// sender gets the first call's id. `ttl` (a duration: `30s`, `10m`, `1h`, `1d`, `1h30m`, or
/// seconds) bounds how long the key lives if nothing releases it; `key` selects what makes
/// two calls the same: integers are positional indexes (`args[i]`), strings are kwarg names
/// (`kwargs[name]`); a missing one counts as null. Without `key`, all args and kwargs count.
public struct UniqueSpec: Sendable, Hashable, CustomStringConvertible {
    public enum Selector: Sendable, Hashable, CustomStringConvertible {
        case arg(Int)
        case kwarg(String)
        public var description: String {
            switch self {
            case let .arg(i): return "args[\(i)]"
            case let .kwarg(k): return "kwargs.\(k)"
            }
        }
    }
    /// Seconds the key lives at most (≥ 1).
    public var ttl: Int
    /// What is compared; nil: all args and kwargs.
    public var key: [Selector]?

    public init(ttl: Int, key: [Selector]? = nil) {
        self.ttl = ttl
        self.key = key
    }

    public static let keyPrefix = "celerity:unique:"

    /// Compare-and-delete: KEYS[1] the unique key, ARGV[1] the task id. Deletes the key only
    /// while it still holds this task's id (a later call may hold it after a ttl expiry).
    public static let releaseSource = """
    if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
    return 0
    """
    public static let releaseScript = RedisScript(releaseSource)

    /// The Redis key of a call: `celerity:unique:<task>:<hex SHA-256 of the canonical JSON>`.
    ///
    /// The canonical JSON is the project's own serialization (`JSONValue.serialized`: no
    /// spaces, object members in the order given, integers as integers) of
    /// - `[args, kwargs]` without `key`;
    /// - the array of the selected values with `key` (`[args[0], kwargs["region"]]`, a missing
    ///   one as `null`).
    /// So `{"a":1,"b":2}` and `{"b":2,"a":1}` are different keys, and so are `1` and `1.0`.
    public func redisKey(task: String, args: [JSONValue], kwargs: [JSONMember]) -> String {
        let selected: JSONValue
        if let key {
            selected = .array(key.map { s -> JSONValue in
                switch s {
                case let .arg(i): return i < args.count ? args[i] : .null
                case let .kwarg(name): return kwargs.first { $0.key == name }?.value ?? .null
                }
            })
        } else {
            selected = .array([.array(args), .object(kwargs)])
        }
        return UniqueSpec.keyPrefix + task + ":" + SHA256.hex(selected.serializedBytes())
    }

    /// `ttl 1h, key [args[0], kwargs.region]`.
    public var description: String {
        "ttl \(EveryInterval(seconds: ttl)), key " + (key.map { "[" + $0.map(\.description).joined(separator: ", ") + "]" } ?? "all args and kwargs")
    }
}

extension ManifestReader {
    /// `unique: { ttl: <duration>, key: [<index or kwarg name>, …] }` of task `name`.
    func unique(_ n: Node, task name: String) throws(ManifestError) -> UniqueSpec {
        let what = "\(name).unique"
        let fields = try mapping(n, what, allowed: ["ttl", "key"])
        guard let (_, _, ttlNode) = fields.first(where: { $0.0 == "ttl" }) else {
            throw fail(n, "\(what) is missing the field 'ttl' (how long the key lives at most, e.g. ttl: 1h)")
        }
        let text: String
        if case let .scalar(s) = ttlNode, s.style == .plain, let i = ttlNode.int {
            guard i >= 1 else { throw fail(ttlNode, "\(what).ttl must be at least 1 second, got \(i)") }
            text = String(i)
        } else if case let .scalar(s) = ttlNode, s.style == .plain, ttlNode.float != nil {
            throw fail(ttlNode, "\(what).ttl must be a whole number of seconds or a duration such as 30s, 10m, 1h or 1d, got \(s.string)")
        } else {
            text = try string(ttlNode, "\(what).ttl")
        }
        let ttl: Int
        do throws(ScheduleError) { ttl = try EveryInterval(parsing: text).seconds } catch {
            throw fail(ttlNode, "\(what).ttl: \(error.message)")
        }
        var spec = UniqueSpec(ttl: ttl)
        if let (_, _, keyNode) = fields.first(where: { $0.0 == "key" }) {
            guard case let .sequence(items) = keyNode else {
                throw fail(keyNode, "\(what).key must be a list of positional indexes (0, 1, …) and kwarg names, found \(kind(keyNode))")
            }
            var selectors: [UniqueSpec.Selector] = []
            for item in items {
                guard case let .scalar(s) = item, item.null == nil || s.style != .plain else {
                    throw fail(item, "each item of \(what).key must be a positional index or a kwarg name, found \(kind(item))")
                }
                if s.style == .plain, let i = item.int {
                    guard i >= 0 else { throw fail(item, "\(what).key: a positional index must be ≥ 0, got \(i)") }
                    selectors.append(.arg(i))
                } else if s.style == .plain, item.float != nil || item.bool != nil {
                    throw fail(item, "each item of \(what).key must be a positional index or a kwarg name, found \(kind(item))")
                } else {
                    if s.string.isEmpty { throw fail(item, "\(what).key: a kwarg name must not be empty") }
                    selectors.append(.kwarg(s.string))
                }
            }
            if selectors.isEmpty { throw fail(keyNode, "\(what).key must not be empty (leave it out to compare all args and kwargs)") }
            spec.key = selectors
        }
        return spec
    }
}
