import Foundation
import Yams

/// A workflow declared in tasks.yaml under `workflows:`, by name:
///
///     workflows:
///       report:                      # celerity call report 7
///         chain:
///           - fetch                  # a task by name (gets the args of the call)
///           - chord:
///               header: [{task: parse, times: 3}]   # three parts, each given fetch's result
///               body: merge
///           - {task: publish, args: ["daily"]}
///
/// A step is a task name, a mapping `{task, args, kwargs, immutable, times}`, or one of
/// `{chain: [steps]}`, `{group: [steps]}`, `{chord: {header: [steps], body: step}}`.
/// `times: N` repeats a task N times inside a group or a chord's header.
public indirect enum WorkflowSpec: Sendable, Hashable {
    case task(name: String, args: [JSONValue], kwargs: [JSONMember], immutable: Bool)
    case chain([WorkflowSpec])
    case group([WorkflowSpec])
    case chord(header: [WorkflowSpec], body: WorkflowSpec)

    /// One line for listings: `chain(fetch, chord([parse ×4], merge))`.
    public var summary: String {
        func list(_ items: [WorkflowSpec]) -> String {
            var out: [String] = []
            var i = 0
            while i < items.count {
                var n = 1
                while i + n < items.count && items[i + n] == items[i] { n += 1 }
                out.append(items[i].summary + (n > 1 ? " ×\(n)" : ""))
                i += n
            }
            return out.joined(separator: ", ")
        }
        switch self {
        case let .task(name, args, _, immutable): return name + (args.isEmpty ? "" : "(\(args.map { $0.serialized() }.joined(separator: ", ")))") + (immutable ? " (immutable)" : "")
        case let .chain(steps): return "chain(\(list(steps)))"
        case let .group(members): return "group([\(list(members))])"
        case let .chord(header, body): return "chord([\(list(header))], \(body.summary))"
        }
    }

    /// The canvas a client sends for it.
    public func signature(client: CelerityClient) -> Signature {
        switch self {
        case let .task(name, args, kwargs, immutable): return client.signature(name, args: args, kwargs: kwargs, immutable: immutable)
        case let .chain(steps): return client.chain(steps.map { $0.signature(client: client) })
        case let .group(members): return client.group(members.map { $0.signature(client: client) })
        case let .chord(header, body): return client.chord(header.map { $0.signature(client: client) }, body.signature(client: client))
        }
    }
}

/// Positional argument counts of the built-ins that have a fixed one (for `celerity check`).
let builtinArity: [String: Int] = ["add": 2, "sum": 1, "factorial": 1, "mat_mul": 2, "sleep": 1]

extension ManifestReader {
    func workflows(_ n: Node, tasks: [String: TaskSpec]) throws(ManifestError) -> [String: WorkflowSpec] {
        var out: [String: WorkflowSpec] = [:]
        for (name, kn, value) in try mapping(n, "workflows", allowed: []) {
            if tasks[name] != nil { throw fail(kn, "workflow '\(name)' has the name of a task; give it another") }
            let w = try step(value, "workflow '\(name)'", tasks: tasks, receives: nil)
            out[name] = w
        }
        return out
    }

    /// One step; `receives`: how many arguments it gets before its own (a previous step's
    /// result: 1; the first calls of a workflow get the call's args: 0, not checked).
    func step(_ n: Node, _ what: String, tasks: [String: TaskSpec], receives: Int?) throws(ManifestError) -> WorkflowSpec {
        if case .scalar = n {
            let name = try string(n, what)
            try check(name, args: 0, receives: receives, immutable: false, n, what, tasks: tasks)
            return .task(name: name, args: [], kwargs: [], immutable: false)
        }
        guard case let .mapping(m) = n, let first = m.first else { throw fail(n, "\(what) must be a task name or a mapping (task, chain, group or chord), found \(kind(n))") }
        let key = first.key.string ?? ""
        switch key {
        case "chain", "group":
            let fields = try mapping(n, what, allowed: [key])
            guard case let .sequence(items) = fields[0].2, !items.isEmpty else { throw fail(fields[0].2, "\(what): '\(key)' must be a non-empty list of steps") }
            var steps: [WorkflowSpec] = []
            for (i, item) in items.enumerated() {
                let r: Int? = key == "chain" ? (i == 0 ? receives : 1) : receives
                steps.append(contentsOf: try repeated(item, "\(what), \(key) step \(i + 1)", tasks: tasks, receives: r, allowTimes: key == "group"))
            }
            return key == "chain" ? .chain(steps) : .group(steps)
        case "chord":
            let fields = try mapping(n, what, allowed: ["chord"])
            let parts = try mapping(fields[0].2, "\(what): chord", allowed: ["header", "body"])
            guard let h = parts.first(where: { $0.0 == "header" }), let b = parts.first(where: { $0.0 == "body" }) else {
                throw fail(fields[0].2, "\(what): a chord needs 'header' and 'body'")
            }
            guard case let .sequence(items) = h.2 else { throw fail(h.2, "\(what): chord header must be a list of steps") }
            var header: [WorkflowSpec] = []
            for (i, item) in items.enumerated() {
                header.append(contentsOf: try repeated(item, "\(what), chord header part \(i + 1)", tasks: tasks, receives: receives, allowTimes: true))
            }
            return .chord(header: header, body: try step(b.2, "\(what), chord body", tasks: tasks, receives: 1))
        default:
            return try repeated(n, what, tasks: tasks, receives: receives, allowTimes: false)[0]
        }
    }

    /// A task mapping (`times: N` gives N copies where a list of parallel steps allows it).
    func repeated(_ n: Node, _ what: String, tasks: [String: TaskSpec], receives: Int?, allowTimes: Bool) throws(ManifestError) -> [WorkflowSpec] {
        guard case .mapping = n, let k = n.mapping?.first?.key.string, k == "task" || k == "args" || k == "kwargs" || k == "immutable" || k == "times" else {
            return [try step(n, what, tasks: tasks, receives: receives)]
        }
        var name: String?, args: [JSONValue] = [], kwargs: [JSONMember] = [], immutable = false, times = 1
        for (key, _, v) in try mapping(n, what, allowed: ["task", "args", "kwargs", "immutable", "times"]) {
            switch key {
            case "task": name = try string(v, "\(what).task")
            case "args":
                guard case let .sequence(items) = v else { throw fail(v, "\(what).args must be a list, found \(kind(v))") }
                args = items.map(json)
            case "kwargs":
                guard case let .object(o) = json(v) else { throw fail(v, "\(what).kwargs must be a mapping, found \(kind(v))") }
                kwargs = o
            case "immutable": immutable = try bool(v, "\(what).immutable")
            default:
                guard allowTimes else { throw fail(v, "\(what): 'times' repeats a step only inside a group or a chord's header") }
                times = try integer(v, "\(what).times", min: 1)
            }
        }
        guard let name else { throw fail(n, "\(what) has no 'task'") }
        try check(name, args: args.count, receives: receives, immutable: immutable, n, what, tasks: tasks)
        return Array(repeating: .task(name: name, args: args, kwargs: kwargs, immutable: immutable), count: times)
    }

    /// The task exists (in `tasks:` or as a Celery canvas task), and a built-in with a fixed
    /// number of arguments gets that many.
    func check(_ name: String, args: Int, receives: Int?, immutable: Bool, _ n: Node, _ what: String, tasks: [String: TaskSpec]) throws(ManifestError) {
        guard let spec = tasks[name] else {
            if undescribedTasks { return }
            throw fail(n, "\(what) names unknown task '\(name)' (not under tasks:)")
        }
        guard case let .builtin(b) = spec.handler, let arity = builtinArity[b], let receives else { return }
        let given = args + (immutable ? 0 : receives)
        if given != arity {
            throw fail(n, "\(what): '\(name)' (built-in \(b)) takes \(arity) argument\(arity == 1 ? "" : "s"), here it would get \(given)"
                       + (receives > 0 && !immutable ? " (\(receives) from the step before it)" : ""))
        }
    }

    /// A YAML value as JSON (ints, floats, booleans, null, strings, lists, mappings).
    func json(_ n: Node) -> JSONValue {
        switch n {
        case let .scalar(s):
            if s.style == .plain {
                if n.null != nil { return .null }
                if let b = n.bool { return .bool(b) }
                if n.int != nil { return .number(s.string) }
                if let d = n.float { return .double(d) }
            }
            return .string(s.string)
        case let .sequence(items): return .array(items.map(json))
        case let .mapping(m): return .object(m.map { JSONMember($0.key.string ?? "", json($0.value)) })
        case .alias: return .null
        }
    }
}
