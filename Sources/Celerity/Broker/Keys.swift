/// Every Redis key and channel name Celerity reads or writes, in one place.
///
/// Celery/kombu-compatible names (shared with Python Celery processes):
/// - `<queue>`, `<queue>\x06\x163`, `<queue>\x06\x166`, `<queue>\x06\x169`: task lists,
///   priorities 0–2, 3–5, 6–8 and 9. Producers LPUSH, consumers take from the right.
/// - `celery-task-meta-<id>`: the Redis result backend's key *and* pub/sub channel.
/// - `<reply_to>`: the rpc result backend's reply list for one client.
/// - `_kombu.binding.<queue>`, `_kombu.binding_permanent.<queue>`: kombu's binding tables.
///
/// Celerity's own names (ignored by Python Celery):
/// - `celerity:processing:<node>`: list of messages a worker has fetched and not yet
///   acked. Fetch moves messages here atomically; ack removes them after the result is stored.
/// - `celerity:dead`: the dead-letter list (JSON entries, newest first).
/// - `celerity:worker:<node>`: a worker's heartbeat (expires when it stops beating).
/// - `celerity:workers`: set of node names that have ever run (for recovery sweeps).
/// - `celerity:delayed`: sorted set of messages waiting for their eta.
/// - `celerity:lock:recovery`: lock of the sweep that requeues dead workers' messages.
/// - `celerity:revoked`, `celerity:revoked:terminate`: revoked task ids (sorted by expiry).
/// - `celerity:rate:<task>`, `celerity:rate-wait:<task>`, `celerity:rate-turn:<id>`,
///   `celerity:rate-conf`: global rate limits (GCRA state, parked messages, a parked
///   message's reserved turn, rates set at run time); see `TaskGate`.
/// - `celerity:cap:<task>`, `celerity:cap-wait:<task>`: concurrency caps (running ids with
///   their lease, messages waiting for a place).
/// - `celerity:paused`: set of queue names no worker fetches from (`QueuePause`).
public enum Keys {
    /// kombu's separator between a queue name and its priority bucket.
    public static let separator = "\u{06}\u{16}"

    /// The list key for `queue` at Celery priority `priority` (0 = highest on Redis).
    public static func queue(_ queue: String, priority: Int = 0) -> String {
        let p = min(max(priority, 0), 9)
        let step = p >= 9 ? 9 : p >= 6 ? 6 : p >= 3 ? 3 : 0
        return step == 0 ? queue : queue + separator + String(step)
    }

    /// All priority lists of `queue`, in the order they are served (0–2 first).
    public static func priorityQueues(_ queue: String) -> [String] {
        [queue, queue + separator + "3", queue + separator + "6", queue + separator + "9"]
    }

    /// The queue name of a priority list key (strips the `\x06\x16<n>` suffix).
    public static func queueName(fromListKey key: String) -> String {
        if let r = key.range(of: separator) { return String(key[..<r.lowerBound]) }
        return key
    }

    /// Result key and channel of the Redis result backend.
    public static func resultMeta(_ taskID: String) -> String { "celery-task-meta-" + taskID }

    /// kombu's binding table for a direct queue, and its member for routing key = queue.
    public static func binding(_ queue: String) -> String { "_kombu.binding." + queue }
    public static func bindingPermanent(_ queue: String) -> String { "_kombu.binding_permanent." + queue }
    public static func bindingMember(_ queue: String) -> String { queue + separator + separator + queue }

    public static func processing(_ node: String) -> String { "celerity:processing:" + node }
    public static let deadLetters = "celerity:dead"
    public static func heartbeat(_ node: String) -> String { "celerity:worker:" + node }
    public static let workers = "celerity:workers"
    /// Sorted set of messages waiting for their eta (score: due time, unix seconds);
    /// members are `<list key>\0<message>`.
    public static let delayed = "celerity:delayed"
    /// Lock held (SET NX PX) by the worker sweeping dead workers' processing lists.
    public static let recoveryLock = "celerity:lock:recovery"
    /// Revoked task ids: sorted set scored by the time the revocation expires (unix seconds).
    public static let revoked = "celerity:revoked"
    /// Revoked task ids whose running execution must also be terminated (same scoring).
    public static let revokedTerminate = "celerity:revoked:terminate"

    /// GCRA state of a task's global rate limit: the theoretical arrival time (Redis ms).
    public static func rateState(_ task: String) -> String { "celerity:rate:" + task }
    /// The reserved turn (Redis ms) of a message parked by its rate limit.
    public static func rateTurn(_ taskID: String) -> String { "celerity:rate-turn:" + taskID }
    /// Messages parked by a task's rate limit (sorted set scored by when they go back to
    /// their queue, Redis ms; members `<list key>\0<id>\0<message>`).
    public static func rateParked(_ task: String) -> String { "celerity:rate-wait:" + task }
    /// Tasks with messages parked by a rate limit or waiting for a cap place (a set).
    public static let limitedTasks = "celerity:limited"
    /// The task history: a list of JSON records of outcomes, newest first, trimmed to the
    /// workers' `history` length (`EventWire.writeHistory`; the dashboard reads it).
    public static let history = "celerity:history"
    /// Tasks finished in one minute by all workers (hash: processed, failed, retried), for
    /// the dashboard's graphs; kept `minuteTotalsTTL` seconds.
    public static func minuteTotals(_ unixMinute: Int) -> String { "celerity:minute:" + String(unixMinute) }
    public static let minuteTotalsTTL = 172_800
    /// Rates set at run time by `rate_limit` (hash: task → tasks per second; 0: none).
    public static let rateOverrides = "celerity:rate-conf"
    /// Ids of a capped task running now (sorted set scored by lease end, Redis ms).
    public static func running(_ task: String) -> String { "celerity:cap:" + task }
    /// Messages of a capped task waiting for a place (`<list key>\0<id>\0<message>`).
    public static func capWaiting(_ task: String) -> String { "celerity:cap-wait:" + task }

    /// Queues paused cluster-wide (a set of queue names, `QueuePause`): every worker reads it
    /// at start-up and then once a second, and does not fetch from a queue in it (messages
    /// stay queued; those already fetched finish). Removing a name resumes the queue.
    public static let paused = "celerity:paused"
}
