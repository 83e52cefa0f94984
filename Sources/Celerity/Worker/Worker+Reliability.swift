import Foundation
import Logging
import RedisClient

extension Worker {
    /// Every `recoverySeconds`: hand back the in-flight messages of workers whose heartbeat
    /// expired (any live worker may do it; a lock keeps it to one at a time).
    func recoveryLoop() async {
        while !Task.isCancelled {
            do { try await Task.sleep(for: .milliseconds(Int(config.recoverySeconds * 1000))) } catch { return }
            if isStopping { continue }
            do {
                let (requeued, dead, workers) = try await broker.recoverDeadWorkers(maxRedeliveries: manifest.maxRedeliveries)
                if requeued + dead > 0 {
                    logger.warning("recovered the in-flight messages of dead workers", metadata: [
                        "workers": .string(workers.joined(separator: ",")), "requeued": .stringConvertible(requeued),
                        "dead_lettered_poison_pills": .stringConvertible(dead)])
                }
            } catch {
                if !dutyAlarm.permissionDenied("recovery sweep", error, logger: logger) { logger.warning("recovery sweep failed: \(error)") }
            }
        }
    }

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
            await requeue(raw, queue: queue, message: message, log, why: "worker stopping: message not started, returned to the head of its queue")
            return false
        }
        if !holds {
            broker.forget(raw)
            log.warning("not started: another worker took this message back while this one was stalled (its heartbeat had lapsed)")
        }
        return holds
    }

    /// Twice a second: the revoked ids (kept in memory for the per-task check) and the ones to
    /// terminate (their running executions here are cancelled).
    func revocationLoop() async {
        while !Task.isCancelled {
            do { try await Task.sleep(for: .milliseconds(500)) } catch { return }
            await refreshRevocations()
        }
    }

    /// Reads the revoked ids (and terminates running ones that must be); called before the
    /// first fetch and then twice a second.
    func refreshRevocations() async {
            do {
                let now = Date().timeIntervalSince1970
                let commands = [
                    RedisCommand("ZREMRANGEBYSCORE", Keys.revoked, "-inf", now),
                    RedisCommand("ZREMRANGEBYSCORE", Keys.revokedTerminate, "-inf", now),
                    RedisCommand("ZRANGE", Keys.revoked, 0, 99_999),
                    RedisCommand("ZRANGE", Keys.revokedTerminate, 0, 99_999),
                ]
                let replies = try await broker.control.pipeline(commands)
                for (r, c) in zip(replies, commands) { try r.throwingError(naming: c) }
                let ids = Set(replies[2].array?.compactMap(\.string) ?? [])
                let terminate = Set(replies[3].array?.compactMap(\.string) ?? [])
                revoked.withLock { $0 = ids.union(terminate) }
                if !terminate.isEmpty {
                    for entry in inflight.withLock({ Array($0.values) }) where terminate.contains(entry.taskID) {
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
            } catch {
                if !dutyAlarm.permissionDenied("revocation poll", error, logger: logger) { logger.debug("revocation poll failed: \(error)") }
            }
    }

    /// Warm shutdown: after a stop request, tasks in flight get `shutdownGrace` seconds; what is
    /// still running then is handed back to the head of its queue. Cold shutdown (the task is
    /// cancelled, e.g. a second SIGTERM/SIGINT): handed back at once.
    func stopWatchdog() async {
        while !isStopping && !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(100))
        }
        if Task.isCancelled && !isStopping {
            // Cancelled without a stop request: the whole worker is going away (cold).
            requestStop()
        }
        while !Task.isCancelled && !isColdStop && !graceExpired && !inflight.withLock({ $0.isEmpty }) {
            try? await Task.sleep(for: .milliseconds(100))
        }
        let cold = Task.isCancelled || isColdStop
        let entries = inflight.withLock { Array($0.values) }
        if entries.isEmpty { return }
        for p in persistentPools { p.stopNow() }
        logger.warning(cold ? "cold shutdown: handing tasks in flight back to their queues" : "shutdown grace period over: handing tasks in flight back to their queues",
                       metadata: ["count": .stringConvertible(entries.count)])
        for entry in entries {
            let mine = entry.fate.withLock { f -> Bool in
                guard f == .running else { return false }
                f = .abandoned
                return true
            }
            guard mine else { continue }
            do { try await broker.requeue(entry.raw, listKey: entry.listKey) } catch {
                logger.error("could not hand a task back (it stays in the processing list and is recovered at restart): \(error)", metadata: ["task_id": .string(entry.taskID)])
            }
            entry.task.withLock { $0 }?.cancel()
        }
    }
}
