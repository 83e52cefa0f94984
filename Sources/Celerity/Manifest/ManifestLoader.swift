import Foundation
import Yams

extension Manifest {
    /// Reads and validates a tasks.yaml file.
    ///
    /// Every error names `file:line:column` and what is wrong: YAML syntax, unknown keys,
    /// wrong types, missing fields, unknown built-ins (when `builtins` is given), plugins
    /// that are missing or not executable.
    /// With `discover` (the default), the plugins of `plugin_dirs` are run to describe themselves
    /// (answers cached by file identity, see docs/plugins.md).
    ///
    /// `checkPrograms: false` reads the manifest for looking at a cluster, not for running
    /// tasks (the dashboard): plugin programs, their scripts, `cwd` folders and `plugin_dirs`
    /// folders need not exist on this machine, and the plugins are never started (no
    /// discovery, whatever `discover` says). Syntax, types, keys, schedules and workflows are
    /// checked as always. Without discovery a task may rely on `plugin_dirs` for its handler, or
    /// exist only there: such a task keeps what tasks.yaml says of it, with a plugin handler
    /// whose `argv` is empty (left out when tasks.yaml gives it no queue: the plugin's is not
    /// known), and schedules and workflows may name tasks not in `tasks:`.
    /// A plugin's `executable` is its program resolved when found here, else as written.
    public static func load(path: String, builtins: Set<String>? = nil, discover: Bool = true,
                            checkPrograms: Bool = true) throws(ManifestError) -> Manifest {
        let url = URL(fileURLWithPath: path)
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw ManifestError(nil, "cannot read manifest '\(path)' (no such file or not readable)")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ManifestError(path, "manifest is not UTF-8 text")
        }
        return try parse(text, path: path, baseDirectory: url.deletingLastPathComponent().path, builtins: builtins, discover: discover,
                         checkPrograms: checkPrograms)
    }

    /// Parses manifest text; `path` is only used in error locations. `discover`, `checkPrograms`:
    /// as for `load`.
    public static func parse(_ text: String, path: String = "tasks.yaml", baseDirectory: String, builtins: Set<String>? = nil,
                             discover: Bool = true, checkPrograms: Bool = true) throws(ManifestError) -> Manifest {
        let root: Node?
        do { root = try Yams.compose(yaml: text) } catch let e as YamlError {
            throw ManifestError(yamlLocation(path, e), "YAML syntax: \(yamlProblem(e))")
        } catch {
            throw ManifestError(path, "YAML: \(error)")
        }
        guard let root else { throw ManifestError(path, "manifest is empty") }
        var r = ManifestReader(path: path)
        r.discover = discover && checkPrograms
        r.checkFiles = checkPrograms
        return try r.manifest(root, baseDirectory: baseDirectory, builtins: builtins)
    }

    private static func yamlLocation(_ path: String, _ e: YamlError) -> String {
        switch e {
        case let .scanner(_, _, mark, _), let .parser(_, _, mark, _), let .composer(_, _, mark, _):
            return "\(path):\(mark.line):\(mark.column)"
        case let .duplicatedKeysInMapping(_, context):
            return "\(path):\(context.mark.line):\(context.mark.column)"
        default: return path
        }
    }
    private static func yamlProblem(_ e: YamlError) -> String {
        switch e {
        case let .scanner(ctx, problem, _, _), let .parser(ctx, problem, _, _), let .composer(ctx, problem, _, _):
            return ctx.map { "\(problem) (\($0.text))" } ?? problem
        case let .duplicatedKeysInMapping(dups, _):
            return "duplicate key\(dups.count == 1 ? "" : "s") \(dups.sorted().map { "'\($0)'" }.joined(separator: ", ")) in a mapping"
        default: return "\(e)"
        }
    }
}

/// Walks the composed YAML node tree so every error can point at the node's mark.
/// (Decodable would only give a coding path, and it silently ignores unknown keys.)
struct ManifestReader {
    let path: String
    /// Whether the plugins of `plugin_dirs` are asked to describe themselves.
    var discover = true
    /// Whether plugin programs, scripts, `cwd` and `plugin_dirs` folders must exist here
    /// (`Manifest.load(checkPrograms:)`). Without, tasks left to `plugin_dirs` are tolerated.
    var checkFiles = true
    /// Set while reading a manifest with `plugin_dirs` that are not asked (`checkFiles`
    /// false): schedules and workflows may name tasks only a plugin there describes.
    var undescribedTasks = false

    func loc(_ n: Node) -> String {
        n.mark.map { "\(path):\($0.line):\($0.column)" } ?? path
    }
    func fail(_ n: Node, _ message: String) -> ManifestError { ManifestError(loc(n), message) }

    func mapping(_ n: Node, _ what: String, allowed: Set<String>) throws(ManifestError) -> [(String, Node, Node)] {
        guard case let .mapping(m) = n else { throw fail(n, "\(what) must be a mapping, found \(kind(n))") }
        var out: [(String, Node, Node)] = []
        var seen = Set<String>()
        for (k, v) in m {
            guard case let .scalar(s) = k else { throw fail(k, "keys of \(what) must be plain strings") }
            if !allowed.isEmpty && !allowed.contains(s.string) {
                throw fail(k, "unknown key '\(s.string)' in \(what) (allowed: \(allowed.sorted().joined(separator: ", ")))")
            }
            guard seen.insert(s.string).inserted else { throw fail(k, "duplicate key '\(s.string)' in \(what)") }
            out.append((s.string, k, v))
        }
        return out
    }
    func string(_ n: Node, _ what: String) throws(ManifestError) -> String {
        guard case let .scalar(s) = n, n.null == nil || s.style != .plain else { throw fail(n, "\(what) must be a string, found \(kind(n))") }
        return s.string
    }
    func number(_ n: Node, _ what: String, min: Double = 0) throws(ManifestError) -> Double {
        guard case .scalar = n, let d = n.float ?? n.int.map(Double.init) else { throw fail(n, "\(what) must be a number, found \(kind(n))") }
        guard d >= min, d.isFinite else { throw fail(n, "\(what) must be ≥ \(min), got \(d)") }
        return d
    }
    func integer(_ n: Node, _ what: String, min: Int) throws(ManifestError) -> Int {
        guard case .scalar = n, let i = n.int else { throw fail(n, "\(what) must be an integer, found \(kind(n))") }
        guard i >= min else { throw fail(n, "\(what) must be ≥ \(min), got \(i)") }
        return i
    }
    func bool(_ n: Node, _ what: String) throws(ManifestError) -> Bool {
        guard case .scalar = n, let b = n.bool else { throw fail(n, "\(what) must be true or false, found \(kind(n))") }
        return b
    }
    func stringList(_ n: Node, _ what: String) throws(ManifestError) -> [String] {
        if case .scalar = n { return [try string(n, what)] }
        guard case let .sequence(seq) = n else { throw fail(n, "\(what) must be a list of strings, found \(kind(n))") }
        var out: [String] = []
        for item in seq { out.append(try string(item, "each item of \(what)")) }
        return out
    }
    func kind(_ n: Node) -> String {
        switch n {
        case let .scalar(s):
            if n.null != nil && s.style == .plain { return "null" }
            if n.bool != nil && s.style == .plain { return "a boolean (\(s.string))" }
            if (n.int != nil || n.float != nil) && s.style == .plain { return "a number (\(s.string))" }
            return "a string ('\(s.string)')"
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        }
    }

    mutating func manifest(_ root: Node, baseDirectory: String, builtins: Set<String>?) throws(ManifestError) -> Manifest {
        var m = Manifest(path: path, baseDirectory: baseDirectory)
        var tasksNode: Node?
        var pluginDirsNode: Node?
        for (key, _, value) in try mapping(root, "the manifest", allowed: ["broker", "broker_transport_options", "result_backend", "tasks", "workers", "defaults", "workflows", "schedules", "plugin_dirs"]) {
            switch key {
            case "broker": m.broker = try string(value, "broker")
            case "result_backend": m.resultBackend = try backend(value)
            case "broker_transport_options":
                // Celery's name for the broker's transport options; the one read here is the
                // Sentinel master's name, for sentinel:// URLs that do not carry it.
                for (k, _, v) in try mapping(value, "broker_transport_options", allowed: ["master_name"]) where k == "master_name" {
                    m.sentinelMasterName = try string(v, "broker_transport_options.master_name")
                }
            case "tasks": tasksNode = value
            case "plugin_dirs":
                m.pluginDirectories = try pluginDirectories(value, baseDirectory: baseDirectory)
                pluginDirsNode = value
            default: break
            }
        }
        var defaultTimeLimit: Double?
        var defaultRetries = 0
        var defaultTrackStarted = false
        for (key, _, value) in try mapping(root, "the manifest", allowed: []) where key == "defaults" {
            for (k, _, v) in try mapping(value, "defaults", allowed: ["time_limit", "max_redeliveries", "retries", "track_started", "events", "history"]) {
                switch k {
                case "time_limit": defaultTimeLimit = try number(v, "defaults.time_limit")
                case "retries": defaultRetries = try integer(v, "defaults.retries", min: 0)
                case "track_started": defaultTrackStarted = try bool(v, "defaults.track_started")
                case "events": m.taskEvents = try bool(v, "defaults.events")
                case "history": m.history = try integer(v, "defaults.history", min: 0)
                default: m.maxRedeliveries = try integer(v, "defaults.max_redeliveries", min: 0)
                }
            }
        }
        undescribedTasks = !checkFiles && !m.pluginDirectories.isEmpty
        // With plugin_dirs, 'tasks' may be left out: every task can come from discovery.
        guard tasksNode != nil || pluginDirsNode != nil else { throw ManifestError(loc(root), "the manifest has no 'tasks' mapping") }
        let entries = try tasksNode.map { n throws(ManifestError) in try mapping(n, "tasks", allowed: []) } ?? []
        let claims = discover && !m.pluginDirectories.isEmpty
            ? try discoveredClaims(&m, entries: entries, dirsNode: pluginDirsNode!, baseDirectory: baseDirectory)
            : DiscoveryClaims()
        var specs: [TaskSpec] = []
        for (name, _, value) in entries {
            var node = value
            var from: DiscoveredPlugin?
            if let (plugin, entry) = claims[name]?.first(where: { self.describes($0.plugin, value, baseDirectory: baseDirectory) }) {
                // The plugin's suggestion, checked on its own first, so that its mistakes are
                // reported against the plugin; then tasks.yaml's keys win over it.
                let suggested = suggestion(entry, plugin: plugin, withPlugin: handlerKeys(value).isEmpty)
                do {
                    _ = try ManifestReader(path: "\(plugin.file) (describe)").task(name, suggestion(entry, plugin: plugin, withPlugin: true),
                                                                                  baseDirectory: baseDirectory, builtins: builtins,
                                                                                  defaultTimeLimit: defaultTimeLimit, defaultTrackStarted: defaultTrackStarted)
                    node = merged(value, over: suggested)
                    from = plugin
                    let mine = Set(keys(value))
                    m.discovery.found.append(.init(task: name, file: plugin.file, argv: plugin.argv, directory: plugin.directory.path, overridden: keys(suggested).filter { mine.contains($0) && $0 != "plugin" }))
                } catch {
                    // tasks.yaml relies on the plugin for the handler: without it the task cannot run.
                    if handlerKeys(value).isEmpty { throw fail(value, "task '\(name)': its plugin's description cannot be used: \(error.description)") }
                    m.discovery.problems.append(.init(file: plugin.file, message: "what it suggests for task '\(name)' is ignored: \(error.description)"))
                }
            }
            var t = try task(name, node, baseDirectory: baseDirectory, builtins: builtins, defaultTimeLimit: defaultTimeLimit,
                             defaultTrackStarted: defaultTrackStarted, discovery: !m.pluginDirectories.isEmpty)
            // Checked, but left out when its queue is the plugin's, not asked here (checkFiles).
            if undescribedTasks && handlerKeys(value).isEmpty && !keys(value).contains("queue") { continue }
            if t.retries == -1 { t.retries = defaultRetries }
            t.discoveredFrom = from?.file
            // `paramsDeclared` says tasks.yaml wrote the schema; one merged from the plugin is its own.
            if from != nil && !keys(value).contains(where: { ["params", "varargs", "varkwargs"].contains($0) }) { t.paramsDeclared = false }
            specs.append(t)
        }
        // Tasks only the plugins name, in folder, file and plugin order.
        let named = Set(entries.map(\.0))
        var seenDiscovered = Set<String>()
        for name in claims.order where !named.contains(name) && seenDiscovered.insert(name).inserted {
            guard let list = claims[name] else { continue }
            let (plugin, entry) = list[0]
            let reader = ManifestReader(path: "\(plugin.file) (describe)")
            do {
                var t = try reader.task(name, suggestion(entry, plugin: plugin, withPlugin: true), baseDirectory: baseDirectory, builtins: builtins,
                                        defaultTimeLimit: defaultTimeLimit, defaultTrackStarted: defaultTrackStarted)
                if t.retries == -1 { t.retries = defaultRetries }
                t.discoveredFrom = plugin.file
                t.paramsDeclared = false
                specs.append(t)
                m.discovery.found.append(.init(task: name, file: plugin.file, argv: plugin.argv, directory: plugin.directory.path, overridden: []))
            } catch {
                m.discovery.problems.append(.init(file: plugin.file, message: "task '\(name)' not used: \(error.description)"))
            }
        }
        m.tasks = Dictionary(specs.map { ($0.name, $0) }, uniquingKeysWith: { _, b in b })
        m.taskOrder = specs.map(\.name)
        for (key, _, value) in try mapping(root, "the manifest", allowed: []) where key == "workers" {
            for (name, _, w) in try mapping(value, "workers", allowed: []) {
                var group = WorkerGroup(name: name, queues: [])
                var sawQueues = false
                for (k, kn, v) in try mapping(w, "worker group '\(name)'", allowed: ["queues", "concurrency"]) {
                    switch k {
                    case "queues":
                        group.queues = try stringList(v, "workers.\(name).queues")
                        sawQueues = true
                        if group.queues.isEmpty { throw fail(v, "workers.\(name).queues must name at least one queue") }
                        _ = kn
                    default: group.concurrency = try integer(v, "workers.\(name).concurrency", min: 1)
                    }
                }
                if !sawQueues { throw fail(w, "worker group '\(name)' is missing the field 'queues'") }
                m.workers.append(group)
            }
        }
        for (key, _, value) in try mapping(root, "the manifest", allowed: []) where key == "workflows" {
            m.workflows = try workflows(value, tasks: m.tasks)
        }
        for (key, _, value) in try mapping(root, "the manifest", allowed: []) where key == "schedules" {
            m.schedules = try schedules(value, tasks: m.tasks)
        }
        return m
    }

    func backend(_ n: Node) throws(ManifestError) -> ResultBackendConfig {
        if case .scalar = n {
            do { return try ResultBackendConfig.parse(try string(n, "result_backend")) } catch { throw ManifestError(loc(n), error.message) }
        }
        var url: String?
        var expires = 86400
        var extended = false
        for (k, _, v) in try mapping(n, "result_backend", allowed: ["url", "expires", "extended"]) {
            switch k {
            case "url": url = try string(v, "result_backend.url")
            case "extended": extended = try bool(v, "result_backend.extended")
            default: expires = try integer(v, "result_backend.expires", min: 0)
            }
        }
        // No url: the broker's Redis (resolved when the broker URL is known).
        guard let url else { return ResultBackendConfig(kind: .sameAsBroker, expires: expires, extended: extended) }
        do {
            var config = try ResultBackendConfig.parse(url, expires: expires)
            config.extended = extended
            return config
        } catch { throw ManifestError(loc(n), error.message) }
    }

    func task(_ name: String, _ n: Node, baseDirectory: String, builtins: Set<String>?, defaultTimeLimit: Double?,
              defaultTrackStarted: Bool, discovery: Bool = false) throws(ManifestError) -> TaskSpec {
        let what = "task '\(name)'"
        var queue = "celery"
        var handler: HandlerSpec?
        var timeLimit = defaultTimeLimit
        var softLimit: Double?
        var storeResult = true
        var trackStarted = defaultTrackStarted
        var retries = -1   // -1: the manifest's default
        var backoff = 1.0
        var backoffMax = 60.0
        var pluginOptions: [(String, Node, Node)] = []
        var pluginNode: Node?
        var rateLimit: TaskSpec.RateLimit?
        var burst: (Int, Node)?
        var maxConcurrency: Int?
        var unique: UniqueSpec?
        var schemaKeys: [(String, Node)] = []
        for (k, kn, v) in try mapping(n, what, allowed: ["queue", "builtin", "plugin", "time_limit", "soft_time_limit", "ignore_result", "env", "set_env", "cwd", "grace_period", "mode", "max_output_bytes", "processes", "max_inflight", "max_calls", "max_rss_mb", "handshake_timeout", "retries", "retry_backoff", "retry_backoff_max", "track_started", "rate_limit", "burst", "max_concurrency", "unique", "params", "varargs", "varkwargs", "returns", "doc"]) {
            switch k {
            case "queue":
                queue = try string(v, "\(name).queue")
                if queue.isEmpty { throw fail(v, "\(name).queue must not be empty") }
            case "builtin":
                if handler != nil { throw fail(kn, "\(what) has both 'builtin' and 'plugin'; give one") }
                let b = try string(v, "\(name).builtin")
                if let builtins, !builtins.contains(b) {
                    throw fail(v, "unknown built-in '\(b)' for \(what) (known: \(builtins.sorted().joined(separator: ", ")))")
                }
                handler = .builtin(b)
            case "plugin":
                if handler != nil { throw fail(kn, "\(what) has both 'builtin' and 'plugin'; give one") }
                pluginNode = v
                handler = .plugin(PluginSpec(argv: [], executable: "", workingDirectory: baseDirectory))
            case "time_limit": timeLimit = try number(v, "\(name).time_limit")
            case "soft_time_limit": softLimit = try number(v, "\(name).soft_time_limit")
            case "ignore_result": storeResult = !(try bool(v, "\(name).ignore_result"))
            case "track_started": trackStarted = try bool(v, "\(name).track_started")
            case "retries": retries = try integer(v, "\(name).retries", min: 0)
            case "retry_backoff": backoff = try number(v, "\(name).retry_backoff")
            case "retry_backoff_max": backoffMax = try number(v, "\(name).retry_backoff_max")
            case "rate_limit": rateLimit = try rate(v, "\(name).rate_limit")
            case "burst": burst = (try integer(v, "\(name).burst", min: 1), kn)
            case "max_concurrency": maxConcurrency = try integer(v, "\(name).max_concurrency", min: 1)
            case "unique": unique = try self.unique(v, task: name)
            case "params", "varargs", "varkwargs", "returns", "doc": schemaKeys.append((k, v))
            default: pluginOptions.append((k, kn, v))
            }
        }
        if let (b, bn) = burst {
            guard rateLimit != nil else { throw fail(bn, "\(name).burst applies to a rate limit: add 'rate_limit: <n>/s' (or /m, /h) to \(what)") }
            rateLimit?.burst = b
        }
        /// The task with its handler and everything but the handler's options.
        func made(_ h: HandlerSpec) throws(ManifestError) -> TaskSpec {
            var t = TaskSpec(name: name, queue: queue, handler: h, timeLimit: timeLimit, storeResult: storeResult)
            t.retries = retries
            t.softTimeLimit = softLimit
            t.retryBackoff = backoff
            t.retryBackoffMax = max(backoffMax, backoff)
            t.trackStarted = trackStarted
            t.rateLimit = rateLimit
            t.maxConcurrency = maxConcurrency
            t.unique = unique
            try argumentSchema(&t, schemaKeys)
            return t
        }
        if handler == nil && discovery && !checkFiles {
            // Its handler comes from a plugin of plugin_dirs, not asked here (see checkFiles).
            return try made(.plugin(PluginSpec(argv: [], executable: "", workingDirectory: baseDirectory)))
        }
        guard let h = handler else {
            throw fail(n, "\(what) is missing a handler: add 'builtin: <name>' or 'plugin: [program, args…]'"
                       + (discovery ? ", or put a plugin that describes it in one of plugin_dirs (see `celerity check`)" : ""))
        }
        if case .builtin = h, let (k, kn, _) = pluginOptions.first {
            throw fail(kn, "'\(k)' applies to plugins only, but \(what) is a built-in")
        }
        if let pluginNode {
            var argv = try stringList(pluginNode, "\(name).plugin")
            if argv.isEmpty || argv[0].isEmpty { throw fail(pluginNode, "\(name).plugin must name a program") }
            var spec = PluginSpec(argv: argv, executable: "", workingDirectory: baseDirectory)
            var persistent: PersistentOptions?
            var modeNode: Node?
            var persistentKeys: [(String, Node, Node)] = []
            for (k, kn, v) in pluginOptions {
                switch k {
                case "env": spec.environment = try stringList(v, "\(name).env")
                case "set_env":
                    for (ek, _, ev) in try mapping(v, "\(name).set_env", allowed: []) { spec.setEnvironment[ek] = try string(ev, "\(name).set_env.\(ek)") }
                case "cwd":
                    let c = try string(v, "\(name).cwd")
                    spec.workingDirectory = c.hasPrefix("/") ? c : (baseDirectory as NSString).appendingPathComponent(c)
                    var isDir: ObjCBool = false
                    if checkFiles && (!FileManager.default.fileExists(atPath: spec.workingDirectory, isDirectory: &isDir) || !isDir.boolValue) {
                        throw fail(v, "\(name).cwd '\(c)' is not a directory")
                    }
                case "grace_period": spec.gracePeriod = try number(v, "\(name).grace_period")
                case "max_output_bytes": spec.maxOutputBytes = try integer(v, "\(name).max_output_bytes", min: 1)
                case "mode":
                    let mode = try string(v, "\(name).mode")
                    if mode == "persistent" { persistent = persistent ?? PersistentOptions() }
                    else if mode != "oneshot" { throw fail(v, "\(name).mode must be 'oneshot' or 'persistent', got '\(mode)'") }
                    modeNode = v
                case "processes", "max_inflight", "max_calls", "max_rss_mb", "handshake_timeout":
                    persistentKeys.append((k, kn, v))
                default: _ = kn
                }
            }
            if var options = persistent {
                for (k, _, v) in persistentKeys {
                    switch k {
                    case "processes": options.processes = try integer(v, "\(name).processes", min: 1)
                    case "max_inflight": options.maxInflight = try integer(v, "\(name).max_inflight", min: 1)
                    case "max_calls": options.maxCalls = try integer(v, "\(name).max_calls", min: 1)
                    case "max_rss_mb": options.maxRSSBytes = try integer(v, "\(name).max_rss_mb", min: 1) << 20
                    default: options.handshakeTimeout = try number(v, "\(name).handshake_timeout")
                    }
                }
                spec.mode = .persistent(options)
                _ = modeNode
            } else if let (k, kn, _) = persistentKeys.first {
                throw fail(kn, "'\(k)' applies to persistent plugins only: add 'mode: persistent' to \(what)")
            }
            // Resolve the program: a path (relative to the working directory) or a name on PATH.
            let program = argv[0]
            let resolved: String?
            if program.contains("/") {
                let p = program.hasPrefix("/") ? program : (spec.workingDirectory as NSString).appendingPathComponent(program)
                resolved = (p as NSString).standardizingPath
            } else {
                resolved = Executables.find(program)
            }
            var isDirectory: ObjCBool = false
            if !checkFiles {
                // Looking only: the program need not be here (argv as written; resolved when it is).
                argv[0] = program
                spec.argv = argv
                spec.executable = resolved.flatMap { Executables.isExecutableFile($0) ? $0 : nil } ?? program
                return try made(.plugin(spec))
            }
            guard let exe = resolved, FileManager.default.fileExists(atPath: exe, isDirectory: &isDirectory) else {
                throw fail(pluginNode, "plugin program '\(program)' of \(what) not found" + (program.contains("/") ? " (relative paths are resolved against \(spec.workingDirectory))" : " on PATH"))
            }
            // A directory has execute bits too; it would only fail when a task runs.
            guard !isDirectory.boolValue else {
                throw fail(pluginNode, "plugin program '\(program)' of \(what) is a directory, not a program (\(exe))")
            }
            guard FileManager.default.isExecutableFile(atPath: exe) else {
                throw fail(pluginNode, "plugin program '\(program)' of \(what) is not executable (chmod +x \(exe))")
            }
            // Script arguments given to an interpreter must exist too.
            for arg in argv.dropFirst() where ManifestReader.looksLikeScript(arg) {
                let p = arg.hasPrefix("/") ? arg : (spec.workingDirectory as NSString).appendingPathComponent(arg)
                var isDir: ObjCBool = false
                if !FileManager.default.fileExists(atPath: p, isDirectory: &isDir) { throw fail(pluginNode, "plugin script '\(arg)' of \(what) not found (looked at \(p))") }
                if isDir.boolValue { throw fail(pluginNode, "plugin script '\(arg)' of \(what) is a directory, not a script (\(p))") }
            }
            argv[0] = program
            spec.argv = argv
            spec.executable = exe
            return try made(.plugin(spec))
        }
        return try made(h)
    }

    /// A rate in Celery's words: `100/s`, `10/m`, `5/h`, or a number (per second); > 0.
    func rate(_ n: Node, _ what: String) throws(ManifestError) -> TaskSpec.RateLimit {
        guard case let .scalar(s) = n, n.null == nil else { throw fail(n, "\(what) must be a rate like '100/s', '10/m' or '5/h', found \(kind(n))") }
        let perSecond: Double
        do throws(RateLimitParser.Failure) {
            perSecond = try RateLimitParser.perSecond(.string(s.string))
        } catch {
            switch error {
            case let .notANumber(t): throw fail(n, "\(what): '\(t)' is not a number (expected a rate like '100/s', '10/m' or '5/h')")
            case let .unknownUnit(u): throw fail(n, "\(what): unknown unit '\(u)' (expected s, m or h, as in '100/s')")
            }
        }
        guard perSecond > 0, perSecond.isFinite, perSecond <= 1_000_000 else {
            throw fail(n, "\(what) must be more than 0 and at most 1000000/s, got '\(s.string)'")
        }
        return TaskSpec.RateLimit(perSecond: perSecond, text: s.string)
    }

    static func looksLikeScript(_ arg: String) -> Bool {
        !arg.hasPrefix("-") && [".py", ".js", ".mjs", ".sh", ".rb", ".pl", ".php", ".lua"].contains { arg.hasSuffix($0) }
    }

}

/// Finding programs the way a shell would, without one.
public enum Executables {
    /// `program` itself when it contains a slash (and is an executable file), else the first
    /// executable file of that name on PATH. Directories are skipped, as a shell skips them.
    public static func find(_ program: String) -> String? {
        if program.contains("/") { return isExecutableFile(program) ? program : nil }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for dir in path.split(separator: ":") {
            let p = String(dir) + "/" + program
            if isExecutableFile(p) { return p }
        }
        return nil
    }

    /// Executable and not a directory (a directory's search bit reads as "executable").
    public static func isExecutableFile(_ path: String) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && !isDirectory.boolValue
            && FileManager.default.isExecutableFile(atPath: path)
    }
}
