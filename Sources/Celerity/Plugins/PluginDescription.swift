import Foundation

/// A plugin's answer to `describe` (docs/plugins.md, "describe"): the tasks it serves and,
/// for each, the policy and argument schema it suggests. tasks.yaml entries override it key by key.
///
/// Only the document's shape is checked here (an object, a `tasks` object of objects, known keys);
/// the values are checked by the manifest reader, exactly as if they were written in tasks.yaml.
public struct PluginDescription: Sendable, Hashable {
    /// What the plugin calls itself (informational).
    public var name: String?
    /// Task name → its suggested entry, in the plugin's order.
    public var tasks: [(name: String, entry: [JSONMember])]

    /// The keys a plugin may suggest: a task entry's keys, without those that decide how it is run
    /// (`builtin`, `plugin`, `env`, `set_env`, `cwd`: the operator's call, in tasks.yaml).
    public static let suggestible: Set<String> = [
        "queue", "mode", "time_limit", "soft_time_limit", "ignore_result", "track_started", "retries",
        "retry_backoff", "retry_backoff_max", "rate_limit", "burst", "max_concurrency", "unique",
        "grace_period", "max_output_bytes", "processes", "max_inflight", "max_calls", "max_rss_mb",
        "handshake_timeout", "doc", "params", "varargs", "varkwargs", "returns",
    ]
    /// Keys a plugin may not set, with the reason given when one does.
    static let operatorOnly: Set<String> = ["builtin", "plugin", "env", "set_env", "cwd"]

    public static func == (a: PluginDescription, b: PluginDescription) -> Bool {
        a.name == b.name && a.tasks.count == b.tasks.count
            && zip(a.tasks, b.tasks).allSatisfy { $0.name == $1.name && $0.entry == $1.entry }
    }
    public func hash(into h: inout Hasher) {
        h.combine(name)
        for t in tasks { h.combine(t.name); h.combine(t.entry) }
    }

    /// Checks the document's shape; the error says what is wrong, in the plugin author's terms.
    public static func parse(_ document: JSONValue) throws(DescribeError) -> PluginDescription {
        guard let members = document.objectValue else {
            throw DescribeError("the describe answer must be a JSON object, got \(kind(document))")
        }
        if let p = document["protocol"], p.intValue != 1 {
            throw DescribeError("the describe answer speaks protocol \(p), this worker speaks 1")
        }
        var out = PluginDescription(name: document["name"]?.stringValue, tasks: [])
        guard let tasks = document["tasks"] else {
            throw DescribeError("the describe answer has no \"tasks\" object (keys found: \(members.map(\.key).joined(separator: ", ")))")
        }
        guard let list = tasks.objectValue else { throw DescribeError("\"tasks\" must be an object of task name → entry, got \(kind(tasks))") }
        var seen = Set<String>()
        for m in list {
            guard !m.key.isEmpty else { throw DescribeError("a task name in \"tasks\" is empty") }
            guard seen.insert(m.key).inserted else { throw DescribeError("task '\(m.key)' is described twice") }
            guard let entry = m.value.objectValue else {
                throw DescribeError("tasks.\(m.key) must be an object (its queue, params, policy), got \(kind(m.value))")
            }
            for e in entry {
                if operatorOnly.contains(e.key) {
                    throw DescribeError("tasks.\(m.key).\(e.key): a plugin cannot set '\(e.key)' (how a plugin runs is set in tasks.yaml)")
                }
                if !suggestible.contains(e.key) {
                    throw DescribeError("tasks.\(m.key): unknown key '\(e.key)' (allowed: \(suggestible.sorted().joined(separator: ", ")))")
                }
            }
            out.tasks.append((m.key, entry))
        }
        return out
    }

    static func kind(_ v: JSONValue) -> String {
        switch v {
        case .null: return "null"
        case .bool: return "a boolean"
        case .number: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}

/// A describe answer that cannot be used, and why.
public struct DescribeError: Error, Sendable, CustomStringConvertible {
    public var message: String
    /// A time-out: not remembered by the describe cache.
    public var transient: Bool
    public init(_ message: String, transient: Bool = false) {
        self.message = message
        self.transient = transient
    }
    public var description: String { message }
}
