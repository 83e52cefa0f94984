import Foundation

// The worker's side of Celery's events (Control/Events.swift): the worker heartbeat duty and
// what it says. Task events are queued where messages are taken (`process`, the fast paths)
// and where outcomes end (`record`), each behind one check of `events.isEnabled`.

extension Worker {
    /// Celery's heartbeat interval (celery/worker/heartbeat.py): monitors count a worker
    /// alive for twice this after its last `worker-heartbeat`.
    static let eventHeartbeatInterval: Duration = .seconds(2)

    /// The `worker-heartbeat` duty; its fields are also those of `worker-online` and `worker-offline`.
    var eventHeartbeat: EventHeartbeat {
        EventHeartbeat(events: events, interval: Worker.eventHeartbeatInterval) {
            self.stats.withLock { (active: $0.active, processed: $0.processed) }
        }
    }
}
