import Foundation
import RedisClient

/// How one worker runs. Defaults are Celery's where Celery has one.
public struct WorkerConfiguration: Sendable {
    /// Node name (`-n`); also names this worker's processing list, so it should be stable
    /// across restarts of "the same" worker and unique among live workers.
    public var node: String
    public var queues: [String]
    /// The queues are "every queue of the manifest" (no `-Q`): a reload consumes the queues
    /// its manifest adds and stops consuming those it drops.
    public var queuesFromManifest = false
    /// Tasks run at once (`-c`).
    public var concurrency: Int
    /// Messages fetched ahead of execution: up to `concurrency × prefetchMultiplier` are held
    /// (in this worker's processing list) at once. Celery's `worker_prefetch_multiplier`, same
    /// default (4); use 1 for long tasks so idle workers get them instead.
    public var prefetchMultiplier: Int = 4
    public var broker: RedisURL
    public var resultBackend: ResultBackendConfig
    /// Longest wait of one blocking fetch; also bounds how fast a stop request is noticed.
    public var fetchBlockSeconds: Double = 0.5
    public var heartbeatSeconds: Double = 2
    public var heartbeatTTL: Int = 10
    /// Seconds to wait for in-flight tasks at a graceful stop before giving up on them
    /// (they stay in the processing list and are requeued at the next start).
    public var shutdownGrace: Double = 30
    /// How often dead workers' processing lists are swept.
    public var recoverySeconds: Double = 2
    /// Task events from the start (`-E`, `defaults.events`), as Celery's `worker_send_task_events`;
    /// worker events (online, heartbeat, offline) are sent either way. Switched at run time
    /// through `Worker.events`.
    public var taskEvents: Bool = false
    /// Task outcomes kept in `celerity:history` (the dashboard's task history); 0: none.
    public var history: Int = Manifest.defaultHistory

    public init(node: String, queues: [String], concurrency: Int, broker: RedisURL, resultBackend: ResultBackendConfig) {
        self.node = node
        self.queues = queues
        self.concurrency = concurrency
        self.broker = broker
        self.resultBackend = resultBackend
    }
}
