import Foundation
import Synchronization
import Logging
import RedisClient

/// Writes this worker's heartbeat every `interval` (TTL `ttl`) and renews its lease on the
/// processing list (`Lease`) from the moment each write left.
struct Heartbeat: Duty {
    let broker: WorkerBroker
    let lease: Lease
    let ttl: Int
    let interval: Duration
    let alarm: DutyAlarm
    let logger: Logger
    /// The heartbeat document (node, pid, queues, counts, ...), read at each round.
    let document: @Sendable () -> JSONValue

    /// Writes the heartbeat now; throws what Redis said.
    func beat() async throws {
        let sent = ContinuousClock.now
        try await broker.heartbeat(document(), ttl: ttl)
        lease.renewed(sentAt: sent, ttl: .seconds(ttl))
    }

    /// Tries three times, 200 ms apart, when the connection failed: a heartbeat that waited
    /// for the next round after each reset could lapse under a storm of connection resets,
    /// and other workers would then take this worker's list back.
    func once() async -> Duration? {
        for attempt in 1...3 {
            do {
                try await beat()
                return nil
            } catch let e as RedisError where e.isConnectionProblem && attempt < 3 {
                try? await Task.sleep(for: .milliseconds(200))
            } catch {
                if !alarm.permissionDenied("heartbeat", error, logger: logger) { logger.warning("heartbeat failed: \(error)") }
                return nil
            }
        }
        return nil
    }
}

/// Every 10 s, one info line of what ran since the last one (per-task lines are debug-level:
/// at full speed they would cost more than the tasks), and the same counts added to the
/// cluster's per-minute totals in Redis (`store`: the dashboard's throughput graphs).
final class ThroughputSummary: Duty {
    struct Counts: Sendable, Equatable { var processed = 0, failed = 0, retried = 0 }
    let interval: Duration
    let logger: Logger
    let counts: @Sendable () -> Counts
    /// Adds what ran since the round before to the per-minute totals.
    let store: (@Sendable (Counts) async -> Void)?
    private let last: Mutex<(at: ContinuousClock.Instant, counts: Counts)>

    init(interval: Duration = .seconds(10), logger: Logger, counts: @escaping @Sendable () -> Counts,
         store: (@Sendable (Counts) async -> Void)? = nil) {
        self.interval = interval
        self.logger = logger
        self.counts = counts
        self.store = store
        last = Mutex((ContinuousClock.now, counts()))
    }

    func once() async -> Duration? {
        let now = counts()
        let (elapsed, before) = last.withLock { l in
            defer { l = (ContinuousClock.now, now) }
            return (l.at.duration(to: .now), l.counts)
        }
        guard now.processed != before.processed else { return nil }
        let secs = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        logger.info("tasks done", metadata: [
            "processed": .stringConvertible(now.processed - before.processed), "failed": .stringConvertible(now.failed - before.failed),
            "retried": .stringConvertible(now.retried - before.retried),
            "per_s": .string(String(format: "%.0f", Double(now.processed - before.processed) / max(secs, 0.001))),
            "total": .stringConvertible(now.processed)])
        await store?(Counts(processed: now.processed - before.processed, failed: now.failed - before.failed, retried: now.retried - before.retried))
        return nil
    }
}
