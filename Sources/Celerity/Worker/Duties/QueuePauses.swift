import Foundation
import Logging

/// Every second: reads the queues paused cluster-wide (`celerity:paused`, set by `QueuePause`:
/// `celerity queue pause`, the dashboard) and stops or restarts this worker's fetching from
/// them. The worker also runs one round at start-up, before its first fetch, so a worker
/// started while a queue is paused never fetches from it.
///
/// Pausing a consumed queue cancels its consumer, exactly as `cancel_consumer` does: its fetch
/// loops end after the fetch under way (what that fetch brings goes back to the head of the
/// queue), and what was fetched before still runs and is acked. Unlike `cancel_consumer`, the
/// queue stays among those the worker is asked to consume (`RuntimeSettings`), so resuming it
/// starts new fetch loops (`resume`). The fetch loops never ask Redis about pauses.
///
/// Threads: a child task of the worker's background group, on Swift's pool; owns no thread.
struct QueuePauses: Duty {
    let broker: WorkerBroker
    let runtime: RuntimeSettings
    let interval: Duration
    let alarm: DutyAlarm
    let logger: Logger
    /// Starts the fetch loops of a resumed queue.
    let resume: @Sendable (QueueConsumer) -> Void

    func once() async -> Duration? {
        do {
            apply(try await broker.pausedQueues())
        } catch {
            // Redis away or the set refused: fetching goes on as it was (paused queues stay paused).
            if !alarm.permissionDenied("queue pause poll", error, logger: logger) { logger.debug("reading the paused queues failed: \(error)") }
        }
        return nil
    }

    /// Makes this worker's fetching follow `paused` (the whole set).
    func apply(_ paused: Set<String>) {
        let change = runtime.setPaused(paused)
        for q in change.paused {
            logger.info("queue paused: not fetching from it until it is resumed (celerity queue resume)", metadata: ["queue": .string(q)])
        }
        for consumer in change.resumed {
            resume(consumer)
            logger.info("queue resumed: fetching from it again", metadata: ["queue": .string(consumer.name)])
        }
    }
}
