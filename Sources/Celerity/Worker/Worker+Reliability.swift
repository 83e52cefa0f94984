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
    func terminate(_ ids: Set<String>) {
        for entry in inflight.withLock({ Array($0.values) }) where ids.contains(entry.taskID) {
            let first = entry.fate.withLock { f -> Bool in
                guard f == .running else { return false }
                f = .revoked
                return true
            }
            if first {
                logger.warning("terminating a revoked task", metadata: ["task_id": .string(entry.taskID)])
                entry.task.withLock { $0 }?.cancel()
            }
        }
    }
}
