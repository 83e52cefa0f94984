// TaskParams: a task's argument schema (`params:` in tasks.yaml or in a plugin's
// `describe`), with Python's binding rules.
//
// `params` is an ordered mapping of parameter name to schema (JSONSchema.swift). A call binds
// like a Python function call: positional args to the params in order, kwargs by name;
// extra positional args only with `varargs` (*args), unknown kwargs only with `varkwargs`
// (**kwargs); a parameter with a `default` may be left out. Then each bound value is checked
// against its schema. Binding errors read as Python's TypeError; value errors name the path
// of the bad value from the parameter down (`rows[2][0]`, `user.name`, `args[3]`, `kwargs.z`).
//
// The same check as one JSON Schema: the kwargs object after binding, validated against
// {"type":"object","properties":<params>,"required":[params without default],"additionalProperties":false}
// (`jsonSchema`).

/// What is wrong with a call's arguments: `message` reads as a Python TypeError
/// ("add() missing 1 required argument: 'y'", "greet: argument times: expected integer,
/// got string \"x\""); `path` names the bad value (nil for a binding error of the call as a whole).
public struct ArgumentProblem: Sendable, Hashable, CustomStringConvertible {
    public var message: String
    public var path: String?
    public init(message: String, path: String?) {
        self.message = message
        self.path = path
    }
    public var description: String { message }
    /// The worker's FAILURE for it (exc_type TypeError, as for arity errors).
    public var failure: TaskFailure { .badArguments(message) }
}

public struct TaskParams: Sendable, Hashable {
    public struct Param: Sendable, Hashable {
        public var name: String
        public var schema: JSONSchema
        /// Whether a call may leave it out (it has a `default`).
        public var isOptional: Bool { schema.defaultValue != nil }
    }

    /// In declaration order (the order positional arguments bind in).
    public private(set) var params: [Param]
    /// Extra positional arguments (Python's *args), each checked against this; nil: none allowed.
    public var varargs: JSONSchema?
    /// Extra keyword arguments (Python's **kwargs), each checked against this; nil: none allowed.
    public var varkwargs: JSONSchema?
    /// What the task returns (documentation only).
    public var returns: JSONSchema?
    /// The first paragraph of the task's documentation.
    public var doc: String?
    /// The task's name, for `usage` (set by whoever read the schema for a task).
    public var taskName: String = ""
    /// Parameters that must be given (no default), precomputed.
    private var requiredCount: Int
    /// Whether any schema constrains anything (else binding is all there is to check).
    private var checksValues: Bool

    public init(params: [Param] = [], varargs: JSONSchema? = nil, varkwargs: JSONSchema? = nil, returns: JSONSchema? = nil, doc: String? = nil) {
        self.params = params
        self.varargs = varargs
        self.varkwargs = varkwargs
        self.returns = returns
        self.doc = doc
        requiredCount = params.filter { !$0.isOptional }.count
        checksValues = params.contains { !$0.schema.isUnconstrained } || !(varargs?.isUnconstrained ?? true) || !(varkwargs?.isUnconstrained ?? true)
    }

    /// Reads a task's schema. `params`: the mapping of parameter names to schemas (ordered);
    /// `varargs`/`varkwargs`: true (anything), false or nil (none), or a schema for each extra
    /// argument; `returns`: a schema (documentation). `prefix` is put before the keyword path
    /// in errors ("plugins.greet." gives "plugins.greet.params.times.minimum must be a number").
    public static func parse(_ params: JSONValue, varargs: JSONValue? = nil, varkwargs: JSONValue? = nil, returns: JSONValue? = nil,
                             doc: String? = nil, task: String = "", prefix: String = "") throws(SchemaError) -> TaskParams {
        guard case let .object(members) = params else {
            throw SchemaError("\(prefix)params must be a mapping of parameter names to schemas (e.g. {x: integer, y: {type: integer, default: 1}}), found \(JSONSchema.describe(params))")
        }
        var list: [Param] = []
        var seen = Set<String>()
        for m in members {
            guard !m.key.isEmpty else { throw SchemaError("\(prefix)params: a parameter name must not be empty") }
            guard seen.insert(m.key).inserted else { throw SchemaError("\(prefix)params: duplicate parameter '\(m.key)'") }
            list.append(Param(name: m.key, schema: try JSONSchema.parse(m.value, path: "\(prefix)params.\(m.key)")))
        }
        func extra(_ v: JSONValue?, _ key: String) throws(SchemaError) -> JSONSchema? {
            guard let v, !v.isNull else { return nil }
            if case .bool(false) = v { return nil }
            return try JSONSchema.parse(v, path: "\(prefix)\(key)")
        }
        var p = TaskParams(params: list, varargs: try extra(varargs, "varargs"), varkwargs: try extra(varkwargs, "varkwargs"),
                           returns: try extra(returns, "returns"), doc: doc)
        p.taskName = task
        return p
    }

    /// Binds a call's arguments as Python would, then checks each value: the first problem,
    /// or nil when the call is good.
    public func validate(task: String, args: [JSONValue], kwargs: [JSONMember]) -> ArgumentProblem? {
        let count = params.count
        // Too many positional arguments.
        if args.count > count && varargs == nil {
            let takes: String
            if requiredCount < count {
                takes = "from \(requiredCount) to \(count) positional arguments"
            } else {
                takes = "\(count) positional argument\(count == 1 ? "" : "s")"
            }
            return ArgumentProblem(message: "\(task)() takes \(takes) but \(args.count) \(args.count == 1 ? "was" : "were") given", path: nil)
        }
        // Keyword arguments: known names not given positionally too, else **kwargs.
        var keywordIndex: [Int]? = nil   // kwargs[k] binds params[keywordIndex[k]] (-1: **kwargs); built only if kwargs
        if !kwargs.isEmpty {
            var idx: [Int] = []
            idx.reserveCapacity(kwargs.count)
            for kw in kwargs {
                if let i = params.firstIndex(where: { $0.name == kw.key }) {
                    if i < args.count { return ArgumentProblem(message: "\(task)() got multiple values for argument '\(kw.key)'", path: kw.key) }
                    idx.append(i)
                } else if varkwargs != nil {
                    idx.append(-1)
                } else {
                    return ArgumentProblem(message: "\(task)() got an unexpected keyword argument '\(kw.key)'", path: kw.key)
                }
            }
            keywordIndex = idx
        }
        // Missing required parameters.
        if args.count < count {
            var missing: [String] = []
            for i in args.count..<count where !params[i].isOptional {
                if !(keywordIndex?.contains(i) ?? false) { missing.append(params[i].name) }
            }
            if !missing.isEmpty {
                return ArgumentProblem(message: "\(task)() missing \(missing.count) required argument\(missing.count == 1 ? "" : "s"): \(missing.map { "'\($0)'" }.joined(separator: ", "))",
                                       path: missing.count == 1 ? missing[0] : nil)
            }
        }
        guard checksValues else { return nil }
        // Values.
        for (i, a) in args.enumerated() {
            if i < count {
                if let p = params[i].schema.problem(a) { return problem(task, root: params[i].name, p) }
            } else if let v = varargs, let p = v.problem(a) {
                return problem(task, root: "args[\(i)]", p)
            }
        }
        if let keywordIndex {
            for (k, kw) in kwargs.enumerated() {
                let i = keywordIndex[k]
                if i >= 0 {
                    if let p = params[i].schema.problem(kw.value) { return problem(task, root: kw.key, p) }
                } else if let v = varkwargs, let p = v.problem(kw.value) {
                    return problem(task, root: "kwargs" + Self.step(.key(kw.key)), p)
                }
            }
        }
        return nil
    }

    private func problem(_ task: String, root: String, _ p: (steps: [JSONSchema.Step], message: String)) -> ArgumentProblem {
        var path = root
        for s in p.steps.reversed() { path += Self.step(s) }
        return ArgumentProblem(message: "\(task): argument \(path): \(p.message)", path: path)
    }

    static func step(_ s: JSONSchema.Step) -> String {
        switch s {
        case let .index(i): return "[\(i)]"
        case let .key(k):
            let plain = !k.isEmpty && k.unicodeScalars.allSatisfy { ($0.properties.isAlphabetic || $0.properties.numericType != nil || $0 == "_" || $0 == "-") }
            return plain ? ".\(k)" : "[\(JSONValue.string(k).serialized())]"
        }
    }

    /// How to call it, e.g. `greet(name: string, times: integer = 1, *args: number, **kwargs)`.
    public var usage: String { usage(task: taskName.isEmpty ? "task" : taskName) }

    public func usage(task: String) -> String {
        var parts = params.map { p in
            "\(p.name): \(p.schema.shortType)" + (p.schema.defaultValue.map { " = \(String($0.serialized().prefix(40)))" } ?? "")
        }
        if let v = varargs { parts.append("*args" + (v.isUnconstrained ? "" : ": \(v.shortType)")) }
        if let v = varkwargs { parts.append("**kwargs" + (v.isUnconstrained ? "" : ": \(v.shortType)")) }
        return "\(task)(\(parts.joined(separator: ", ")))"
    }

    /// The equivalent JSON Schema of the call's kwargs after binding (documented in
    /// docs/plugins.md).
    public var jsonSchema: JSONValue {
        var members: [JSONMember] = [JSONMember("type", "object"),
                                     JSONMember("properties", .object(params.map { JSONMember($0.name, $0.schema.json) })),
                                     JSONMember("required", .array(params.filter { !$0.isOptional }.map { .string($0.name) }))]
        members.append(JSONMember("additionalProperties", varkwargs.map { $0.isUnconstrained ? .bool(true) : $0.json } ?? .bool(false)))
        return .object(members)
    }

    /// The form read by `parse` (for `describe --json`).
    public var json: JSONValue {
        var members: [JSONMember] = []
        if let doc { members.append(JSONMember("doc", .string(doc))) }
        members.append(JSONMember("params", .object(params.map { JSONMember($0.name, $0.schema.json) })))
        if let v = varargs { members.append(JSONMember("varargs", v.isUnconstrained ? .bool(true) : v.json)) }
        if let v = varkwargs { members.append(JSONMember("varkwargs", v.isUnconstrained ? .bool(true) : v.json)) }
        if let r = returns { members.append(JSONMember("returns", r.json)) }
        return .object(members)
    }
}

extension JSONSchema {
    /// True when it accepts every value (no constraint at all).
    public var isUnconstrained: Bool {
        !acceptsNothing && types == nil && enumValues == nil && constValue == nil && minimum == nil && maximum == nil
            && exclusiveMinimum == nil && exclusiveMaximum == nil && minLength == nil && maxLength == nil && pattern == nil
            && items == nil && minItems == nil && maxItems == nil && properties.isEmpty && required.isEmpty && additionalProperties == .allowed
    }
}
