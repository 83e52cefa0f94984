import Foundation
import RedisClient

/// A worker event (`worker-online`, `-heartbeat`, `-offline`) waiting for the flusher as it
/// was sent (few: one every 2 s). Task events are written as JSON at once, into a `RecordBuffer`.
struct WorkerEvent: Sendable {
    let type: String
    let clock: Int
    let at: Double
    let fields: [JSONMember]
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
    /// A message holds task events until its body passes this many bytes. Its envelope (the
    /// body in base64, 4/3 of it, and ~330 bytes) stays small for Redis: an argument of 32 KiB
    /// or more takes Redis's "big argument" path (a fresh query buffer each time); measured
    /// with -E, 48 KiB bodies cost Redis ~7% of the machine in page faults alone.
    var maxBatchBytes = 8 * 1024
    /// A flush writes its PUBLISHes in pipelines of about this many bytes: both copies of a
    /// pipeline (ours, RESP-encoded, and hiredis's output buffer) stay below glibc's mmap
    /// threshold (128 KiB), so they reuse heap memory instead of faulting in fresh pages.
    var maxPipelineBytes = 96 * 1024
    static let taskMulti = "task.multi"
    /// `{"hostname":"<node>","utcoffset":<h>,"pid":<pid>,"clock":`
    private var prefix: [UInt8] = []
    /// The constant parts of every envelope: before the base64 body; after it up to the
    /// routing key; after the routing key up to the delivery tag; the end.
    private let envelopeHead: [UInt8]
    private let envelopeMiddle: [UInt8]
    private let envelopeTail: [UInt8]
    private static let envelopeEnd: [UInt8] = Array(#""}}"#.utf8)
    private static let publishName: StaticString = "PUBLISH"
    /// The task.multi channel and its routing key in JSON (every task event batch).
    private let taskMultiChannel: [UInt8]
    private let taskMultiKey: [UInt8]

    init(node: String, pid: Int, channelPrefix: String) {
        self.node = node
        self.pid = pid
        self.channelPrefix = channelPrefix
        envelopeHead = Array(#"{"body":""#.utf8)
        var middle = Array(#"","content-encoding":"utf-8","content-type":"application/json","headers":{"hostname":"#.utf8)
        JSONValue.writeString(node, into: &middle)
        middle.append(contentsOf: #"},"properties":{"delivery_mode":1,"delivery_info":{"exchange":"celeryev","routing_key":"#.utf8)
        envelopeMiddle = middle
        envelopeTail = Array(#"},"priority":0,"body_encoding":"base64","delivery_tag":""#.utf8)
        taskMultiChannel = Array((channelPrefix + Self.taskMulti).utf8)
        var key: [UInt8] = []
        JSONValue.writeString(Self.taskMulti, into: &key)
        taskMultiKey = key
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

    /// What a pipeline's buffer is given at first: `maxPipelineBytes` and the largest
    /// envelope that may end it.
    var pipelineCapacity: Int { maxPipelineBytes + Base64.encodedCount(maxBatchBytes + 4096) + 1024 }

    /// `task-received`, and `task-started` after it when `alsoStarted` (`clock`: the last).
    func renderReceived(_ m: UnsafePointer<TaskMessage>, alsoStarted: Bool, clock: Int, at: Double, into buffer: inout RecordBuffer) {
        let parts = ReceivedParts(m)
        let bound = receivedRoom(m, parts) + (alsoStarted ? startedRoom(m.pointee.id) : 0)
        buffer.append(upTo: bound) { c in
            putReceived(m, parts, clock: alsoStarted ? clock - 1 : clock, at: at, into: &c)
            if alsoStarted {
                c.put(ASCII.comma)
                putStarted(m.pointee.id, clock: clock, at: at, into: &c)
            }
        }
    }

    /// `task-started` on the usual path.
    func renderStarted(_ id: String, clock: Int, at: Double, into buffer: inout RecordBuffer) {
        buffer.append(upTo: startedRoom(id)) { putStarted(id, clock: clock, at: at, into: &$0) }
    }

    /// The event of an outcome; `announce`: its `task-received` and `task-started` first
    /// (`clock` is the last of three), timed when it began (`at` less its runtime).
    func renderOutcome(_ o: UnsafePointer<Outcome>, retried: Bool, announce: Bool, clock: Int, at: Double, into buffer: inout RecordBuffer) {
        let end = FinishedParts(o, retried: retried)
        var bound = finishedRoom(o, end)
        var received: ReceivedParts?
        if announce {
            let m = o.pointer(to: \.message)!
            let parts = ReceivedParts(m)
            received = parts
            bound += receivedRoom(m, parts) + startedRoom(m.pointee.id)
        }
        buffer.append(upTo: bound) { c in
            if let received {
                let began = at - (o.pointee.runtime.map(Self.seconds) ?? 0)
                putReceived(o.pointer(to: \.message)!, received, clock: clock - 2, at: began, into: &c)
                c.put(ASCII.comma)
                putStarted(o.pointee.message.id, clock: clock - 1, at: began, into: &c)
                c.put(ASCII.comma)
            }
            putFinished(o, end, clock: clock, at: at, into: &c)
        }
    }

    /// Each outcome of a batch of inline runs announced (three clock values each; `last`: the
    /// batch's last), a record per outcome. In place (`Outcome.forEachInPlace`): a copy of each
    /// outcome cost ~3% of the worker's CPU.
    func renderBatch(_ outcomes: [(Outcome, Disposal)], last: Int, at: Double, into buffer: inout RecordBuffer) {
        var clock = last - 3 * outcomes.count
        Outcome.forEachInPlace(outcomes) { outcome, disposal in
            clock += 3
            if Self.isCompact(outcome) {
                appendCompact(outcome, clock: clock, at: at, into: &buffer)
            } else {
                renderOutcome(outcome, retried: disposal.pointee.isRetry, announce: true, clock: clock, at: at, into: &buffer)
            }
        }
    }

    // MARK: Announced successes, kept compact

    /// A batch's announced successes (nearly all of a drain's outcomes) are kept compact where
    /// they happen: their clock, times and the raw bytes of their fields, a few copies. The
    /// flusher writes their JSON (`pipeline`), on the writer's thread at nice 10. Measured
    /// (perf, a drain with -E): writing the three events' JSON on the worker's threads, under
    /// the dispatcher's mutex, was ~1.2 µs a task, on the two threads that run the tasks.
    /// A JSON record starts with `{`; a compact one with this byte.
    static let compactMark: UInt8 = 0x01

    /// The kinds of a compact record's fields: null; text to escape into a JSON string; text
    /// to write between quotes as it is (an integer); a JSON string as it is.
    enum Field {
        static let null: UInt8 = 0, escape: UInt8 = 1, quote: UInt8 = 2, json: UInt8 = 3
    }

    /// Whether an outcome of a batch of inline runs is kept compact: a success with no eta or expiry.
    private static func isCompact(_ o: UnsafePointer<Outcome>) -> Bool {
        guard case .success = o.pointee.result else { return false }
        return o.pointee.message.eta == nil && o.pointee.message.expires == nil
    }

    /// Appends the compact record of an announced success (`isCompact`).
    private func appendCompact(_ o: UnsafePointer<Outcome>, clock: Int, at: Double, into buffer: inout RecordBuffer) {
        guard case let .success(value) = o.pointee.result else { return }
        let m = o.pointer(to: \.message)!
        let parts = ReceivedParts(m)
        let result = ReprText(value)
        let runtime = (o.pointee.runtime ?? .zero).components
        let bound = 1 + 5 * 8 + 7 * 5 + m.pointee.id.utf8.count + m.pointee.task.utf8.count + (m.pointee.rootID?.utf8.count ?? 0)
            + (m.pointee.parentID?.utf8.count ?? 0) + parts.args.bound + parts.kwargs.bound + result.bound
        buffer.append(upTo: bound) { c in
            c.put(Self.compactMark)
            c.putWord(UInt64(bitPattern: Int64(clock)))
            c.putWord(at.bitPattern)
            c.putWord(UInt64(bitPattern: runtime.seconds))
            c.putWord(UInt64(bitPattern: runtime.attoseconds))
            c.putWord(UInt64(bitPattern: Int64(m.pointee.retries)))
            Self.putField(Field.escape, m.pointee.id, into: &c)
            Self.putField(Field.escape, m.pointee.task, into: &c)
            parts.args.putField(into: &c)
            parts.kwargs.putField(into: &c)
            Self.putField(Field.escape, m.pointee.rootID, into: &c)
            Self.putField(Field.escape, m.pointee.parentID, into: &c)
            result.putField(into: &c)
        }
    }

    static func putField(_ kind: UInt8, _ text: String?, into c: inout ByteCursor) {
        guard var text else {
            c.putField(Field.null, UnsafeBufferPointer(start: nil, count: 0))
            return
        }
        text.withUTF8 { c.putField(kind, $0) }
    }

    private static func putJSON(_ field: (kind: UInt8, bytes: UnsafeBufferPointer<UInt8>), into c: inout ByteCursor) {
        switch field.kind {
        case Field.null: c.put("null")
        case Field.escape: c.putJSONString(field.bytes)
        case Field.quote:
            c.put(ASCII.quote)
            c.put(field.bytes)
            c.put(ASCII.quote)
        default: c.put(field.bytes)
        }
    }

    /// The most bytes `putCompact` writes for a compact record of `count` bytes (each field
    /// byte escaped at most 6 times over, the id three times).
    private func expandedRoom(_ count: Int) -> Int { 3 * (prefix.count + Self.eventRoom) + 18 * count }

    /// The JSON of a compact record: the bytes `renderOutcome(announce: true)` writes.
    private func putCompact(_ record: UnsafeBufferPointer<UInt8>, into c: inout ByteCursor) {
        var r = ByteReader(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: record[1...])))
        let clock = r.int()
        let at = Double(bitPattern: r.word())
        let runtime = Duration(secondsComponent: Int64(r.int()), attosecondsComponent: Int64(r.int()))
        let retries = r.int()
        let id = r.field(), task = r.field(), args = r.field(), kwargs = r.field(), root = r.field(), parent = r.field(), result = r.field()
        let began = at - Self.seconds(runtime)
        putOpen(clock - 2, into: &c)
        for (key, field) in [(#","uuid":"# as StaticString, id), (#","name":"#, task), (#","args":"#, args), (#","kwargs":"#, kwargs),
                             (#","root_id":"#, root), (#","parent_id":"#, parent)] {
            c.put(key)
            Self.putJSON(field, into: &c)
        }
        c.put(#","retries":"#)
        c.putInt(retries)
        c.put(#","eta":null,"expires":null"#)
        putClose("task-received", began, into: &c)
        c.put(ASCII.comma)
        putOpen(clock - 1, into: &c)
        c.put(#","uuid":"#)
        Self.putJSON(id, into: &c)
        putClose("task-started", began, into: &c)
        c.put(ASCII.comma)
        putOpen(clock, into: &c)
        c.put(#","uuid":"#)
        Self.putJSON(id, into: &c)
        c.put(#","result":"#)
        Self.putJSON(result, into: &c)
        c.put(#","runtime":"#)
        c.putSeconds(runtime)
        putClose("task-succeeded", at, into: &c)
    }

    /// Appends record `bytes` to a message body as JSON (a compact one written out, through
    /// `scratch`).
    private func appendJSON(_ bytes: UnsafeBufferPointer<UInt8>, to body: inout [UInt8], scratch: inout [UInt8]) {
        guard bytes.first == Self.compactMark else {
            body.append(contentsOf: bytes)
            return
        }
        let room = expandedRoom(bytes.count)
        if scratch.count < room { scratch = [UInt8](repeating: 0, count: max(room, 2 * scratch.count)) }
        let used = scratch.withUnsafeMutableBufferPointer { s in
            var c = ByteCursor(s)
            putCompact(bytes, into: &c)
            return c.count
        }
        scratch.withUnsafeBufferPointer { body.append(contentsOf: UnsafeBufferPointer(rebasing: $0[..<used])) }
    }

    /// Record `i` of `buffer` as JSON (its events, separated by commas), as a message carries it.
    func json(of buffer: RecordBuffer, record i: Int) -> [UInt8] {
        var out: [UInt8] = [], scratch: [UInt8] = []
        buffer.bytes.withUnsafeBufferPointer { appendJSON(UnsafeBufferPointer(rebasing: $0[buffer.start(of: i)..<buffer.ends[i]]), to: &out, scratch: &scratch) }
        return out
    }

    /// Writes the PUBLISH of a worker event (`worker-heartbeat`: alone, on its routing key).
    func appendWorkerEvent(_ event: WorkerEvent, into out: inout RESPBatch) {
        var body: [UInt8] = []
        writePlain(event.type, event.clock, event.at, event.fields, into: &body)
        appendPublish(body, routingKey: event.type.replacingOccurrences(of: "-", with: "."), into: &out)
    }

    /// Writes the PUBLISH commands of the task events of `buffer` from its record `from` (up to
    /// record `limit`, or all) into `out` (RESP): `task.multi` messages of about
    /// `maxBatchBytes` of JSON each (a message ends between two records), about
    /// `maxPipelineBytes` of them; returns how many records
    /// they hold. A flush writes a pipeline, sends it, then writes the next: only one
    /// pipeline's envelopes are alive at a time (all of a busy flush's, megabytes, made glibc
    /// give back and fault in fresh heap pages each flush).
    func pipeline(_ buffer: RecordBuffer, from: Int, to limit: Int? = nil, into out: inout RESPBatch) -> Int {
        let limit = min(limit ?? buffer.count, buffer.count)
        let start = out.bytes.count
        var body: [UInt8] = [], scratch: [UInt8] = []
        body.reserveCapacity(maxBatchBytes + 4096)
        var i = from
        buffer.bytes.withUnsafeBufferPointer { bytes in
            var begin = buffer.start(of: i)
            while i < limit {
                let end = buffer.ends[i]
                body.append(body.isEmpty ? ASCII.openBracket : ASCII.comma)
                appendJSON(UnsafeBufferPointer(rebasing: bytes[begin..<end]), to: &body, scratch: &scratch)
                begin = end
                i += 1
                if body.count >= maxBatchBytes {
                    body.append(ASCII.closeBracket)
                    appendPublish(body, routingKey: Self.taskMulti, into: &out)
                    body.removeAll(keepingCapacity: true)
                    if out.bytes.count - start >= maxPipelineBytes { break }
                }
            }
        }
        if !body.isEmpty {
            body.append(ASCII.closeBracket)
            appendPublish(body, routingKey: Self.taskMulti, into: &out)
        }
        return i - from
    }

    // MARK: Bodies

    private func open(_ clock: Int, into out: inout [UInt8]) {
        out.append(contentsOf: prefix)
        Self.writeInt(clock, into: &out)
    }

    private func close(_ type: String, _ at: Double, into out: inout [UInt8]) {
        out.append(contentsOf: #","timestamp":"#.utf8)
        Self.writeSeconds(at, into: &out)
        out.append(contentsOf: #","type":"#.utf8)
        JSONValue.writeString(type, into: &out)
        out.append(ASCII.closeBrace)
    }

    /// A decimal integer, digit by digit (no String).
    static func writeInt(_ n: Int, into out: inout [UInt8]) {
        if n < 0 {
            out.append(contentsOf: String(n).utf8)
            return
        }
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &digits) { d in
            var v = UInt(n), i = d.count
            repeat {
                i -= 1
                d[i] = 0x30 + UInt8(v % 10)
                v /= 10
            } while v > 0
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: d[i...]))
        }
    }

    /// Seconds to the microsecond (a timestamp): `1001.75`, `1764700000.123456`; always a
    /// decimal point, as Python's float repr has. Out of the usual range (negative, beyond
    /// year 33658, not finite): Swift's own shortest form.
    static func writeSeconds(_ s: Double, into out: inout [UInt8]) {
        guard s >= 0, s < 1e12 else {
            out.append(contentsOf: s.description.utf8)
            return
        }
        let micros = Int((s * 1e6).rounded())
        writeFixed(micros / 1_000_000, fraction: micros % 1_000_000, digits: 6, into: &out)
    }

    /// A duration in seconds to the nanosecond (a runtime): `0.25`, `0.000012345`.
    static func writeSeconds(_ d: Duration, into out: inout [UInt8]) {
        let c = d.components
        guard c.seconds >= 0, c.attoseconds >= 0 else {
            out.append(contentsOf: seconds(d).description.utf8)
            return
        }
        writeFixed(Int(c.seconds), fraction: Int(c.attoseconds / 1_000_000_000), digits: 9, into: &out)
    }

    /// `whole.fraction`, the fraction `digits` wide less its trailing zeros (at least one digit).
    private static func writeFixed(_ whole: Int, fraction: Int, digits: Int, into out: inout [UInt8]) {
        writeInt(whole, into: &out)
        out.append(ASCII.dot)
        var f = fraction, width = digits
        while width > 1 && f % 10 == 0 {
            f /= 10
            width -= 1
        }
        let start = out.count
        out.append(contentsOf: repeatElement(0x30, count: width))
        var i = out.count
        while f > 0 && i > start {
            i -= 1
            out[i] = 0x30 + UInt8(f % 10)
            f /= 10
        }
    }

    private func key(_ k: String, into out: inout [UInt8]) {
        out.append(ASCII.comma)
        JSONValue.writeString(k, into: &out)
        out.append(ASCII.colon)
    }

    /// `,"<k>":` for a key known when compiled (nothing in it to escape).
    func name(_ k: StaticString, into out: inout [UInt8]) {
        out.append(ASCII.comma)
        out.append(ASCII.quote)
        k.withUTF8Buffer { out.append(contentsOf: $0) }
        out.append(ASCII.quote)
        out.append(ASCII.colon)
    }

    func string(_ k: StaticString, _ v: String?, into out: inout [UInt8]) {
        name(k, into: &out)
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

    // MARK: Task events, through a cursor

    /// The room an event takes besides its prefix and its strings: keys, punctuation,
    /// numbers (clock, retries, runtime, timestamp: 40 bytes each at most), type, nulls.
    private static let eventRoom = 512

    /// What a `task-received` holds besides the message's ids: its reprs and dates, made (and
    /// measured) before it is written.
    struct ReceivedParts {
        let args: ReprText
        let kwargs: ReprText
        let eta: String?
        let expires: String?

        init(_ m: UnsafePointer<TaskMessage>) {
            args = m.pointee.argsRepr.map(ReprText.escaped) ?? ReprText(.array(m.pointee.args))
            kwargs = m.pointee.kwargsRepr.map(ReprText.escaped) ?? (m.pointee.kwargs.isEmpty ? .literal(#""{}""#) : ReprText(.object(m.pointee.kwargs)))
            eta = m.pointee.eta.map(CeleryDate.format)
            expires = m.pointee.expires.map(CeleryDate.format)
        }
    }

    private func receivedRoom(_ m: UnsafePointer<TaskMessage>, _ parts: ReceivedParts) -> Int {
        prefix.count + Self.eventRoom + ByteCursor.bound(m.pointee.id) + ByteCursor.bound(m.pointee.task)
            + parts.args.bound + parts.kwargs.bound + Self.bound(m.pointee.rootID) + Self.bound(m.pointee.parentID)
            + Self.bound(parts.eta) + Self.bound(parts.expires)
    }

    private func startedRoom(_ id: String) -> Int { prefix.count + Self.eventRoom + ByteCursor.bound(id) }

    private static func bound(_ s: String?) -> Int { s.map(ByteCursor.bound) ?? 4 }

    private func putOpen(_ clock: Int, into c: inout ByteCursor) {
        c.put(prefix)
        c.putInt(clock)
    }

    /// `,"timestamp":<at>,"type":"<type>"}`
    private func putClose(_ type: StaticString, _ at: Double, into c: inout ByteCursor) {
        c.put(#","timestamp":"#)
        c.putSeconds(at)
        c.put(#","type":""#)
        c.put(type)
        c.put(#""}"#)
    }

    private static func putOptional(_ s: String?, into c: inout ByteCursor) {
        if let s { c.putJSONString(s) } else { c.put("null") }
    }

    /// Celery's `task-received` (celery/worker/strategy.py): name, args and kwargs as repr
    /// strings (the message's `argsrepr` and `kwargsrepr` headers, as a Python worker sends
    /// them; ours when it has none), root_id, parent_id, retries, eta and expires (ISO 8601 or null).
    private func putReceived(_ m: UnsafePointer<TaskMessage>, _ parts: ReceivedParts, clock: Int, at: Double, into c: inout ByteCursor) {
        putOpen(clock, into: &c)
        c.put(#","uuid":"#)
        c.putJSONString(m.pointee.id)
        c.put(#","name":"#)
        c.putJSONString(m.pointee.task)
        c.put(#","args":"#)
        parts.args.put(into: &c)
        c.put(#","kwargs":"#)
        parts.kwargs.put(into: &c)
        c.put(#","root_id":"#)
        Self.putOptional(m.pointee.rootID, into: &c)
        c.put(#","parent_id":"#)
        Self.putOptional(m.pointee.parentID, into: &c)
        c.put(#","retries":"#)
        c.putInt(m.pointee.retries)
        c.put(#","eta":"#)
        Self.putOptional(parts.eta, into: &c)
        c.put(#","expires":"#)
        Self.putOptional(parts.expires, into: &c)
        putClose("task-received", at, into: &c)
    }

    private func putStarted(_ id: String, clock: Int, at: Double, into c: inout ByteCursor) {
        putOpen(clock, into: &c)
        c.put(#","uuid":"#)
        c.putJSONString(id)
        putClose("task-started", at, into: &c)
    }

    /// What the event of an outcome holds besides its id, made (and measured) before it is written.
    enum FinishedParts {
        case succeeded(ReprText)
        case failed(exception: String, traceback: String?, retried: Bool)
        case revoked(signal: Int32?, expired: Bool)
        case rejected(requeue: Bool)

        init(_ o: UnsafePointer<Outcome>, retried: Bool) {
            switch o.pointee.result {
            case let .success(value): self = .succeeded(ReprText(value))
            case let .failure(f):
                self = .failed(exception: PythonRepr.exception(type: f.type, message: f.message), traceback: f.traceback ?? "", retried: retried)
            case .notRegistered:
                // As Celery's consumer reports an unknown task (celery/worker/consumer/consumer.py).
                self = .failed(exception: PythonRepr.exception(type: "NotRegistered", message: o.pointee.message.task), traceback: nil, retried: false)
            case let .revoked(f): self = .revoked(signal: f.terminationSignal, expired: f.message == "expired")
            case .handBack: self = .rejected(requeue: true)
            case .refused: self = .rejected(requeue: false)
            }
        }

        var bound: Int {
            switch self {
            case let .succeeded(repr): repr.bound
            case let .failed(exception, traceback, _): ByteCursor.bound(exception) + (traceback.map(ByteCursor.bound) ?? 0)
            case .revoked, .rejected: 0
            }
        }
    }

    private func finishedRoom(_ o: UnsafePointer<Outcome>, _ parts: FinishedParts) -> Int {
        prefix.count + Self.eventRoom + ByteCursor.bound(o.pointee.message.id) + parts.bound
    }

    /// The event of an outcome: succeeded (result repr, runtime), failed or retried
    /// (exception repr, traceback), revoked (terminated, signum, expired), rejected (requeue).
    private func putFinished(_ o: UnsafePointer<Outcome>, _ parts: FinishedParts, clock: Int, at: Double, into c: inout ByteCursor) {
        putOpen(clock, into: &c)
        c.put(#","uuid":"#)
        c.putJSONString(o.pointee.message.id)
        switch parts {
        case let .succeeded(repr):
            c.put(#","result":"#)
            repr.put(into: &c)
            c.put(#","runtime":"#)
            c.putSeconds(o.pointee.runtime ?? .zero)
            putClose("task-succeeded", at, into: &c)
        case let .failed(exception, traceback, retried):
            c.put(#","exception":"#)
            c.putJSONString(exception)
            if let traceback {
                c.put(#","traceback":"#)
                c.putJSONString(traceback)
            }
            putClose(retried ? "task-retried" : "task-failed", at, into: &c)
        case let .revoked(signal, expired):
            c.put(signal != nil ? #","terminated":true,"signum":"# : #","terminated":false,"signum":"#)
            if let signal { c.putInt(Int(signal)) } else { c.put("null") }
            c.put(expired ? #","expired":true"# : #","expired":false"#)
            putClose("task-revoked", at, into: &c)
        case let .rejected(requeue):
            c.put(requeue ? #","requeue":true"# : #","requeue":false"#)
            putClose("task-rejected", at, into: &c)
        }
    }

    static func seconds(_ d: Duration) -> Double {
        let c = d.components
        return Double(c.seconds) + Double(c.attoseconds) / 1e18
    }

    // MARK: Envelope

    /// Writes `PUBLISH <channel> <envelope>` into `out`: kombu's envelope as captured from a
    /// Python worker (docs/monitoring-notes.md §3), in place, its body in base64 written
    /// straight where it goes. The body stays base64, as kombu sends it: measured, escaping
    /// the body's JSON text into a JSON string instead (kombu takes a body with
    /// `body_encoding` null as it is) cost the worker more CPU than base64 does, a
    /// byte-by-byte loop against base64's 3 bytes a step, and Redis no less.
    func appendPublish(_ body: [UInt8], routingKey: String, into out: inout RESPBatch) {
        out.command(arguments: 3)
        out.argument(Self.publishName)
        let key: [UInt8]
        if routingKey == Self.taskMulti {
            out.argument(taskMultiChannel)
            key = taskMultiKey
        } else {
            out.argument(Array((channelPrefix + routingKey).utf8))
            var k: [UInt8] = []
            JSONValue.writeString(routingKey, into: &k)
            key = k
        }
        let tag = FastUUID.string()
        out.bulkHeader(envelopeHead.count + Base64.encodedCount(body.count) + envelopeMiddle.count + key.count
            + envelopeTail.count + tag.utf8.count + Self.envelopeEnd.count)
        out.bytes.append(contentsOf: envelopeHead)
        Base64.append(body, to: &out.bytes)
        out.bytes.append(contentsOf: envelopeMiddle)
        out.bytes.append(contentsOf: key)
        out.bytes.append(contentsOf: envelopeTail)
        out.bytes.append(contentsOf: tag.utf8)
        out.bytes.append(contentsOf: Self.envelopeEnd)
        out.endBulk()
    }
}

/// Standard base64 (with padding).
enum Base64 {
    private static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    /// The length of `n` bytes in base64.
    static func encodedCount(_ n: Int) -> Int { (n + 2) / 3 * 4 }

    /// Appends `bytes` in base64 to `out`.
    static func append(_ bytes: [UInt8], to out: inout [UInt8]) {
        let start = out.count
        out.append(contentsOf: repeatElement(0, count: encodedCount(bytes.count)))
        out.withUnsafeMutableBufferPointer { o in _ = encode(bytes, into: UnsafeMutableBufferPointer(rebasing: o[start...])) }
    }

    /// Each 12 bits of input as its two characters (the first in the low byte): one lookup
    /// and one 2-byte store per half of a 3-byte group, twice as fast as a lookup per character.
    private static let pairs: [UInt16] = (0..<4096).map { UInt16(alphabet[$0 >> 6]) | UInt16(alphabet[$0 & 63]) << 8 }

    /// Writes `bytes` in base64 at the start of `out` (room for `encodedCount(bytes.count)`
    /// bytes); returns how many it wrote.
    static func encode(_ bytes: [UInt8], into out: UnsafeMutableBufferPointer<UInt8>) -> Int {
        let total = encodedCount(bytes.count)
        precondition(out.count >= total, "base64: no room")
        guard let o = out.baseAddress else { return 0 }
        let raw = UnsafeMutableRawPointer(o)
        return pairs.withUnsafeBufferPointer { pb in
            alphabet.withUnsafeBufferPointer { ab in
                bytes.withUnsafeBufferPointer { bb in
                    guard let p = pb.baseAddress, let a = ab.baseAddress, let b = bb.baseAddress else { return 0 }
                    let n = bb.count
                    var i = 0, j = 0
                    while i + 3 <= n {
                        let v = Int(b[i]) << 16 | Int(b[i + 1]) << 8 | Int(b[i + 2])
                        raw.storeBytes(of: p[v >> 12].littleEndian, toByteOffset: j, as: UInt16.self)
                        raw.storeBytes(of: p[v & 0xFFF].littleEndian, toByteOffset: j + 2, as: UInt16.self)
                        i += 3
                        j += 4
                    }
                    let rest = n - i
                    if rest > 0 {
                        let v = UInt32(b[i]) << 16 | (rest == 2 ? UInt32(b[i + 1]) << 8 : 0)
                        o[j] = a[Int(v >> 18)]
                        o[j + 1] = a[Int(v >> 12 & 63)]
                        o[j + 2] = rest == 2 ? a[Int(v >> 6 & 63)] : UInt8(ascii: "=")
                        o[j + 3] = UInt8(ascii: "=")
                        j += 4
                    }
                    return j
                }
            }
        }
    }
}
