import Foundation
import RedisClient

/// tasks.yaml, validated: where the broker and results live, which task runs where and how,
/// and the worker groups `celerity up` starts.
public struct Manifest: Sendable {
    /// The file it was read from (nil when built in code).
    public var path: String?
    /// The folder relative plugin paths and working directories are resolved against.
    public var baseDirectory: String
    public var broker: String?
    /// `broker_transport_options.master_name`: the Sentinel master of every `sentinel://` URL
    /// (broker and result backend) that does not name one itself.
    public var sentinelMasterName: String?
    public var resultBackend: ResultBackendConfig?
    public var tasks: [String: TaskSpec]
    /// Task names in file order (for listings).
    public var taskOrder: [String]
    public var workers: [WorkerGroup]
    /// Deliveries after worker crashes before a message counts as a poison pill (dead-lettered).
    public var maxRedeliveries: Int = 3
    /// Workers send task events from the start (`defaults.events`; Celery's
    /// `worker_send_task_events`, as `-E` does).
    public var taskEvents: Bool = false
    /// How many task outcomes workers keep in Redis for the dashboard's task history
    /// (`defaults.history`; `celerity:history`, newest first; 0: none).
    public var history: Int = Manifest.defaultHistory
    public static let defaultHistory = 100_000
    /// Workflows declared once by name (`workflows:`): `celerity call <name>` runs one.
    public var workflows: [String: WorkflowSpec] = [:]
    /// Periodic tasks (`schedules:`), in file order.
    public var schedules: [ScheduleEntry] = []
    /// Folders of drop-in plugins (`plugin_dirs:`), asked to describe their tasks.
    public var pluginDirectories: [PluginDirectory] = []
    /// What discovery found in `pluginDirectories`, and the plugins it could not use.
    public var discovery = DiscoveryReport()

    public init(path: String? = nil, baseDirectory: String = FileManager.default.currentDirectoryPath, broker: String? = nil,
                resultBackend: ResultBackendConfig? = nil, tasks: [TaskSpec] = [], workers: [WorkerGroup] = []) {
        self.path = path
        self.baseDirectory = baseDirectory
        self.broker = broker
        self.resultBackend = resultBackend
        self.tasks = Dictionary(tasks.map { ($0.name, $0) }, uniquingKeysWith: { _, b in b })
        self.taskOrder = tasks.map(\.name)
        self.workers = workers
    }

    /// The queue a task is routed to: the manifest's, else Celery's default `celery`.
    public func queue(for task: String) -> String { tasks[task]?.queue ?? "celery" }

    /// All queues named by tasks, in file order.
    public var queues: [String] {
        var seen = Set<String>()
        return taskOrder.compactMap { tasks[$0]?.queue }.filter { seen.insert($0).inserted }
    }
}

/// Where results go: Celery's Redis backend, its rpc backend, or nowhere.
public enum ResultBackendKind: Sendable, Hashable {
    case redis(String)
    case rpc
    case none
    /// The broker's own Redis (whatever broker URL is finally used).
    case sameAsBroker
}

public struct ResultBackendConfig: Sendable, Hashable {
    public var kind: ResultBackendKind
    /// Seconds results are kept (Celery's `result_expires`); 0 keeps them forever.
    public var expires: Int
    /// Celery's `result_extended`: every document also names the task, its args and kwargs,
    /// the worker, the queue and the retries.
    public var extended: Bool
    public init(kind: ResultBackendKind, expires: Int = 86400, extended: Bool = false) {
        self.kind = kind
        self.expires = expires
        self.extended = extended
    }

    /// The configuration with `.sameAsBroker` replaced by the broker URL actually used.
    public func resolved(broker: String) -> ResultBackendConfig {
        kind == .sameAsBroker ? ResultBackendConfig(kind: .redis(broker), expires: expires, extended: extended) : self
    }

    /// Parses `redis://…`, `rediss://…` (TLS), `unix://…`, `rpc://`, `broker` (the broker's Redis) or `none`.
    public static func parse(_ text: String, expires: Int = 86400) throws(ManifestError) -> ResultBackendConfig {
        let lower = text.lowercased()
        if lower == "none" || lower == "disabled" || lower.isEmpty { return ResultBackendConfig(kind: .none, expires: expires) }
        if lower == "broker" { return ResultBackendConfig(kind: .sameAsBroker, expires: expires) }
        if lower.hasPrefix("rpc://") || lower == "rpc" { return ResultBackendConfig(kind: .rpc, expires: expires) }
        if lower.hasPrefix("redis://") || lower.hasPrefix("rediss://") || lower.hasPrefix("unix://") || lower.hasPrefix("redis+unix://") || lower.hasPrefix("sentinel://") {
            return ResultBackendConfig(kind: .redis(text), expires: expires)
        }
        throw ManifestError(nil, "unknown result backend '\(RedisURL.redact(text))' (expected redis://…, rediss://…, unix://…, sentinel://…, rpc:// or none)")
    }
}

/// What runs a task.
public enum HandlerSpec: Sendable, Hashable {
    /// A Swift function registered under this name (see `celerity check --builtins`).
    case builtin(String)
    case plugin(PluginSpec)
}

public struct PluginSpec: Sendable, Hashable {
    /// The program and its arguments, never passed through a shell.
    public var argv: [String]
    /// `argv[0]` resolved to an absolute path when the manifest was checked.
    public var executable: String
    public var workingDirectory: String
    /// Names of the worker's environment variables the plugin may see (besides PATH, HOME, LANG).
    public var environment: [String]
    /// Extra variables set for the plugin.
    public var setEnvironment: [String: String]
    /// Seconds between SIGTERM and SIGKILL when the time limit is hit.
    public var gracePeriod: Double
    /// Largest response accepted on stdout, and largest stderr kept, in bytes.
    public var maxOutputBytes: Int
    public var maxStderrBytes: Int
    /// One process per call, or long-lived processes speaking JSON-RPC.
    public var mode: PluginMode = .oneshot

    public init(argv: [String], executable: String, workingDirectory: String, environment: [String] = [], setEnvironment: [String: String] = [:],
                gracePeriod: Double = 5, maxOutputBytes: Int = 16 << 20, maxStderrBytes: Int = 1 << 20) {
        self.argv = argv
        self.executable = executable
        self.workingDirectory = workingDirectory
        self.environment = environment
        self.setEnvironment = setEnvironment
        self.gracePeriod = gracePeriod
        self.maxOutputBytes = maxOutputBytes
        self.maxStderrBytes = maxStderrBytes
    }
}

public enum PluginMode: Sendable, Hashable {
    case oneshot
    case persistent(PersistentOptions)
}

/// Supervision settings of a persistent plugin.
public struct PersistentOptions: Sendable, Hashable {
    /// Long-lived processes kept per plugin.
    public var processes: Int = 1
    /// Calls in flight per process at most (the plugin's own `max_inflight` may lower it).
    public var maxInflight: Int?
    /// Recycle a process after this many calls.
    public var maxCalls: Int?
    /// Recycle a process whose resident memory grows above this many bytes.
    public var maxRSSBytes: Int?
    /// Seconds the plugin has to answer `initialize`.
    public var handshakeTimeout: Double = 10
    public init() {}
}

public struct TaskSpec: Sendable, Hashable {
    public var name: String
    public var queue: String
    public var handler: HandlerSpec
    /// Hard time limit in seconds (nil: none). A message's own `timelimit` header wins when shorter.
    public var timeLimit: Double?
    /// Soft time limit in seconds: handlers are asked to stop (built-ins see
    /// `TaskCall.isCancelled`, one-shot plugins get SIGTERM, persistent ones `$/cancel`).
    public var softTimeLimit: Double?
    /// Whether results are stored (Celery's `ignore_result` inverted).
    public var storeResult: Bool
    /// Celery's `track_started`: STARTED (with the worker's pid and node name) is stored
    /// before the task runs. Such a task never takes the inline fast paths.
    public var trackStarted: Bool = false
    /// Retries after a retryable failure (0: none).
    public var retries: Int = 0
    /// First retry delay in seconds; doubles each attempt up to `retryBackoffMax`, with jitter.
    public var retryBackoff: Double = 1
    public var retryBackoffMax: Double = 60
    /// A rate limit across all workers together (`rate_limit`, `burst`), nil: none.
    public var rateLimit: RateLimit?
    /// At most this many calls of the task run at once on all workers (`max_concurrency`).
    public var maxConcurrency: Int?

    /// Starts per second, and how many may start at once after a quiet spell (GCRA's burst).
    public struct RateLimit: Sendable, Hashable {
        public var perSecond: Double
        public var burst: Int
        /// As written in tasks.yaml (`100/s`), for listings.
        public var text: String
        public init(perSecond: Double, burst: Int = 1, text: String? = nil) {
            self.perSecond = perSecond
            self.burst = burst
            self.text = text ?? "\(perSecond)/s"
        }
    }
    /// `unique:`: a call with the same key as one still queued or running is not enqueued
    /// (the sender gets the first call's id). See `UniqueSpec`.
    public var unique: UniqueSpec?
    /// The plugin file that described this task when it was found by discovery (`plugin_dirs`),
    /// relative to the manifest's folder; nil for a task declared in full in tasks.yaml.
    public var discoveredFrom: String?

    /// Delay before retry number `attempt` (1-based): exponential, capped, with "equal jitter"
    /// (half fixed, half random) so a burst of failures does not retry in lockstep.
    public func retryDelay(attempt: Int) -> Double {
        let exp = min(retryBackoff * pow(2, Double(max(attempt - 1, 0))), retryBackoffMax)
        return exp / 2 + Double.random(in: 0...(exp / 2))
    }

    public init(name: String, queue: String = "celery", handler: HandlerSpec, timeLimit: Double? = nil, storeResult: Bool = true) {
        self.name = name
        self.queue = queue
        self.handler = handler
        self.timeLimit = timeLimit
        self.storeResult = storeResult
    }
}

/// One `celerity worker` process that `celerity up` starts.
public struct WorkerGroup: Sendable, Hashable {
    public var name: String
    public var queues: [String]
    public var concurrency: Int
    public init(name: String, queues: [String], concurrency: Int = 4) {
        self.name = name
        self.queues = queues
        self.concurrency = concurrency
    }
}

/// A manifest problem, with `file:line:column` when it comes from a file.
public struct ManifestError: Error, Sendable, CustomStringConvertible {
    public var location: String?
    public var message: String
    public init(_ location: String?, _ message: String) {
        self.location = location
        self.message = message
    }
    public var description: String { location.map { "\($0): error: \(message)" } ?? "error: \(message)" }
}
