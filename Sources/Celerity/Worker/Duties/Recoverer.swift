import Foundation
import Logging
import RedisClient

/// Every `interval`: hands back the in-flight messages of workers whose heartbeat expired
/// (any live worker may do it; a lock keeps it to one at a time; each move checks, in its
/// script, that the owner's heartbeat is still gone).
struct Recoverer: Duty {
    let broker: WorkerBroker
    let maxRedeliveries: Int
    let interval: Duration
    let alarm: DutyAlarm
    let logger: Logger
    let isStopping: @Sendable () -> Bool

    func once() async -> Duration? {
        if isStopping() { return nil }
        do {
            let (requeued, dead, workers) = try await broker.recoverDeadWorkers(maxRedeliveries: maxRedeliveries)
            if requeued + dead > 0 {
                logger.warning("recovered the in-flight messages of dead workers", metadata: [
                    "workers": .string(workers.joined(separator: ",")), "requeued": .stringConvertible(requeued),
                    "dead_lettered_poison_pills": .stringConvertible(dead)])
            }
        } catch {
            if !alarm.permissionDenied("recovery sweep", error, logger: logger) { logger.warning("recovery sweep failed: \(error)") }
        }
        return nil
    }
}
