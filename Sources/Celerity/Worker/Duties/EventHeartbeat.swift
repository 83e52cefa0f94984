import Foundation

/// Celery's worker heartbeat (celery/worker/heartbeat.py): a `worker-heartbeat` event every
/// `interval` (2 s) with `freq` = the interval in seconds, `active`, `processed`, `loadavg` and
/// `sw_*`. Sent whether task events are on or not, as a Python worker does: monitors (Flower,
/// `celery events`) list a worker as online while its heartbeats arrive (alive until
/// `freq` × 2 after the last one). Queued on the dispatcher, which publishes it.
struct EventHeartbeat: Duty {
    let events: EventDispatcher
    let interval: Duration
    /// (active, processed) now.
    let counts: @Sendable () -> (active: Int, processed: Int)

    var freq: Double { EventWire.seconds(interval) }

    func fields() -> [JSONMember] {
        let c = counts()
        return EventDispatcher.workerFields(freq: freq, active: c.active, processed: c.processed)
    }

    func once() async -> Duration? {
        events.send("worker-heartbeat", fields: fields())
        return nil
    }
}
