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
/// at full speed they would cost more than the tasks).
final class ThroughputSummary: Duty {
    struct Counts: Sendable, Equatable { var processed = 0, failed = 0, retried = 0 }
    let interval: Duration
    let logger: Logger
    let counts: @Sendable () -> Counts
    private let last: Mutex<(at: ContinuousClock.Instant, counts: Counts)>

    init(interval: Duration = .seconds(10), logger: Logger, counts: @escaping @Sendable () -> Counts) {
        self.interval = interval
        self.logger = logger
        self.counts = counts
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
        return nil
    }
}
