import Foundation

/// What `Inspector.snapshot` reports: a read-only picture of the broker (queues, workers,
/// delayed work, dead letters, revocations). Plain Sendable, Codable values, meant to be
/// kept stable: `celerity status --json` prints one, the dashboard and remote control read
/// them. Encode and decode with `Inspector.Snapshot.json()` / `init(json:)`: snake_case keys,
/// dates as ISO 8601 strings in UTC (Celery's format, `2026-05-01T10:00:00.123456+00:00`),
/// durations as seconds.
///
/// The numbers come from a few pipelined reads, not from one atomic one: a message that
/// moves meanwhile (fetched, acked, handed back) may be counted twice or not at all.
extension Inspector {
    public struct Snapshot: Sendable, Codable, Equatable {
        /// When it was taken (this machine's clock); ages below are relative to it.
        public var at: Date
        /// The broker URL, password removed.
        public var broker: String
        public var queues: [QueueInfo]
        /// Live workers first, then known-dead ones; by node name within each.
        public var workers: [WorkerInfo]
        public var delayed: DelayedInfo
        public var deadLetters: DeadLetterInfo
        public var revoked: RevokedInfo
        /// The nodes that answered a remote-control `ping` (Celerity and Python Celery workers
        /// alike), by name; nil when none was sent (`Inspector.snapshot` sends none:
        /// `celerity status` adds it).
        public var pinged: [PingInfo]?

        public init(at: Date, broker: String, queues: [QueueInfo], workers: [WorkerInfo], delayed: DelayedInfo,
                    deadLetters: DeadLetterInfo, revoked: RevokedInfo, pinged: [PingInfo]? = nil) {
            self.pinged = pinged
            self.at = at
            self.broker = broker
            self.queues = queues
            self.workers = workers
            self.delayed = delayed
            self.deadLetters = deadLetters
            self.revoked = revoked
        }

        public func queue(_ name: String) -> QueueInfo? { queues.first { $0.name == name } }
        public func worker(_ node: String) -> WorkerInfo? { workers.first { $0.node == node } }

        /// Pretty-printed, keys sorted (one stable document).
        public func json() throws -> Data { try Snapshot.encoder.encode(self) }
        public init(json: Data) throws { self = try Snapshot.decoder.decode(Snapshot.self, from: json) }

        public static var encoder: JSONEncoder {
            let e = JSONEncoder()
            e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            e.keyEncodingStrategy = .convertToSnakeCase
            e.dateEncodingStrategy = .custom { date, encoder in
                var c = encoder.singleValueContainer()
                try c.encode(CeleryDate.format(date))
            }
            return e
        }

        public static var decoder: JSONDecoder {
            let d = JSONDecoder()
            d.keyDecodingStrategy = .convertFromSnakeCase
            d.dateDecodingStrategy = .custom { decoder in
                let c = try decoder.singleValueContainer()
                let s = try c.decode(String.self)
                guard let date = CeleryDate.parse(s) else {
                    throw DecodingError.dataCorruptedError(in: c, debugDescription: "not an ISO 8601 date: \(s)")
                }
                return date
            }
            return d
        }
    }

    /// A node that answered `ping`.
    public struct PingInfo: Sendable, Codable, Equatable {
        public var node: String
        /// Its answer as sent (`{"ok": "pong"}`).
        public var reply: String
        /// Whether it is a Celerity worker known to this broker (has a heartbeat key); a Python
        /// Celery worker has none.
        public var celerity: Bool

        public init(node: String, reply: String, celerity: Bool) {
            self.node = node
            self.reply = reply
            self.celerity = celerity
        }
    }

    /// One queue: its four priority lists (`Keys.priorityQueues`).
    public struct QueueInfo: Sendable, Codable, Equatable {
        public var name: String
        /// Messages waiting, all priority lists together (not those fetched by workers).
        public var depth: Int
        /// The main list (priorities 0–2) and the `\x06\x16` sub-lists 3, 6 and 9, in the
        /// order workers serve them.
        public var lists: [ListInfo]
        /// Live workers whose heartbeat names this queue.
        public var consumers: [String]
        /// Why the queue is listed: `option` (asked for), `manifest` (tasks or workers
        /// section), `worker` (a live worker consumes it), `paused` (it is paused).
        public var sources: [String]
        /// Paused cluster-wide (`celerity:paused`, `QueuePause`): no worker fetches from it;
        /// its messages wait. `consumers` still lists the live workers asked to consume it.
        public var paused: Bool
        /// How long the oldest waiting message has waited. **Always nil today**: a Celery
        /// protocol v2 message carries no send time (not in `headers`, not in `properties`),
        /// and Celerity's client adds none either, so nothing in Redis says when a message was
        /// queued. The field is kept for when a sender stamps one; see `next` for what the
        /// message at the pop end does say (its eta, its redeliveries).
        public var oldestAge: Double?
        /// Messages a second arriving and leaving (finished by Celerity workers) since the
        /// reader's previous snapshot: the dashboard fills them in; nil otherwise.
        public var rateIn: Double?
        public var rateOut: Double?
        /// The message a worker takes next: the pop end (right) of the first non-empty list.
        public var next: MessageInfo? { lists.first { $0.depth > 0 }?.next }

        public init(name: String, depth: Int, lists: [ListInfo], consumers: [String], sources: [String], paused: Bool = false, oldestAge: Double? = nil) {
            self.name = name
            self.paused = paused
            self.depth = depth
            self.lists = lists
            self.consumers = consumers
            self.sources = sources
            self.oldestAge = oldestAge
        }

        enum CodingKeys: String, CodingKey { case name, depth, lists, consumers, sources, paused, oldestAge, rateIn, rateOut }

        /// A document without `paused` (written before it existed) reads as not paused.
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            name = try c.decode(String.self, forKey: .name)
            depth = try c.decode(Int.self, forKey: .depth)
            lists = try c.decode([ListInfo].self, forKey: .lists)
            consumers = try c.decode([String].self, forKey: .consumers)
            sources = try c.decode([String].self, forKey: .sources)
            paused = try c.decodeIfPresent(Bool.self, forKey: .paused) ?? false
            oldestAge = try c.decodeIfPresent(Double.self, forKey: .oldestAge)
            rateIn = try c.decodeIfPresent(Double.self, forKey: .rateIn)
            rateOut = try c.decodeIfPresent(Double.self, forKey: .rateOut)
        }

        /// Written by hand so that `oldest_age` is always present (`null` today), not left out.
        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(name, forKey: .name)
            try c.encode(depth, forKey: .depth)
            try c.encode(lists, forKey: .lists)
            try c.encode(consumers, forKey: .consumers)
            try c.encode(sources, forKey: .sources)
            try c.encode(paused, forKey: .paused)
            try c.encode(oldestAge, forKey: .oldestAge)
            try c.encodeIfPresent(rateIn, forKey: .rateIn)
            try c.encodeIfPresent(rateOut, forKey: .rateOut)
        }
    }

    /// One Redis list of a queue.
    public struct ListInfo: Sendable, Codable, Equatable {
        /// 0 (the main list: Celery priorities 0–2), 3 (3–5), 6 (6–8) or 9.
        public var priority: Int
        public var key: String
        public var depth: Int
        /// The message at the pop end (the oldest in this list), nil if the list is empty.
        public var next: MessageInfo?

        public init(priority: Int, key: String, depth: Int, next: MessageInfo?) {
            self.priority = priority
            self.key = key
            self.depth = depth
            self.next = next
        }
    }

    /// What a waiting message's envelope says about itself (nothing is decoded beyond it).
    public struct MessageInfo: Sendable, Codable, Equatable {
        /// Task id and name from the headers; nil when the envelope cannot be read.
        public var id: String?
        public var task: String?
        public var eta: Date?
        public var retries: Int
        /// Times it was handed back after its worker died (`celerity_redeliveries`).
        public var redeliveries: Int
        /// Size of the raw envelope in bytes.
        public var bytes: Int

        public init(id: String?, task: String?, eta: Date?, retries: Int, redeliveries: Int, bytes: Int) {
            self.id = id
            self.task = task
            self.eta = eta
            self.retries = retries
            self.redeliveries = redeliveries
            self.bytes = bytes
        }
    }

    /// A node of `celerity:workers`: alive while its heartbeat key exists.
    public struct WorkerInfo: Sendable, Codable, Equatable {
        public var node: String
        public var alive: Bool
        /// The last heartbeat as the worker wrote it; nil for a dead worker (the key expired).
        public var heartbeat: Heartbeat?
        /// Seconds from the heartbeat's `at` to the snapshot (clocks of two machines).
        public var sinceBeat: Double?
        /// Seconds before the heartbeat key expires unless renewed (Redis's own clock).
        public var expiresIn: Double?
        /// Messages in its processing list (`celerity:processing:<node>`): running, waiting
        /// for a slot, or (for a dead worker) awaiting recovery by a live worker.
        public var inFlight: Int

        public init(node: String, alive: Bool, heartbeat: Heartbeat?, sinceBeat: Double?, expiresIn: Double?, inFlight: Int) {
            self.node = node
            self.alive = alive
            self.heartbeat = heartbeat
            self.sinceBeat = sinceBeat
            self.expiresIn = expiresIn
            self.inFlight = inFlight
        }
    }

    /// The JSON of `celerity:worker:<node>` (fields a worker did not write are nil).
    public struct Heartbeat: Sendable, Codable, Equatable {
        public var node: String?
        public var pid: Int?
        public var host: String?
        public var queues: [String]
        /// Those of `queues` it does not fetch from because they are paused (nil: a worker
        /// that predates pausing).
        public var paused: [String]?
        public var concurrency: Int?
        /// Tasks running at the beat.
        public var active: Int?
        /// Tasks finished since the worker started.
        public var processed: Int?
        public var started: Date?
        public var at: Date?
        /// Failures (retries not counted), retries and revocations since the worker started.
        public var failed: Int?
        public var retried: Int?
        public var revoked: Int?
        /// Resident memory of the worker process, bytes.
        public var rss: Int?
        /// Whether the worker sends task events.
        public var events: Bool?
        /// Outcomes and runtimes by task name, since the worker started.
        public var tasks: [String: TaskTally]?
        /// Tasks finished (any outcome) by the queue they came from, since the worker started.
        public var queuesDone: [String: Int]?
        /// Persistent plugin pools by command line: processes running, restarts after crashes,
        /// recycles, whether it takes calls.
        public var plugins: [String: PluginProcesses]?

        public init(node: String?, pid: Int?, host: String?, queues: [String], paused: [String]? = nil, concurrency: Int?, active: Int?, processed: Int?, started: Date?, at: Date?,
                    failed: Int? = nil, retried: Int? = nil, revoked: Int? = nil, rss: Int? = nil, events: Bool? = nil, tasks: [String: TaskTally]? = nil,
                    queuesDone: [String: Int]? = nil, plugins: [String: PluginProcesses]? = nil) {
            self.queuesDone = queuesDone
            self.paused = paused
            self.failed = failed
            self.retried = retried
            self.revoked = revoked
            self.rss = rss
            self.events = events
            self.tasks = tasks
            self.plugins = plugins
            self.node = node
            self.pid = pid
            self.host = host
            self.queues = queues
            self.concurrency = concurrency
            self.active = active
            self.processed = processed
            self.started = started
            self.at = at
        }
    }

    /// A persistent plugin pool as a worker's heartbeat reports it.
    public struct PluginProcesses: Sendable, Codable, Equatable {
        public var processes: Int
        public var restarts: Int
        public var recycles: Int
        public var available: Bool
    }

    /// `celerity:delayed`: eta/countdown calls and retries waiting for their time.
    public struct DelayedInfo: Sendable, Codable, Equatable {
        public var count: Int
        /// Already due but not moved yet (no worker running, or moved within 250 ms).
        public var overdue: Int
        public var nextDue: Date?
        /// The queue of the next one due.
        public var nextQueue: String?

        public init(count: Int, overdue: Int, nextDue: Date?, nextQueue: String?) {
            self.count = count
            self.overdue = overdue
            self.nextDue = nextDue
            self.nextQueue = nextQueue
        }
    }

    /// `celerity:dead`.
    public struct DeadLetterInfo: Sendable, Codable, Equatable {
        public var count: Int
        /// Entries per queue, most first (queue "" = unknown); nil when not counted
        /// (`Inspector.countDeadLettersByQueue` false).
        public var byQueue: [QueueCount]?
        /// The newest entry's time and reason.
        public var newestAt: Date?
        public var newestReason: String?

        public init(count: Int, byQueue: [QueueCount]?, newestAt: Date?, newestReason: String?) {
            self.count = count
            self.byQueue = byQueue
            self.newestAt = newestAt
            self.newestReason = newestReason
        }
    }

    public struct QueueCount: Sendable, Codable, Equatable {
        public var queue: String
        public var count: Int
        public init(queue: String, count: Int) {
            self.queue = queue
            self.count = count
        }
    }

    /// `celerity:revoked` and `celerity:revoked:terminate` (sorted by expiry; workers prune
    /// expired ids, so `count` may include a few that no longer apply).
    public struct RevokedInfo: Sendable, Codable, Equatable {
        public var count: Int
        /// Those whose revocation has not expired yet.
        public var live: Int
        public var terminate: Int
        public var terminateLive: Int

        public init(count: Int, live: Int, terminate: Int, terminateLive: Int) {
            self.count = count
            self.live = live
            self.terminate = terminate
            self.terminateLive = terminateLive
        }
    }
}
