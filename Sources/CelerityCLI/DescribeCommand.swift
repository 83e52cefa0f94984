import ArgumentParser
import Celerity
import Foundation

struct DescribeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "describe",
        abstract: "Show a task: how to call it (its argument schema), its queue, handler, policy and where it came from.",
        discussion: """
        Reads the manifest only (no Redis). Origin: "tasks.yaml", "discovered in <file>" (plugin_dirs),
        or "built-in" (Celery's canvas tasks). --json prints the same as one JSON object, with the schema
        both in the form tasks.yaml takes ("params") and as the equivalent JSON Schema of the bound
        kwargs ("json_schema"). Exit status 0; 2 for an unknown task (close names are suggested) or a bad manifest.
        Example: celerity describe add_module.tasks.add
        """
    )

    @Argument(help: "The task name.")
    var task: String

    @Flag(name: .long, help: "Print JSON.")
    var json = false

    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        let manifest: Manifest?
        do { manifest = try await connection.loadManifest(required: false) } catch { throw badInput(error) }
        if ["celery.map", "celery.starmap"].contains(task) {
            let doc = task == "celery.map" ? "Celery's task.map(it): calls the named task once per item, in order." : "Celery's task.starmap(it) (and task.chunks): calls the named task with each item's arguments."
            if json {
                print(JSONValue.object([JSONMember("name", .string(task)), JSONMember("origin", "built-in"), JSONMember("doc", .string(doc)),
                                        JSONMember("usage", .string("\(task)(task: object, it: array)"))]).serialized())
            } else {
                print("\(task)\n  \(doc)\nusage:   \(task)(task: object, it: array)\norigin:  built-in (runs on any worker serving the named task)")
            }
            return
        }
        guard let manifest, let spec = manifest.tasks[task] else { throw Self.unknownTask(task, in: manifest) }
        print(json ? Self.json(spec).serialized() : Self.text(spec), terminator: json ? "\n" : "")
    }

    /// Exit 2 for a task the manifest does not name, with the closest names it does.
    static func unknownTask(_ task: String, in manifest: Manifest?) -> ExitCode {
        guard let manifest else { return fail("unknown task '\(task)': no manifest (pass --manifest FILE, set CELERITY_MANIFEST, or run where tasks.yaml is)", .badInput) }
        let names = manifest.taskOrder + manifest.workflows.keys.sorted()
        // Also by the last dotted part: "add" finds "add_module.tasks.add".
        var close = JSONSchema.closeNames(task, among: names)
        for n in names where !close.contains(n) && n.split(separator: ".").last.map(String.init) == task { close.append(n) }
        let hint = close.isEmpty ? " (tasks: \(names.prefix(12).joined(separator: ", "))\(names.count > 12 ? ", …" : ""))" : " (did you mean \(close.prefix(5).map { "'\($0)'" }.joined(separator: ", "))?)"
        return fail("unknown task '\(task)' in \(manifest.path ?? "the manifest")\(hint)", .badInput)
    }

    static func origin(_ spec: TaskSpec) -> String {
        if let file = spec.discoveredFrom { return "discovered in \(file)" }
        return "tasks.yaml"
    }

    static func handler(_ spec: TaskSpec) -> String {
        switch spec.handler {
        case let .builtin(b): return "built-in \(b)"
        case let .plugin(p):
            switch p.mode {
            case .oneshot: return "plugin \(p.argv.joined(separator: " ")) (one-shot)"
            case .persistent: return "plugin \(p.argv.joined(separator: " ")) (persistent)"
            }
        }
    }

    /// Where the schema came from, in words.
    static func schemaSource(_ spec: TaskSpec) -> String {
        guard spec.params != nil else { return spec.paramsDeclared ? "none (params: null in tasks.yaml): any arguments" : "none: any arguments" }
        if case let .builtin(b) = spec.handler, !spec.paramsDeclared { return "declared by the built-in \(b)" }
        if spec.discoveredFrom != nil && !spec.paramsDeclared { return "from the plugin's describe" }
        return spec.discoveredFrom != nil ? "tasks.yaml (overrides the plugin's)" : "tasks.yaml"
    }

    /// The policy keys that apply, as tasks.yaml names them, with their values.
    static func policy(_ spec: TaskSpec) -> [(String, JSONValue)] {
        var out: [(String, JSONValue)] = []
        out.append(("time_limit", spec.timeLimit.map(JSONValue.double) ?? .null))
        if let s = spec.softTimeLimit { out.append(("soft_time_limit", .double(s))) }
        out.append(("ignore_result", .bool(!spec.storeResult)))
        if spec.trackStarted { out.append(("track_started", true)) }
        out.append(("retries", .int(spec.retries)))
        if spec.retries > 0 {
            out.append(("retry_backoff", .double(spec.retryBackoff)))
            out.append(("retry_backoff_max", .double(spec.retryBackoffMax)))
        }
        if let r = spec.rateLimit {
            out.append(("rate_limit", .string(r.text)))
            out.append(("burst", .int(r.burst)))
        }
        if let c = spec.maxConcurrency { out.append(("max_concurrency", .int(c))) }
        if let u = spec.unique { out.append(("unique", .string(u.description))) }
        if case let .plugin(p) = spec.handler {
            out.append(("grace_period", .double(p.gracePeriod)))
            out.append(("max_output_bytes", .int(p.maxOutputBytes)))
            if case let .persistent(o) = p.mode {
                out.append(("processes", .int(o.processes)))
                if let m = o.maxInflight { out.append(("max_inflight", .int(m))) }
                if let m = o.maxCalls { out.append(("max_calls", .int(m))) }
                if let m = o.maxRSSBytes { out.append(("max_rss_mb", .int(m >> 20))) }
                out.append(("handshake_timeout", .double(o.handshakeTimeout)))
            }
            if !p.environment.isEmpty { out.append(("env", .array(p.environment.map(JSONValue.string)))) }
            if !p.setEnvironment.isEmpty { out.append(("set_env", .array(p.setEnvironment.keys.sorted().map(JSONValue.string)))) }
        }
        return out
    }

    static func json(_ spec: TaskSpec) -> JSONValue {
        var m: [JSONMember] = [JSONMember("name", .string(spec.name)), JSONMember("queue", .string(spec.queue))]
        switch spec.handler {
        case let .builtin(b): m.append(JSONMember("handler", .object([JSONMember("builtin", .string(b))])))
        case let .plugin(p):
            let mode: String
            if case .persistent = p.mode { mode = "persistent" } else { mode = "oneshot" }
            m.append(JSONMember("handler", .object([JSONMember("plugin", .array(p.argv.map(JSONValue.string))), JSONMember("mode", .string(mode))])))
        }
        m.append(JSONMember("origin", .string(origin(spec))))
        if let f = spec.discoveredFrom { m.append(JSONMember("discovered_from", .string(f))) }
        if let d = spec.doc ?? spec.params?.doc { m.append(JSONMember("doc", .string(d))) }
        if let p = spec.params {
            m.append(JSONMember("usage", .string(p.usage(task: spec.name))))
            m.append(JSONMember("params", p.json["params"] ?? .object([])))
            if let v = p.json["varargs"] { m.append(JSONMember("varargs", v)) }
            if let v = p.json["varkwargs"] { m.append(JSONMember("varkwargs", v)) }
            if let v = p.json["returns"] { m.append(JSONMember("returns", v)) }
            m.append(JSONMember("json_schema", p.jsonSchema))
        } else {
            m.append(JSONMember("usage", .string("\(spec.name)(*args, **kwargs)")))
            m.append(JSONMember("params", .null))
        }
        m.append(JSONMember("schema_source", .string(schemaSource(spec))))
        m.append(JSONMember("policy", .object(policy(spec).map { JSONMember($0.0, $0.1) })))
        return .object(m)
    }

    static func text(_ spec: TaskSpec) -> String {
        var out = "\(spec.name)\n"
        if let d = spec.doc ?? spec.params?.doc { out += "  \(d)\n" }
        out += "usage:   \(spec.params?.usage(task: spec.name) ?? "\(spec.name)(*args, **kwargs)")\n"
        out += "queue:   \(spec.queue)\n"
        out += "handler: \(handler(spec))\n"
        out += "origin:  \(origin(spec))\n"
        out += "schema:  \(schemaSource(spec))\n"
        out += paramLines(spec)
        out += "policy:\n"
        for (k, v) in policy(spec) { out += "  \(k): \(v.isNull ? "none" : v.stringValue ?? v.serialized())\n" }
        return out
    }

    /// Each parameter with its schema (JSON), for `describe` and `call --help-task`.
    static func paramLines(_ spec: TaskSpec) -> String {
        guard let p = spec.params else { return "" }
        var out = "params:\n"
        if p.params.isEmpty && p.varargs == nil && p.varkwargs == nil { out += "  (none: the task takes no arguments)\n" }
        let width = min((p.params.map(\.name.count) + [p.varargs != nil ? 5 : 0, p.varkwargs != nil ? 8 : 0]).max() ?? 0, 24)
        func pad(_ s: String) -> String { s.count >= width ? s : s + String(repeating: " ", count: width - s.count) }
        for param in p.params {
            out += "  \(pad(param.name))  \(param.schema.json.serialized())\(param.isOptional ? "" : "  (required)")\n"
        }
        if let v = p.varargs { out += "  \(pad("*args"))  \(v.isUnconstrained ? "any extra positional arguments" : "each extra positional argument: \(v.json.serialized())")\n" }
        if let v = p.varkwargs { out += "  \(pad("**kwargs"))  \(v.isUnconstrained ? "any extra keyword arguments" : "each extra keyword argument: \(v.json.serialized())")\n" }
        if let r = p.returns { out += "returns: \(r.json.serialized())\n" }
        return out
    }

    /// `celerity call --help-task TASK`.
    static func callHelp(_ spec: TaskSpec) -> String {
        var out = "usage: celerity call \(spec.name)"
        if let p = spec.params {
            for param in p.params { out += param.isOptional ? " [\(param.name)]" : " \(param.name)" }
            if p.varargs != nil { out += " [args…]" }
            if !p.params.isEmpty || p.varkwargs != nil { out += " [--kwargs JSON]" }
        } else {
            out += " [args…] [--kwargs JSON]"
        }
        out += "\n  \(spec.params?.usage(task: spec.name) ?? "\(spec.name)(*args, **kwargs): no schema, any arguments")\n"
        if let d = spec.doc ?? spec.params?.doc { out += "  \(d)\n" }
        out += paramLines(spec)
        out += "queue: \(spec.queue)\n"
        return out
    }
}
