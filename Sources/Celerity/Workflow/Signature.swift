import Foundation

/// A Celery signature as it travels in a message's `embed` (`callbacks`, `errbacks`, `chain`,
/// `chord`) and in canvas options: `{"task", "args", "kwargs", "options", "subtask_type",
/// "immutable"}` (celery/canvas.py `Signature`). Unknown members are kept, so a signature
/// read and written again is what Python sent.
public struct Signature: Sendable, Equatable {
    public var task: String
    public var args: [JSONValue]
    public var kwargs: [JSONMember]
    /// apply_async options: `task_id` (the id its message will carry), `reply_to`, `queue`,
    /// `group_id`, `group_index`, `link`, `link_error`, `chain`, `priority`, ...
    public var options: [JSONMember]
    /// nil for a task; "chain", "group", "chord", "chunks", "xmap", "xstarmap" for canvases.
    public var subtaskType: String?
    /// `.si()`: the parent's result is not prepended to its args.
    public var immutable: Bool

    public init(task: String, args: [JSONValue] = [], kwargs: [JSONMember] = [], options: [JSONMember] = [],
                subtaskType: String? = nil, immutable: Bool = false) {
        self.task = task
        self.args = args
        self.kwargs = kwargs
        self.options = options
        self.subtaskType = subtaskType
        self.immutable = immutable
    }

    /// Reads a signature dict; nil (with `why`) when it is not one.
    public init(json: JSONValue) throws(WorkflowError) {
        guard case let .object(members) = json else { throw WorkflowError("a signature must be an object, got \(json.serialized().prefix(80))") }
        let get = { (k: String) in members.first { $0.key == k }?.value }
        guard let task = get("task")?.stringValue else { throw WorkflowError("a signature has no 'task' name: \(json.serialized().prefix(120))") }
        self.task = task
        args = get("args")?.arrayValue ?? []
        kwargs = get("kwargs")?.objectValue ?? []
        options = get("options")?.objectValue ?? []
        subtaskType = get("subtask_type")?.stringValue
        immutable = get("immutable")?.boolValue ?? false
    }

    public var json: JSONValue {
        .object([
            JSONMember("task", .string(task)), JSONMember("args", .array(args)), JSONMember("kwargs", .object(kwargs)),
            JSONMember("options", .object(options)), JSONMember("subtask_type", subtaskType.map { .string($0) } ?? .null),
            JSONMember("immutable", .bool(immutable)),
        ])
    }

    public func option(_ key: String) -> JSONValue? {
        guard let v = options.first(where: { $0.key == key })?.value, !v.isNull else { return nil }
        return v
    }

    public mutating func setOption(_ key: String, _ value: JSONValue?) {
        options.removeAll { $0.key == key }
        if let value { options.append(JSONMember(key, value)) }
    }

    public func kwarg(_ key: String) -> JSONValue? {
        guard let v = kwargs.first(where: { $0.key == key })?.value, !v.isNull else { return nil }
        return v
    }

    /// The id its message will carry (frozen by the client into `options.task_id`).
    public var taskID: String? { option("task_id")?.stringValue }

    /// Signatures in a list value (`link`, `link_error`, `chain`, a group's `tasks`); a lone
    /// signature dict counts as a list of one.
    static func list(_ v: JSONValue?) throws(WorkflowError) -> [Signature] {
        guard let v, !v.isNull else { return [] }
        if case .object = v { return [try Signature(json: v)] }
        guard let items = v.arrayValue else { throw WorkflowError("expected a list of signatures, got \(v.serialized().prefix(80))") }
        var out: [Signature] = []
        for item in items { out.append(try Signature(json: item)) }
        return out
    }
}

/// A canvas that cannot be carried out as sent (its error names what and where).
public struct WorkflowError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// What a message's `embed` asks of the worker once the task is done.
struct Embed: Sendable {
    /// `link`: applied with the result on success.
    var callbacks: [Signature] = []
    /// `link_error`: applied with the failed task's id on failure.
    var errbacks: [Signature] = []
    /// What remains of its chain, last step first (Celery sends it reversed).
    var chain: [Signature] = []
    /// Set when the task is a part of a chord's header: the chord's body.
    var chord: Signature?

    var isEmpty: Bool { callbacks.isEmpty && errbacks.isEmpty && chain.isEmpty && chord == nil }

    init() {}

    /// Reads `embed`; a message without one (or with nulls) has an empty `Embed`.
    init(_ embed: JSONValue) throws(WorkflowError) {
        guard case let .object(members) = embed else { return }
        for m in members where !m.value.isNull {
            switch m.key {
            case "callbacks": callbacks = try Signature.list(m.value)
            case "errbacks": errbacks = try Signature.list(m.value)
            case "chain": chain = try Signature.list(m.value)
            case "chord": chord = try Signature(json: m.value)
            default: break
            }
        }
    }

    /// Whether `embed` asks for anything, without building signatures (the hot path's test:
    /// a plain message has `{"callbacks": null, "errbacks": null, "chain": null, "chord": null}`
    /// or an empty chain).
    static func isPlain(_ embed: JSONValue) -> Bool {
        guard case let .object(members) = embed else { return true }
        for m in members {
            switch m.value {
            case .null: continue
            case let .array(a) where a.isEmpty: continue
            default: if m.key == "callbacks" || m.key == "errbacks" || m.key == "chain" || m.key == "chord" { return false }
            }
        }
        return true
    }
}
