import Foundation
import RedisClient

/// An event waiting in the dispatcher's buffer: what the worker's hot paths hand over (a few
/// references and numbers); its JSON is written by the flusher (`EventWire`).
enum PendingEvent: Sendable {
    /// Any event, with its fields (worker events; task events from elsewhere).
    case plain(type: String, clock: Int, at: Double, fields: [JSONMember])
    /// `task-received` for a message taken for running, and `task-started` with it when it
    /// starts at once (a persistent plugin's call sent where it arrived).
    case received(TaskMessage, clock: Int, at: Double, alsoStarted: Bool)
    /// `task-started` on the usual path (after an execution slot).
    case started(id: String, clock: Int, at: Double)
    /// The outcome's event (`Worker.record`); `announce`: preceded by `task-received` and
    /// `task-started` (a tiny built-in run where it was fetched: `clock` is the last of three).
    case finished(Outcome, retried: Bool, announce: Bool, clock: Int, at: Double)
}

/// Writes events as Celery's dispatcher sends them (celery/events/dispatcher.py, kombu's Redis
/// transport): each body `{"hostname", "utcoffset", "pid", "clock", <fields>, "timestamp",
/// "type"}`; task events gathered into JSON arrays on routing key `task.multi`, worker events
/// one per message on their own routing key (`worker.heartbeat`); each message a kombu
/// envelope with its body in base64, PUBLISHed on `/<db>.celeryev/<routing key>`.
struct EventWire {
    let node: String
    let pid: Int
    let channelPrefix: String
    /// A message holds task events until its body passes this many bytes.
    var maxBatchBytes = 48 * 1024
    /// `{"hostname":"<node>","utcoffset":<h>,"pid":<pid>,"clock":`
    private var prefix: [UInt8] = []

    init(node: String, pid: Int, channelPrefix: String) {
        self.node = node
        self.pid = pid
        self.channelPrefix = channelPrefix
        refreshOffset()
    }

    /// Hours west of UTC now (Python's `time.timezone` or `time.altzone` / 3600: 0.0 on a UTC
    /// host, -5.5 in India): receivers shift `timestamp` by it.
    static func utcOffsetHours(_ zone: TimeZone = .current, at date: Date = Date()) -> Double {
        Double(-zone.secondsFromGMT(for: date)) / 3600
    }

    /// Re-reads the time zone's offset (a flush does it first: DST may have begun).
    mutating func refreshOffset() {
        var p: [UInt8] = []
        p.append(contentsOf: #"{"hostname":"#.utf8)
        JSONValue.writeString(node, into: &p)
        p.append(contentsOf: #","utcoffset":"#.utf8)
        p.append(contentsOf: Self.utcOffsetHours().description.utf8)
        p.append(contentsOf: #","pid":"#.utf8)
        p.append(contentsOf: String(pid).utf8)
        p.append(contentsOf: #","clock":"#.utf8)
        prefix = p
    }

    /// The PUBLISH commands for `events`, in order: task events batched, worker events alone.
    func commands(_ events: [PendingEvent]) -> [RedisCommand] {
        var out: [RedisCommand] = []
        var batch: [UInt8] = []
        batch.reserveCapacity(min(maxBatchBytes + 2048, 256 * events.count + 16))
        func flushBatch() {
            guard !batch.isEmpty else { return }
            batch.append(ASCII.closeBracket)
            out.append(publish(batch, routingKey: "task.multi"))
            batch.removeAll(keepingCapacity: true)
        }
        func startTaskEvent() {
            batch.append(batch.isEmpty ? ASCII.openBracket : ASCII.comma)
        }
        for event in events {
            switch event {
            case let .plain(type, clock, at, fields) where !type.hasPrefix("task-"):
                var body: [UInt8] = []
                writePlain(type, clock, at, fields, into: &body)
                out.append(publish(body, routingKey: type.replacingOccurrences(of: "-", with: ".")))
            case let .plain(type, clock, at, fields):
                startTaskEvent()
                writePlain(type, clock, at, fields, into: &batch)
            case let .received(message, clock, at, alsoStarted):
                startTaskEvent()
                writeReceived(message, clock: alsoStarted ? clock - 1 : clock, at: at, into: &batch)
                if alsoStarted {
                    batch.append(ASCII.comma)
                    writeStarted(message.id, clock: clock, at: at, into: &batch)
                }
            case let .started(id, clock, at):
                startTaskEvent()
                writeStarted(id, clock: clock, at: at, into: &batch)
            case let .finished(outcome, retried, announce, clock, at):
                startTaskEvent()
                if announce {
                    let began = at - (outcome.runtime.map(Self.seconds) ?? 0)
                    writeReceived(outcome.message, clock: clock - 2, at: began, into: &batch)
                    batch.append(ASCII.comma)
                    writeStarted(outcome.message.id, clock: clock - 1, at: began, into: &batch)
                    batch.append(ASCII.comma)
                }
                writeFinished(outcome, retried: retried, clock: clock, at: at, into: &batch)
            }
            if batch.count >= maxBatchBytes { flushBatch() }
        }
        flushBatch()
        return out
    }

    // MARK: Bodies

    private func open(_ clock: Int, into out: inout [UInt8]) {
        out.append(contentsOf: prefix)
        out.append(contentsOf: String(clock).utf8)
    }

    private func close(_ type: String, _ at: Double, into out: inout [UInt8]) {
        out.append(contentsOf: #","timestamp":"#.utf8)
        out.append(contentsOf: at.description.utf8)
        out.append(contentsOf: #","type":"#.utf8)
        JSONValue.writeString(type, into: &out)
        out.append(ASCII.closeBrace)
    }

    private func key(_ k: String, into out: inout [UInt8]) {
        out.append(ASCII.comma)
        JSONValue.writeString(k, into: &out)
        out.append(ASCII.colon)
    }

    private func string(_ k: String, _ v: String?, into out: inout [UInt8]) {
        key(k, into: &out)
        if let v { JSONValue.writeString(v, into: &out) } else { out.append(contentsOf: "null".utf8) }
    }

    func writePlain(_ type: String, _ clock: Int, _ at: Double, _ fields: [JSONMember], into out: inout [UInt8]) {
        open(clock, into: &out)
        for f in fields {
            key(f.key, into: &out)
            f.value.write(into: &out)
        }
        close(type, at, into: &out)
    }

    /// Celery's `task-received` (celery/worker/strategy.py): name, args and kwargs as repr
    /// strings, root_id, parent_id, retries, eta and expires (ISO 8601 or null).
    func writeReceived(_ m: TaskMessage, clock: Int, at: Double, into out: inout [UInt8]) {
        open(clock, into: &out)
        string("uuid", m.id, into: &out)
        string("name", m.task, into: &out)
        string("args", PythonRepr.args(m.args), into: &out)
        string("kwargs", PythonRepr.kwargs(m.kwargs), into: &out)
        string("root_id", m.rootID, into: &out)
        string("parent_id", m.parentID, into: &out)
        key("retries", into: &out)
        out.append(contentsOf: String(m.retries).utf8)
        string("eta", m.eta.map(CeleryDate.format), into: &out)
        string("expires", m.expires.map(CeleryDate.format), into: &out)
        close("task-received", at, into: &out)
    }

    func writeStarted(_ id: String, clock: Int, at: Double, into out: inout [UInt8]) {
        open(clock, into: &out)
        string("uuid", id, into: &out)
        close("task-started", at, into: &out)
    }

    /// The event of an outcome: succeeded (result repr, runtime), failed or retried
    /// (exception repr, traceback), revoked (terminated, signum, expired), rejected (requeue).
    func writeFinished(_ o: Outcome, retried: Bool, clock: Int, at: Double, into out: inout [UInt8]) {
        open(clock, into: &out)
        string("uuid", o.message.id, into: &out)
        let type: String
        switch o.result {
        case let .success(value):
            type = "task-succeeded"
            string("result", PythonRepr.of(value), into: &out)
            key("runtime", into: &out)
            out.append(contentsOf: (o.runtime.map(Self.seconds) ?? 0).description.utf8)
        case let .failure(f):
            type = retried ? "task-retried" : "task-failed"
            string("exception", PythonRepr.exception(type: f.type, message: f.message), into: &out)
            string("traceback", f.traceback ?? "", into: &out)
        case .notRegistered:
            // As Celery's consumer reports an unknown task (celery/worker/consumer/consumer.py).
            type = "task-failed"
            string("exception", PythonRepr.exception(type: "NotRegistered", message: o.message.task), into: &out)
        case let .revoked(f):
            type = "task-revoked"
            let signal = f.terminationSignal
            key("terminated", into: &out)
            out.append(contentsOf: (signal != nil ? "true" : "false").utf8)
            key("signum", into: &out)
            out.append(contentsOf: (signal.map { String($0) } ?? "null").utf8)
            key("expired", into: &out)
            out.append(contentsOf: (f.message == "expired" ? "true" : "false").utf8)
        case .handBack:
            type = "task-rejected"
            key("requeue", into: &out)
            out.append(contentsOf: "true".utf8)
        case .refused:
            type = "task-rejected"
            key("requeue", into: &out)
            out.append(contentsOf: "false".utf8)
        }
        close(type, at, into: &out)
    }

    static func seconds(_ d: Duration) -> Double {
        let c = d.components
        return Double(c.seconds) + Double(c.attoseconds) / 1e18
    }

    // MARK: Envelope

    /// kombu's envelope (as captured from a Python worker: docs/monitoring-notes.md §3).
    func publish(_ body: [UInt8], routingKey: String) -> RedisCommand {
        var env: [UInt8] = []
        env.reserveCapacity(body.count * 4 / 3 + 320)
        env.append(contentsOf: #"{"body":""#.utf8)
        Base64.append(body, to: &env)
        env.append(contentsOf: #"","content-encoding":"utf-8","content-type":"application/json","headers":{"hostname":"#.utf8)
        JSONValue.writeString(node, into: &env)
        env.append(contentsOf: #"},"properties":{"delivery_mode":1,"delivery_info":{"exchange":"celeryev","routing_key":"#.utf8)
        JSONValue.writeString(routingKey, into: &env)
        env.append(contentsOf: #"},"priority":0,"body_encoding":"base64","delivery_tag":""#.utf8)
        env.append(contentsOf: FastUUID.string().utf8)
        env.append(contentsOf: #""}}"#.utf8)
        return RedisCommand([Array("PUBLISH".utf8), Array((channelPrefix + routingKey).utf8), env])
    }
}

/// Standard base64 (with padding), appended to a byte buffer.
enum Base64 {
    private static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    static func append(_ bytes: [UInt8], to out: inout [UInt8]) {
        alphabet.withUnsafeBufferPointer { a in
            bytes.withUnsafeBufferPointer { b in
                let n = b.count
                var i = 0
                while i + 3 <= n {
                    let v = UInt32(b[i]) << 16 | UInt32(b[i + 1]) << 8 | UInt32(b[i + 2])
                    out.append(a[Int(v >> 18)])
                    out.append(a[Int(v >> 12 & 63)])
                    out.append(a[Int(v >> 6 & 63)])
                    out.append(a[Int(v & 63)])
                    i += 3
                }
                let rest = n - i
                if rest > 0 {
                    let v = UInt32(b[i]) << 16 | (rest == 2 ? UInt32(b[i + 1]) << 8 : 0)
                    out.append(a[Int(v >> 18)])
                    out.append(a[Int(v >> 12 & 63)])
                    out.append(rest == 2 ? a[Int(v >> 6 & 63)] : UInt8(ascii: "="))
                    out.append(UInt8(ascii: "="))
                }
            }
        }
    }
}
