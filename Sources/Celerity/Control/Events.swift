import Foundation
import Logging
import RedisClient
import Synchronization

/// Celery's monitoring events (celery/events/dispatcher.py), on the broker's Redis as kombu
/// publishes them to the `celeryev` fanout exchange: `PUBLISH /<db>.celeryev/<routing key>`
/// (docs/monitoring.md, "Events"; the wire: docs/monitoring-notes.md §3).
///
/// Worker events (`worker-online`, `worker-heartbeat`, `worker-offline`) are always sent, as a
/// Python worker sends them with or without `-E`. Task events only while `enabled`: off by
/// default, as in Celery; on with `-E`, `defaults.events` in tasks.yaml, or the pidbox's
/// `enable_events` (`enable()` / `disable()`).
///
/// Threads: `send` and the worker's task hooks run wherever the worker is (the fetchers' and
/// plugins' reader threads, the cooperative pool): they take a clock value and write the
/// event's JSON into a buffer (`RecordBuffer`), or, for a batch's announced successes, a
/// compact record of its fields that the flusher writes out (`EventWire.renderBatch`), clocks
/// taken under its mutex (the buffer keeps their order), never touching Redis and holding
/// nothing of the task. The flusher (`run`, a child task of
/// the worker's background group) takes the buffer every `flushInterval` (`busyInterval`
/// while there are events), and hands it to a thread of its own at nice 10 (`BackgroundWriter`),
/// which writes the compact records out and kombu's envelopes around them (`EventWire`,
/// base64) and PUBLISHes them on the
/// dispatcher's own connection, in pipelines of ~96 KiB sent one after the other, their replies
/// read at the end (`send`): one hand-off per flush, its blocking I/O on that thread only.
/// Task events go out gathered as `task.multi` (a JSON array, as a Python worker with -E sends
/// them); worker events one per message. With task events off, the worker's cost per message
/// is one relaxed atomic load (`isEnabled`).
public final class EventDispatcher: Sendable {
    /// The node name: every event's `hostname`.
    public let node: String
    /// Whether task events are sent (Celery's `task` group). Switch it with `enable()` /
    /// `disable()`; read it with `isEnabled`.
    public let enabled: Atomic<Bool>
    /// Lamport clock of this worker's events (Celery's `app.clock`): each event takes the next value.
    let clock = Atomic<Int>(0)
    let redis: Redis
    let logger: Logger
    let flushInterval: Duration
    /// Events (a batch's outcomes counted one by one) held at most, while Redis is away;
    /// newer ones are dropped (counted, and warned of).
    let maxPending: Int
    /// How many outcomes `celerity:history` keeps (0: no history). Each outcome's record is
    /// written when it is recorded (a `RecordBuffer`), and the flusher pushes them.
    let history: Int
    /// Writes the history's records, under the mutex or outside it (its node does not change;
    /// the time zone, which `Pending.wire` re-reads, is not in them).
    private let recordWire: EventWire
    private let pending: Mutex<Pending>
    private let alarm: DutyAlarm?
    /// Where the flusher writes envelopes (a thread at nice 10: `BackgroundWriter`).
    private let writer: BackgroundWriter
    /// How far (events waiting; an outcome announced counts once) the writer may trail before
    /// a flush writes at the worker's priority: ~0.2 s of a drain of tiny tasks at 30,000/s,
    /// ~4 MB of JSON waiting.
    let maxLag = 5_000
    private let lastBehind = Atomic<Bool>(false)
    private let lastWarning = Mutex<ContinuousClock.Instant?>(nil)

    struct Pending {
        /// Writes the events (its time zone offset re-read at each flush).
        var wire: EventWire
        /// Worker events, as they were sent, each with the number of task event records written
        /// before it (the flusher publishes them in that order: the clocks' order).
        var events: [(WorkerEvent, before: Int)] = []
        /// Task events, written.
        var tasks = RecordBuffer()
        /// The buffer of the flush before, emptied with its capacity kept: the next `tasks`.
        /// Two buffers taking turns, never a fresh one (a fresh buffer of a busy flush's events,
        /// ~1 MB, is fresh pages to fault in on every flush).
        var spareTasks = RecordBuffer()
        var dropped = 0
        /// The events in `events` and `tasks` (an outcome's received, started and end: one).
        var held = 0
        /// History records written since the last flush, and the buffer of the flush before.
        var history = RecordBuffer()
        var spareHistory = RecordBuffer()
        var droppedRecords = 0
        var closed = false
    }

    /// `url`: the broker (its db names the channels); task events on from the start when `enabled`.
    public convenience init(url: RedisURL, node: String, enabled: Bool = false, logger: Logger,
                flushInterval: Duration = .milliseconds(100), maxPending: Int = 200_000) {
        self.init(url: url, node: node, enabled: enabled, logger: logger, flushInterval: flushInterval, maxPending: maxPending, alarm: nil)
    }

    init(url: RedisURL, node: String, enabled: Bool, history: Int = 0, logger: Logger, flushInterval: Duration = .milliseconds(100),
         maxPending: Int = 200_000, alarm: DutyAlarm?) {
        self.node = node
        self.history = history
        self.enabled = Atomic(enabled)
        self.redis = Redis(url: url, label: "events-\(node)")
        self.logger = logger
        self.flushInterval = flushInterval
        self.maxPending = maxPending
        self.alarm = alarm
        writer = BackgroundWriter(name: "celerity-events")
        let wire = EventWire(node: node, pid: Int(getpid()), channelPrefix: Self.channelPrefix(db: url.db))
        pending = Mutex(Pending(wire: wire))
        recordWire = wire
    }

    deinit { writer.stop() }

    /// kombu's fanout channel of the `celeryev` exchange on a Redis database: `/<db>.celeryev/`.
    static func channelPrefix(db: Int) -> String { "/\(db).celeryev/" }

    // MARK: Switch

    /// Turns task events on; true if they were off (Celery's `enable_events`).
    public func enable() -> Bool { !enabled.exchange(true, ordering: .relaxed) }

    /// Turns task events off; true if they were on (Celery's `disable_events`).
    public func disable() -> Bool { enabled.exchange(false, ordering: .relaxed) }

    /// Whether task events are on: the one check the worker's hot paths pay per message.
    @inline(__always) public var isEnabled: Bool { enabled.load(ordering: .relaxed) }

    /// Whether outcomes are queued here (`finished`): for task events or the task history.
    @inline(__always) public var wantsOutcomes: Bool { history > 0 || enabled.load(ordering: .relaxed) }

    // MARK: Sending

    /// Queues an event with `fields` (besides the ones every event has: hostname, utcoffset,
    /// pid, clock, timestamp, type); never blocks. A `task-*` event is dropped while task
    /// events are off. It goes out within `flushInterval` (or at `flush()`).
    public func send(_ type: String, fields: [JSONMember]) {
        if type.hasPrefix("task-") {
            guard isEnabled else { return }
            let at = Self.now()
            write(1, clocks: 1) { w, clock, tasks in tasks.append { w.writePlain(type, clock, at, fields, into: &$0) } }
        } else {
            enqueue(type: type, fields: fields)
        }
    }

    /// `task-received` for a message taken for running (before its eta, before a slot);
    /// `alsoStarted`: it starts at once, and `task-started` follows. Callers check `isEnabled`.
    func received(_ message: TaskMessage, alsoStarted: Bool = false) {
        let at = Self.now()
        withUnsafePointer(to: message) { m in
            write(1, clocks: alsoStarted ? 2 : 1) { w, clock, tasks in w.renderReceived(m, alsoStarted: alsoStarted, clock: clock, at: at, into: &tasks) }
        }
    }

    /// `task-started` on the usual path. Callers check `isEnabled`.
    func started(_ id: String) {
        let at = Self.now()
        write(1, clocks: 1) { w, clock, tasks in w.renderStarted(id, clock: clock, at: at, into: &tasks) }
    }

    /// The event of an outcome (`Worker.record`), when task events are on; `announce`:
    /// `task-received` and `task-started` first (it ran where it was fetched). Its history
    /// record, when there is a history. Written under the mutex (one outcome: ~1 µs).
    /// Callers check `wantsOutcomes`.
    func finished(_ outcome: Outcome, retried: Bool, announce: Bool) {
        let at = Self.now()
        let events = isEnabled
        let history = history, maxPending = maxPending
        withUnsafePointer(to: outcome) { o in
            pending.withLock { p in
                guard !p.closed else { return }
                if history > 0 {
                    if p.history.count < maxPending { recordWire.appendHistoryRecord(o, retried: retried, at: at, to: &p.history) } else { p.droppedRecords += 1 }
                }
                guard events else { return }
                if p.held < maxPending {
                    p.held += 1
                    p.wire.renderOutcome(o, retried: retried, announce: announce, clock: tick(announce ? 3 : 1), at: at, into: &p.tasks)
                } else {
                    p.dropped += 1
                }
            }
        }
    }

    /// `finished(_:retried:announce: true)` for a batch of inline runs: its records are
    /// written outside the mutex, then appended under it; its events under the mutex (one
    /// clock reservation), so that the buffer keeps the clocks' order.
    /// Callers check `wantsOutcomes`.
    func finished(announcing batch: [(Outcome, Disposal)]) {
        guard !batch.isEmpty else { return }
        let at = Self.now()
        var records = RecordBuffer()
        if history > 0 {
            Outcome.forEachInPlace(batch) { o, d in recordWire.appendHistoryRecord(o, retried: d.pointee.isRetry, at: at, to: &records) }
        }
        let events = isEnabled
        let maxPending = maxPending
        pending.withLock { p in
            guard !p.closed else { return }
            if !records.isEmpty {
                if p.history.count + records.count <= maxPending { p.history.append(contentsOf: records) } else { p.droppedRecords += records.count }
            }
            guard events else { return }
            if p.held + batch.count <= maxPending {
                p.held += batch.count
                p.wire.renderBatch(batch, last: tick(3 * batch.count), at: at, into: &p.tasks)
            } else {
                p.dropped += batch.count
            }
        }
    }

    /// Writes `n` task events under the mutex (unless more than `maxPending` wait: dropped,
    /// counted and warned of), taking `clocks` clock values there (`body` gets the last):
    /// the buffer, and so the messages, keep the clocks' order, as Celery's receivers expect.
    private func write(_ n: Int, clocks: Int, _ body: (EventWire, Int, inout RecordBuffer) -> Void) {
        let maxPending = maxPending
        pending.withLock { p in
            guard !p.closed else { return }
            if p.held + n > maxPending {
                p.dropped += n
                return
            }
            p.held += n
            body(p.wire, tick(clocks), &p.tasks)
        }
    }

    /// Takes `n` clock values; returns the last.
    private func tick(_ n: Int = 1) -> Int { clock.wrappingAdd(n, ordering: .relaxed).newValue }

    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// What waits to be published (a batch's outcomes counted one by one), and what was dropped
    /// since the last flush.
    var queued: (held: Int, dropped: Int) { pending.withLock { ($0.held, $0.dropped) } }

    /// Queues a worker event (few: one every 2 s), its clock taken under the mutex.
    private func enqueue(type: String, fields: [JSONMember]) {
        let at = Self.now()
        pending.withLock { p in
            guard !p.closed else { return }
            if p.held + 1 > maxPending {
                p.dropped += 1
                return
            }
            p.held += 1
            p.events.append((WorkerEvent(type: type, clock: tick(), at: at, fields: fields), before: p.tasks.count))
        }
    }

    // MARK: Flushing

    /// The flusher: publishes what was queued every `flushInterval` until cancelled; every
    /// `busyInterval` while the flushes before found events (under load: a quarter as much
    /// waits at once).
    func run(clock: some Clock<Duration> = ContinuousClock()) async {
        var busy = false
        while !Task.isCancelled {
            do { try await clock.sleep(for: busy ? min(busyInterval, flushInterval) : flushInterval) } catch { return }
            busy = await publishQueued() > 0
        }
    }

    /// How often the flusher runs while there are events to publish: measured with -E on a
    /// drain of 100,000 tiny tasks when events held their outcomes until the flush, 20–25 ms
    /// instead of 100 ms took the worker's page faults from ~13,000 to ~5,000; kept since (the
    /// buffers waiting stay smaller).
    let busyInterval: Duration = .milliseconds(25)

    /// Publishes every queued event now (pipelines of ~96 KiB). Events that Redis did not take are
    /// dropped, with a warning at most every 30 s (a refused PUBLISH: the duty alarm's error).
    public func flush() async {
        _ = await publishQueued()
    }

    /// `flush()`; returns how many entries it took (a batch of inline runs is one).
    private func publishQueued() async -> Int {
        var events: [(WorkerEvent, before: Int)] = []
        var tasks = RecordBuffer()
        var records = RecordBuffer()
        let (dropped, droppedRecords, waited, w) = pending.withLock { p -> (Int, Int, Int, EventWire) in
            swap(&events, &p.events)
            swap(&tasks, &p.tasks)
            swap(&p.tasks, &p.spareTasks)
            swap(&records, &p.history)
            swap(&p.history, &p.spareHistory)
            p.wire.refreshOffset()
            defer { p.dropped = 0; p.held = 0; p.droppedRecords = 0 }
            return (p.dropped, p.droppedRecords, p.held, p.wire)
        }
        if dropped > 0 { warn("events dropped: more than \(maxPending) waited to be published", ["dropped": .stringConvertible(dropped)]) }
        if droppedRecords > 0 { warn("history records dropped: more than \(maxPending) waited to be written", ["dropped": .stringConvertible(droppedRecords)]) }
        let pushed = await pushHistory(records)
        records.removeAll()
        pending.withLock { $0.spareHistory = records }
        let count = tasks.count
        if count > 0 || !events.isEmpty {
            // The envelopes (base64) are written, and sent, on the writer's thread (lower
            // priority), the whole flush in one hand-off: its pipelines go out one after the
            // other while Redis works through them. A flush that finds more than `maxLag`
            // events waiting (a machine with no CPU to spare for longer than a burst) runs on
            // the connection's own thread, at the worker's priority: events trail a busy worker
            // by a bounded amount, and are never dropped for want of CPU.
            let waiting = waited + queued.held
            let behind = waiting > maxLag
            if behind != lastBehind.exchange(behind, ordering: .relaxed) {
                logger.debug("event writer \(behind ? "behind: writing at the worker's priority" : "caught up: writing at nice 10")", metadata: ["events": .stringConvertible(waiting)])
            }
            let written = tasks, workerEvents = events, redis = self.redis
            let job: @Sendable (RedisSession) -> Sent = { s in Self.send(written, workerEvents, wire: w, on: s) }
            var sent: Sent
            if !behind, let done = await writer.run({ () -> Sent in
                do throws(RedisError) { return try redis.withSessionNow(job) } catch { return Sent(failure: error) }
            }) {
                sent = done
            } else {   // behind, or the writer stopped (after the last flush)
                do { sent = try await redis.withSession(job) } catch { sent = Sent(failure: error) }
            }
            if !sent.errors.isEmpty { report(.success(sent.errors), events: count) }
            if let failure = sent.failure {
                report(.failure(failure), events: count - sent.tasks)
                // The worker events not sent (a heartbeat; the last flush's worker-offline): each
                // on its own, on a fresh connection if Redis takes one, as they always went.
                for (event, _) in workerEvents.dropFirst(sent.workerEvents) {
                    var batch = RESPBatch()
                    w.appendWorkerEvent(event, into: &batch)
                    _ = await publish(batch, events: 1)
                }
            }
        }
        tasks.removeAll()
        pending.withLock { $0.spareTasks = tasks }
        return events.count + count + pushed
    }

    /// Pushes the history records of a flush (the newest `history` of them) and trims the
    /// list; returns how many records there were.
    private func pushHistory(_ records: RecordBuffer) async -> Int {
        guard !records.isEmpty else { return 0 }
        var batch = RESPBatch(capacity: records.bytes.count + 16 * records.count + 256)
        EventWire.historyCommands(records, capacity: history, into: &batch)
        _ = await publish(batch, events: records.count, what: "history records")
        return records.count
    }

    /// A batch of commands (the history's); false if Redis could not be reached.
    private func publish(_ commands: RESPBatch, events: Int, what: String = "events") async -> Bool {
        guard !commands.isEmpty else { return true }
        do {
            report(.success(try await redis.pipelineErrors(commands)), events: events, what: what)
            return true
        } catch {
            report(.failure(error), events: events, what: what)
            return false
        }
    }

    /// Warns of what Redis refused (an error reply: a refused PUBLISH, the duty alarm's error)
    /// or of a flush it could not take (dropped), at most every 30 s.
    private func report(_ sent: Result<[String], any Error>, events: Int, what: String = "events") {
        switch sent {
        case let .success(errors):
            if let first = errors.first {
                let e = RedisError(.server, first)
                if alarm?.permissionDenied("events", e, logger: logger) != true {
                    warn("\(what) not published", ["error": .string(first), "commands": .stringConvertible(errors.count)])
                }
            }
        case let .failure(error):
            if alarm?.permissionDenied("events", error, logger: logger) != true {
                warn("\(what) not published; dropped", ["error": .string("\(error)"), "count": .stringConvertible(events)])
            }
        }
    }

    /// What `send` did: the error replies Redis gave, and, if the connection failed, the error
    /// and how many task event records and worker events had been written before it.
    struct Sent: Sendable {
        var errors: [String] = []
        var failure: (any Error)?
        var tasks = 0
        var workerEvents = 0
    }

    /// Writes the PUBLISHes of a flush and sends them on `session`, in order: the task events
    /// in pipelines of about `EventWire.maxPipelineBytes` (one buffer, reused), each worker
    /// event after the task events written before it (the clocks' order, and the last flush's
    /// worker-offline last). Each pipeline goes out as soon as it is written; replies are read
    /// every `replyWindow` commands and at the end. A failed connection ends it (`Sent.failure`;
    /// the connection is then broken and dropped: no reply is left unread on one in use).
    static func send(_ tasks: RecordBuffer, _ events: [(WorkerEvent, before: Int)], wire w: EventWire, on s: RedisSession) -> Sent {
        var sent = Sent()
        var out = RESPBatch(capacity: w.pipelineCapacity)
        var unread = 0, start = 0, next = 0
        do throws(RedisError) {
            while start < tasks.count || next < events.count {
                if next < events.count && min(events[next].before, tasks.count) <= start {
                    w.appendWorkerEvent(events[next].0, into: &out)
                    next += 1
                } else {
                    start += w.pipeline(tasks, from: start, to: next < events.count ? events[next].before : tasks.count, into: &out)
                }
                try s.write(out)
                (sent.tasks, sent.workerEvents) = (start, next)
                unread += out.count
                out.removeAll()
                if unread >= replyWindow {
                    sent.errors += try s.readErrors(unread)
                    unread = 0
                }
            }
            sent.errors += try s.readErrors(unread)
        } catch {
            sent.failure = error
        }
        return sent
    }

    /// Commands sent before their replies are read: ~100 pipelines of ~96 KiB; their replies
    /// (`:0` or `:1` each, a few KiB) wait in the socket's buffer meanwhile.
    static let replyWindow = 1000

    /// Sends `type` (a last event: `worker-offline`) and publishes everything queued; then
    /// takes no more events.
    func close(last type: String, fields: [JSONMember]) async {
        send(type, fields: fields)
        pending.withLock { $0.closed = true }
        await flush()
        writer.stop()
        await redis.close()
    }

    private func warn(_ message: String, _ metadata: Logger.Metadata) {
        let now = ContinuousClock.now
        let due = lastWarning.withLock { last -> Bool in
            if let l = last, l.duration(to: now) < .seconds(30) { return false }
            last = now
            return true
        }
        if due { logger.warning("\(message)", metadata: metadata) }
    }

    // MARK: Worker events

    /// `sw_ident`, `sw_ver`, `sw_sys` (Python: `py-celery`, `5.7.0`, `Linux`), shown verbatim by monitors.
    public static let software: [JSONMember] = [
        JSONMember("sw_ident", .string("celerity")), JSONMember("sw_ver", .string(CelerityVersion.string)),
        JSONMember("sw_sys", .string(systemName)),
    ]

    static var systemName: String {
        #if os(Linux)
        "Linux"
        #elseif os(macOS)
        "Darwin"
        #else
        "Unknown"
        #endif
    }

    /// The fields of `worker-online`, `worker-heartbeat` and `worker-offline`, as
    /// celery/worker/heartbeat.py sends them: freq, active, processed, loadavg, sw_*.
    public static func workerFields(freq: Double, active: Int, processed: Int) -> [JSONMember] {
        [JSONMember("freq", .number(freq.description)), JSONMember("active", .number(String(active))),
         JSONMember("processed", .number(String(processed))),
         JSONMember("loadavg", .array(loadAverage().map { .number($0.description) }))] + software
    }

    /// The 1, 5 and 15 minute load averages, rounded up to 2 decimals as Celery's
    /// `load_average()` does (glibc reads /proc/loadavg).
    static func loadAverage() -> [Double] {
        var l = [Double](repeating: 0, count: 3)
        guard getloadavg(&l, 3) == 3 else { return [0, 0, 0] }
        return l.map { ($0 * 100).rounded(.up) / 100 }
    }
}
