import Foundation
import RedisClient

extension PendingEvent {
    /// A worker event (`worker-online`, `-heartbeat`, `-offline`): sent with task events off too.
    var isWorkerEvent: Bool {
        if case let .plain(type, _, _, _) = self { return !type.hasPrefix("task-") }
        return false
    }
}

/// The task history (`celerity:history`): one JSON record per outcome, written by the event
/// flusher from the outcomes queued for it (off the hot path, ~25–100 ms after the outcome),
/// as one LPUSH of up to `historyChunk` records and one LTRIM per flush. A list rather than a
/// stream: one variadic push per flush costs Redis far less than an XADD per record, and the
/// trim keeps exactly `capacity` records, whatever the batch sizes. Records are small (no
/// traceback, reprs cut at 120 characters); the result backend has the rest.
///
/// `{"id", "task", "state", "worker", "queue", "at", "runtime", "retries", "root_id",
///   "parent_id", "args", "kwargs", "result"}`: `state` is Celery's (SUCCESS, FAILURE, RETRY,
/// REVOKED, REJECTED); `at` the end (unix seconds); `runtime` seconds or null; `result` the
/// repr of the value, or of the exception for FAILURE and RETRY.
extension EventWire {
    static let historyChunk = 2000
    static let historyReprSize = 120

    /// The LPUSH and LTRIM commands writing the outcomes among `events` (none if there are none).
    func historyCommands(_ events: [PendingEvent], capacity: Int) -> [RedisCommand] {
        var records: [[UInt8]] = []
        var commands: [RedisCommand] = []
        func push() {
            guard !records.isEmpty else { return }
            commands.append(RedisCommand([Self.lpushName, Self.historyKey] + records))
            records.removeAll(keepingCapacity: true)
        }
        for event in events {
            switch event {
            case let .finished(outcome, retried, _, _, at):
                withUnsafePointer(to: outcome) { o in
                    if let r = historyRecord(o, retried: retried, at: at) { records.append(r) }
                }
            case let .finishedBatch(outcomes, _, at):
                Outcome.forEachInPlace(outcomes) { o, d in
                    if let r = historyRecord(o, retried: d.pointee.isRetry, at: at) { records.append(r) }
                }
            default: continue
            }
            if records.count >= Self.historyChunk { push() }
        }
        push()
        guard !commands.isEmpty else { return [] }
        commands.append(RedisCommand("LTRIM", Keys.history, 0, capacity - 1))
        return commands
    }

    private static let lpushName: [UInt8] = Array("LPUSH".utf8)
    private static let historyKey: [UInt8] = Array(Keys.history.utf8)

    /// One record; nil for an outcome that is not an end (a message handed back to its queue).
    func historyRecord(_ o: UnsafePointer<Outcome>, retried: Bool, at: Double) -> [UInt8]? {
        let state: StaticString
        switch o.pointee.result {
        case .success: state = "SUCCESS"
        case .failure: state = retried ? "RETRY" : "FAILURE"
        case .notRegistered: state = "FAILURE"
        case .revoked: state = "REVOKED"
        case .refused: state = "REJECTED"
        case .handBack: return nil
        }
        var out: [UInt8] = []
        out.reserveCapacity(320)
        out.append(contentsOf: #"{"id":"#.utf8)
        JSONValue.writeString(o.pointee.message.id, into: &out)
        string("task", o.pointee.message.task, into: &out)
        name("state", into: &out)
        out.append(ASCII.quote)
        state.withUTF8Buffer { out.append(contentsOf: $0) }
        out.append(ASCII.quote)
        string("worker", node, into: &out)
        string("queue", o.pointee.message.queue, into: &out)
        name("at", into: &out)
        Self.writeSeconds(at, into: &out)
        name("runtime", into: &out)
        if let r = o.pointee.runtime { Self.writeSeconds(r, into: &out) } else { out.append(contentsOf: "null".utf8) }
        name("retries", into: &out)
        Self.writeInt(o.pointee.message.retries, into: &out)
        string("root_id", o.pointee.message.rootID, into: &out)
        string("parent_id", o.pointee.message.parentID, into: &out)
        name("args", into: &out)
        PythonRepr.writeJSONString(.array(o.pointee.message.args), into: &out, maxSize: Self.historyReprSize)
        name("kwargs", into: &out)
        if o.pointee.message.kwargs.isEmpty { out.append(contentsOf: #""{}""#.utf8) } else {
            PythonRepr.writeJSONString(.object(o.pointee.message.kwargs), into: &out, maxSize: Self.historyReprSize)
        }
        name("result", into: &out)
        switch o.pointee.result {
        case let .success(value):
            PythonRepr.writeJSONString(value, into: &out, maxSize: Self.historyReprSize)
        case let .failure(f):
            JSONValue.writeString(String(PythonRepr.exception(type: f.type, message: f.message).prefix(Self.historyReprSize * 2)), into: &out)
        case .notRegistered:
            JSONValue.writeString(PythonRepr.exception(type: "NotRegistered", message: o.pointee.message.task), into: &out)
        case let .revoked(f):
            JSONValue.writeString(f.terminationSignal != nil ? "terminated" : (f.message == "expired" ? "expired" : "revoked"), into: &out)
        case .refused, .handBack:
            out.append(contentsOf: "null".utf8)
        }
        out.append(ASCII.closeBrace)
        return out
    }
}
