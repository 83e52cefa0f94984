import Foundation
import Logging
import RedisClient

/// Every 250 ms, moves due messages of the delayed set (eta, countdown, retries) to their
/// queues. Any worker may do it: the script's ZREM decides who moves each one.
struct DelayedForwarder: Duty {
    let broker: WorkerBroker
    let interval: Duration
    let alarm: DutyAlarm
    let logger: Logger
    let isStopping: @Sendable () -> Bool

    func once() async -> Duration? {
        if isStopping() { return nil }
        do {
            let n = try await broker.moveDue()
            if n > 0 { logger.debug("moved due delayed messages to their queues", metadata: ["count": .stringConvertible(n)]) }
            return nil
        } catch {
            // Redis away: wait a little longer (the fetch loops log the outage).
            if !alarm.permissionDenied("delayed forwarder", error, logger: logger) { logger.debug("moving due delayed messages failed: \(error)") }
            return .seconds(2)
        }
    }
}
