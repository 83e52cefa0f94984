import Foundation
import Logging
import RedisClient

/// Hands back the tasks still in flight when a stop is through with them.
///
/// Warm stop (a stop request): tasks in flight get the grace period (`StopFlag.grace`); what
/// still runs then is handed back to the head of its queue. Cold stop (`isCold`, e.g. a second
/// SIGTERM/SIGINT, or the watchdog's task cancelled with the rest of the worker): handed back
/// at once. Handing back an entry marks its fate `.abandoned` (only if it is still `.running`:
/// one being settled or revoked is left alone), requeues its raw message to its list, cancels
/// its task; persistent plugin pools are stopped first.
///
/// Not a `Duty`: it ends after its one hand-back. Same shape though: `once(cancelled:)` is one
/// look (tests call it, no sleeping), `run(clock:)` looks every `interval` until it is done.
/// Threads: a child task of the worker's background group, on Swift's pool; owns no thread.
struct StopWatchdog: Sendable {
    let broker: WorkerBroker
    let stop: StopFlag
    /// Whether the stop is cold (hand back now, no grace).
    let isCold: @Sendable () -> Bool
    /// The messages being run now.
    let inFlight: @Sendable () -> [InFlight]
    /// Stopped (`stopNow`) before anything is handed back.
    let pools: @Sendable () -> [PersistentPlugin]
    let logger: Logger
    var interval: Duration = .milliseconds(100)

    /// One look. `cancelled`: the worker is going away (a stop is requested now if none was,
    /// and it is cold). True once done: what was in flight is handed back (or nothing was).
    func once(cancelled: Bool) async -> Bool {
        if !stop.isRequested {
            guard cancelled else { return false }
            stop.request()
        }
        let cold = cancelled || isCold()
        if !cold && !stop.graceExpired && !inFlight().isEmpty { return false }
        await handBack(cold: cold)
        return true
    }

    /// Looks every `interval` until done; a cancellation of the task makes the next look cold.
    func run(clock: some Clock<Duration> = ContinuousClock()) async {
        while await !once(cancelled: Task.isCancelled) {
            try? await clock.sleep(for: interval)
        }
    }

    private func handBack(cold: Bool) async {
        let entries = inFlight()
        if entries.isEmpty { return }
        for p in pools() { p.stopNow() }
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
