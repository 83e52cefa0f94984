import Foundation
import RedisClient

/// The task history (`celerity:history`): one JSON record per outcome, written where the
/// outcome is recorded (`EventDispatcher.finished`, right after its store and ack) into a
/// `RecordBuffer`, and pushed by the event flusher as one LPUSH of up to `historyChunk`
/// records and one LTRIM per flush. A record is written at once rather than later from the
/// outcome: holding each outcome (its message, args, result) until a flush ~25–100 ms later,
/// and freeing it on another thread, cost a draining worker more than writing the record
/// (measured: worker CPU per tiny task +5.9 µs with the outcomes held, against history off).
/// A list rather than a stream: one variadic push per flush costs Redis far less than an XADD
/// per record, and the trim keeps exactly `capacity` records, whatever the batch sizes.
/// Records are small (no value, no traceback, reprs cut at 120 characters); the result
/// backend has the rest.
///
/// `{"id", "task", "state", "worker", "queue", "at", "runtime", "retries", "args"}`, with
/// `received` (when the worker fetched it: written for tasks on the usual path, which may wait
/// there for a slot, their eta or a rate limit; a tiny built-in run where it was fetched
/// starts when it is received),
/// `root_id` (when not the task itself), `parent_id`, `kwargs` (when not empty) and
/// `exception` (FAILURE, RETRY: the exception's repr; REVOKED: revoked, terminated or
/// expired) only when they say something: `state` is Celery's (SUCCESS, FAILURE, RETRY,
/// REVOKED, REJECTED); `at` the end (unix seconds); `runtime` seconds or null. A task's
/// value is not repeated here: the result backend has it.
extension EventWire {
    static let historyChunk = 2000
    static let historyReprSize = 120
    private static let historyKey: [UInt8] = Array(Keys.history.utf8)

    /// Writes the LPUSH and LTRIM commands of the newest `capacity` records of `records` into
    /// `out` (RESP; nothing if there are none): the newest ends at the list's head.
    static func historyCommands(_ records: RecordBuffer, capacity: Int, into out: inout RESPBatch) {
        guard !records.isEmpty, capacity > 0 else { return }
        let first = max(0, records.count - capacity)
        records.bytes.withUnsafeBufferPointer { r in
            var i = first
            while i < records.count {
                let n = min(historyChunk, records.count - i)
                out.command(arguments: 2 + n)
                out.argument("LPUSH")
                out.argument(historyKey)
                var from = records.start(of: i)
                for end in records.ends[i..<(i + n)] {
                    out.bulkHeader(end - from)
                    out.bytes.append(contentsOf: UnsafeBufferPointer(rebasing: r[from..<end]))
                    out.endBulk()
                    from = end
                }
                i += n
            }
        }
        out.command(arguments: 4)
        out.argument("LTRIM")
        out.argument(historyKey)
        out.argument(Array("0".utf8))
        out.argument(Array(String(capacity - 1).utf8))
    }

    /// Appends the record of an outcome to `records` (nothing for a message handed back to
    /// its queue: not an end).
    func appendHistoryRecord(_ o: UnsafePointer<Outcome>, retried: Bool, at: Double, to records: inout RecordBuffer) {
        records.append { writeHistoryRecord(o, retried: retried, at: at, into: &$0) }
    }

    /// Writes one record into `out` (nothing for a message handed back to its queue).
    private func writeHistoryRecord(_ o: UnsafePointer<Outcome>, retried: Bool, at: Double, into out: inout [UInt8]) {
        let state: StaticString
        switch o.pointee.result {
        case .success: state = "SUCCESS"
        case .failure: state = retried ? "RETRY" : "FAILURE"
        case .notRegistered: state = "FAILURE"
        case .revoked: state = "REVOKED"
        case .refused: state = "REJECTED"
        case .handBack: return
        }
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
        if let received = o.pointee.message.receivedAt {
            name("received", into: &out)
            Self.writeSeconds(received, into: &out)
        }
        name("retries", into: &out)
        Self.writeInt(o.pointee.message.retries, into: &out)
        // Only what differs from the usual: a root that is not the task itself, a parent,
        // kwargs (each record is written for every task: its size is the history's cost).
        if let root = o.pointee.message.rootID, root != o.pointee.message.id { string("root_id", root, into: &out) }
        if let parent = o.pointee.message.parentID { string("parent_id", parent, into: &out) }
        name("args", into: &out)
        PythonRepr.writeJSONString(.array(o.pointee.message.args), into: &out, maxSize: Self.historyReprSize)
        if !o.pointee.message.kwargs.isEmpty {
            name("kwargs", into: &out)
            PythonRepr.writeJSONString(.object(o.pointee.message.kwargs), into: &out, maxSize: Self.historyReprSize)
        }
        // A value is in the result backend (the task page reads it there); an exception is
        // kept here too, short: the task list shows why a task failed.
        switch o.pointee.result {
        case .success, .refused, .handBack:
            break
        case let .failure(f):
            name("exception", into: &out)
            JSONValue.writeString(String(PythonRepr.exception(type: f.type, message: f.message).prefix(Self.historyReprSize * 2)), into: &out)
        case .notRegistered:
            name("exception", into: &out)
            JSONValue.writeString(PythonRepr.exception(type: "NotRegistered", message: o.pointee.message.task), into: &out)
        case let .revoked(f):
            name("exception", into: &out)
            JSONValue.writeString(f.terminationSignal != nil ? "terminated" : (f.message == "expired" ? "expired" : "revoked"), into: &out)
        }
        out.append(ASCII.closeBrace)
    }
}
