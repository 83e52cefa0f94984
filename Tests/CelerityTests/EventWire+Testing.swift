@testable import Celerity
import RedisClient

/// Events as a test hands them to `EventWire`: what the dispatcher writes at once where each
/// happens (`EventDispatcher.send`, `received`, `started`, `finished`), in one list.
enum PendingEvent {
    /// Any event with its fields: a worker event (published alone) or a task event.
    case plain(type: String, clock: Int, at: Double, fields: [JSONMember])
    /// `task-received`, and `task-started` with it when `alsoStarted`.
    case received(TaskMessage, clock: Int, at: Double, alsoStarted: Bool)
    case started(id: String, clock: Int, at: Double)
    /// An outcome's event; `announce`: its received and started first (`clock`: the last of three).
    case finished(Outcome, retried: Bool, announce: Bool, clock: Int, at: Double)
    /// A batch of inline runs, each announced (`clock`: the batch's last).
    case finishedBatch([(Outcome, Disposal)], clock: Int, at: Double)
}

extension EventWire {
    /// Writes a task event as the dispatcher does: one record (an outcome announced: its
    /// received, started and end events). Worker events: nothing.
    func render(_ event: PendingEvent, into buffer: inout RecordBuffer) {
        switch event {
        case let .plain(type, clock, at, fields):
            guard type.hasPrefix("task-") else { return }
            buffer.append { writePlain(type, clock, at, fields, into: &$0) }
        case let .received(message, clock, at, alsoStarted):
            withUnsafePointer(to: message) { renderReceived($0, alsoStarted: alsoStarted, clock: clock, at: at, into: &buffer) }
        case let .started(id, clock, at):
            renderStarted(id, clock: clock, at: at, into: &buffer)
        case let .finished(outcome, retried, announce, clock, at):
            withUnsafePointer(to: outcome) { renderOutcome($0, retried: retried, announce: announce, clock: clock, at: at, into: &buffer) }
        case let .finishedBatch(outcomes, last, at):
            renderBatch(outcomes, last: last, at: at, into: &buffer)
        }
    }

    /// The PUBLISH commands for `events`, in order, as a flush writes them: task events
    /// gathered in `task.multi` messages (`pipeline`), each worker event alone, where it came.
    func commands(_ events: [PendingEvent]) -> [RedisCommand] {
        var out: [RedisCommand] = []
        var tasks = RecordBuffer()
        var batch = RESPBatch()
        func flushTasks() {
            var from = 0
            while from < tasks.count {
                batch.removeAll()
                from += pipeline(tasks, from: from, into: &batch)
                out += batch.commands ?? []
            }
            tasks.removeAll()
        }
        for event in events {
            if case let .plain(type, clock, at, fields) = event, !type.hasPrefix("task-") {
                flushTasks()
                batch.removeAll()
                appendWorkerEvent(WorkerEvent(type: type, clock: clock, at: at, fields: fields), into: &batch)
                out += batch.commands ?? []
            } else {
                render(event, into: &tasks)
            }
        }
        flushTasks()
        return out
    }
}

extension RecordBuffer {
    /// Each record alone.
    var records: [[UInt8]] {
        var from = 0
        return ends.map { end in
            defer { from = end }
            return Array(bytes[from..<end])
        }
    }
}
