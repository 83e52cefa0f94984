import Foundation
import Logging
import Synchronization

/// The upkeep of global rate limits and concurrency caps (`TaskGate`). Every 250 ms: puts the
/// messages parked by a rate limit whose turn is near back on their queues (any worker may:
/// the script decides who moves each one). Every second: renews the leases of the capped
/// tasks running here, gives the places of lapsed leases (a crashed worker's) to waiting
/// messages, and reads the rates that `rate_limit` set for every worker.
final class GateKeeper: Duty, Sendable {
    let gate: TaskGate
    let alarm: DutyAlarm
    let logger: Logger
    private let rounds = Atomic<Int>(0)
    var interval: Duration { .milliseconds(250) }

    init(gate: TaskGate, alarm: DutyAlarm, logger: Logger) {
        self.gate = gate
        self.alarm = alarm
        self.logger = logger
    }

    func once() async -> Duration? {
        var failed = false
        // Each part on its own: a refusal in one (a queue this worker may not write) must not
        // stop the others (the leases above all).
        for (task, all) in gate.rateLimitedTasks {
            do {
                let n = try await gate.forward(task, all: all)
                if n > 0 { logger.debug("rate limit: parked messages back on their queues for their turn", metadata: ["task": .string(task), "count": .stringConvertible(n)]) }
            } catch {
                failed = true
                report(error)
            }
        }
        if rounds.wrappingAdd(1, ordering: .relaxed).newValue % 4 == 0 {
            do { try await gate.maintain() } catch {
                failed = true
                report(error)
            }
        }
        return failed ? .seconds(1) : nil
    }

    private func report(_ error: any Error) {
        if !alarm.permissionDenied("rate limits and concurrency caps", error, logger: logger) {
            logger.debug("rate limit / concurrency cap upkeep failed: \(error)")
        }
    }
}
