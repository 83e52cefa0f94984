import Foundation
import Logging
import RedisClient
import Synchronization

/// Twice a second: the revoked task ids, kept in memory for the check before each run, and
/// the ones to terminate, handed to `terminate` (the worker cancels their executions here).
final class Revocations: Duty {
    let broker: WorkerBroker
    let interval: Duration
    let alarm: DutyAlarm
    let logger: Logger
    private let ids = Mutex<Set<String>>([])
    private let terminate = Mutex<(@Sendable (Set<String>) -> Void)?>(nil)

    init(broker: WorkerBroker, interval: Duration = .milliseconds(500), alarm: DutyAlarm, logger: Logger) {
        self.broker = broker
        self.interval = interval
        self.alarm = alarm
        self.logger = logger
    }

    /// Who cancels the executions of ids to terminate (the worker, once it runs).
    func onTerminate(_ handler: @escaping @Sendable (Set<String>) -> Void) { terminate.withLock { $0 = handler } }

    /// Whether `id` was revoked (as of the last round).
    func contains(_ id: String) -> Bool { ids.withLock { $0.contains(id) } }
    /// Every id revoked (as of the last round, and since).
    var all: Set<String> { ids.withLock { $0 } }
    /// Ids revoked by remote control, known here before the next round reads them back.
    func add(_ new: Set<String>) { ids.withLock { $0.formUnion(new) } }

    func once() async -> Duration? {
        do {
            let (all, toTerminate) = try await broker.revocations(now: Date())
            ids.withLock { $0 = all.union(toTerminate) }
            if !toTerminate.isEmpty, let handler = terminate.withLock({ $0 }) { handler(toTerminate) }
        } catch {
            if !alarm.permissionDenied("revocation poll", error, logger: logger) { logger.debug("revocation poll failed: \(error)") }
        }
        return nil
    }
}
