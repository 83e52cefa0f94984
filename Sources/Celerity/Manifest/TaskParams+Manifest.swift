import Yams

// Argument schemas in tasks.yaml: `params:`, `varargs:`, `varkwargs:` and `doc:` on a task
// entry (TaskParams.swift), and the schemas built-ins declare for themselves.

extension ManifestReader {
    /// Reads a task's `params`/`varargs`/`varkwargs`/`doc` keys into `t`.
    /// `params: null` declares "no schema" (a built-in's own is then off too).
    func argumentSchema(_ t: inout TaskSpec, _ keys: [(String, Node)]) throws(ManifestError) {
        guard !keys.isEmpty else { return }
        var nodes: [String: Node] = [:]
        for (k, v) in keys { nodes[k] = v }
        if let d = nodes["doc"] { t.doc = try string(d, "\(t.name).doc") }
        let hasSchemaKey = nodes["params"] != nil || nodes["varargs"] != nil || nodes["varkwargs"] != nil
        guard hasSchemaKey else { return }
        t.paramsDeclared = true
        let params = try nodes["params"].map { n throws(ManifestError) in try json(n, "\(t.name).params") }
        if params?.isNull == true {
            if let extra = nodes["varargs"] ?? nodes["varkwargs"] {
                throw fail(extra, "\(t.name): 'varargs'/'varkwargs' need a schema, but 'params: null' turns it off; remove one or the other")
            }
            t.params = nil
            return
        }
        let at = nodes["params"] ?? nodes["varargs"] ?? nodes["varkwargs"]!
        let varargs = try nodes["varargs"].map { n throws(ManifestError) in try json(n, "\(t.name).varargs") }
        let varkwargs = try nodes["varkwargs"].map { n throws(ManifestError) in try json(n, "\(t.name).varkwargs") }
        // `returns` documents the result (`celerity describe`); it is not checked.
        let returns = try nodes["returns"].map { n throws(ManifestError) in try json(n, "\(t.name).returns") }
        do throws(SchemaError) {
            t.params = try TaskParams.parse(params ?? .object([]), varargs: varargs, varkwargs: varkwargs, returns: returns, doc: t.doc, task: t.name, prefix: "\(t.name).")
        } catch {
            throw fail(at, error.message)
        }
    }

    /// A YAML node as JSON: mappings keep their order; plain scalars that read as JSON
    /// numbers keep their exact text (big integers too); quoted scalars are strings.
    func json(_ n: Node, _ what: String) throws(ManifestError) -> JSONValue {
        switch n {
        case let .scalar(s):
            guard s.style == .plain else { return .string(s.string) }
            if n.null != nil { return .null }
            if let b = n.bool { return .bool(b) }
            if let v = try? JSONValue(parsing: s.string), case .number = v { return v }
            if let i = n.int { return .int(i) }
            if let d = n.float { return .double(d) }
            return .string(s.string)
        case let .sequence(seq):
            var out: [JSONValue] = []
            for (i, item) in seq.enumerated() { out.append(try json(item, "\(what)[\(i)]")) }
            return .array(out)
        case .mapping:
            var out: [JSONMember] = []
            for (k, _, v) in try mapping(n, what, allowed: []) { out.append(JSONMember(k, try json(v, "\(what).\(k)"))) }
            return .object(out)
        case .alias:
            throw fail(n, "\(what): YAML aliases are not supported here")
        }
    }
}

extension Manifest {
    /// The manifest with each built-in task's declared schema (`BuiltinRegistry.params`),
    /// unless its tasks.yaml entry gives `params:` itself (`params: null` turns it off).
    public func withBuiltinSchemas(_ registry: BuiltinRegistry) -> Manifest {
        var m = self
        for (name, spec) in tasks {
            guard case let .builtin(b) = spec.handler, !spec.paramsDeclared, spec.params == nil, var p = registry.params[b] else { continue }
            p.taskName = name
            if p.doc == nil { p.doc = spec.doc }
            m.tasks[name]?.params = p
            if spec.doc == nil { m.tasks[name]?.doc = registry.params[b]?.doc }
        }
        return m
    }
}
