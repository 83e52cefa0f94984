import Foundation
import Logging
import RedisClient

extension Worker {
    /// Whether `raw`, fetched before a lapse of the lease (see `Lease`), may still start here.
    /// Waits until the heartbeat is renewed (from then on no other worker moves anything out
    /// of this worker's list), then asks Redis whether the message is still in the list. If
    /// not, another worker took it back while this one was stalled: it is forgotten here, not
    /// run. A stop meanwhile hands it back (if it is still ours).
    func ownsStill(_ raw: [UInt8], queue: String, message: TaskMessage, _ log: TaskLog) async -> Bool {
        while lease.current() == nil && !isStopping {
            try? await Task.sleep(for: .milliseconds(50))
        }
        let still: Bool?? = isStopping ? nil : try? await withRedisRetry("check ownership") { try await self.broker.stillHolds(raw) }
        guard let known = still, let holds = known else {
            // Stopping, or Redis refused the check: not started; back to its queue if still ours.
            await requeue(raw, queue: queue, message: message, log, why: "message not started (worker stopping, or its ownership could not be checked): returned to the head of its queue")
            return false
        }
        if !holds {
            broker.forget(raw)
            log.warning("not started: another worker took this message back while this one was stalled (its heartbeat had lapsed)")
        }
        return holds
    }

    /// Cancels the executions here of the revoked ids to terminate (`revoke --terminate`).
    /// A one-shot plugin's process group gets `signal` at once, and is stopped as before
    /// (SIGTERM, then SIGKILL after its grace period) if it still runs `grace` seconds later;
    /// anything else (a built-in, a persistent plugin's call) is cancelled now.
    func terminate(_ ids: Set<String>, signal: Int32 = SIGTERM, grace: Double = 3) {
        for entry in inflight.withLock({ Array($0.values) }) where ids.contains(entry.taskID) {
            let first = entry.fate.withLock { f -> Bool in
                guard f == .running else { return false }
                f = .revoked
                return true
            }
            guard first else { continue }
            entry.terminatedBy.store(signal, ordering: .relaxed)
            logger.warning("terminating a revoked task", metadata: ["task_id": .string(entry.taskID), "signal": .string(Signals.name(signal))])
            if signal != SIGTERM, entry.cancellation?.deliver(signal) == true {
                Task {
                    try? await Task.sleep(for: .milliseconds(Int(grace * 1000)))
                    entry.task.withLock { $0 }?.cancel()
                }
            } else {
                entry.task.withLock { $0 }?.cancel()
            }
        }
    }
}
