import ArgumentParser
import Celerity
import Foundation
import Synchronization

struct EventsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "events",
        abstract: "Watch the workers' Celery events (Celerity and Python Celery workers alike).",
        discussion: """
        A live view, refreshed every --refresh seconds: the workers (online while their last heartbeat is younger than 2 × its freq, Celery's rule; offline after worker-offline), their active and processed counts, task rates (received/succeeded/failed per second over the last 10 s) and the latest 15 tasks. With --dump: every event as one line of JSON (task.multi batches unpacked), for piping. On a stdout that is not a terminal the live view prints plain frames.

        At start it asks the workers for a heartbeat (as Celery's receiver does; no reply awaited). Task events are off on workers unless started with -E (or turned on remotely): pass --enable-events to send enable_events first (Flower does so at start). Nothing turns them off again at the end (Flower does not either): celerity control disable_events.

        Ctrl-C (or --duration) ends it with exit status 0. Exit status otherwise: 2 bad manifest or URL, 4 Redis cannot be reached, 6 Redis refused access.
        """
    )

    @Flag(name: .long, help: "Print every event as one JSON line instead of the live view.")
    var dump = false

    @Flag(name: .customLong("enable-events"), help: "Send enable_events to the workers first.")
    var enableEvents = false

    @Option(name: .long, help: ArgumentHelp("Refresh the live view every N seconds.", valueName: "N"))
    var refresh: Double = 1

    @Option(name: .long, help: ArgumentHelp("Stop after N seconds (exit 0).", valueName: "N"))
    var duration: Double?

    @OptionGroup var connection: ConnectionOptions

    func validate() throws {
        if !(refresh >= 0.1) { throw ValidationError("--refresh must be at least 0.1 seconds") }
        if let duration, !(duration > 0) { throw ValidationError("--duration must be more than 0 seconds") }
    }

    func run() async throws {
        let receiver: EventReceiver, control: ControlClient
        do {
            let manifest = try await connection.loadManifest(required: false)
            let url = connection.brokerURL(manifest)
            receiver = try EventReceiver(broker: url)
            control = try ControlClient(broker: url)
        } catch {
            throw badInput(error)
        }
        // Writes to a closed pipe (`| head`) end the command quietly instead of killing it.
        signal(SIGPIPE, SIG_IGN)
        do {
            try await receiver.start()
            if enableEvents {
                let r = try await control.broadcast("enable_events", timeout: 1)
                Output.err("enable_events: \(r.count) node\(r.count == 1 ? "" : "s") replied" + (r.isEmpty ? "" : " (" + r.map(\.node).joined(separator: ", ") + ")"))
            }
            try await control.broadcast("heartbeat", reply: false)
        } catch {
            await receiver.stop()
            throw fail("events: cannot subscribe at \(receiver.url): \(error)", CelerityExit(error, otherwise: .redisUnreachable))
        }
        // Ctrl-C, SIGTERM or --duration: unsubscribe, unbind, exit 0.
        let stopper = Stopper(receiver: receiver)
        let signals = stopper.onSignals([SIGINT, SIGTERM])
        defer { signals.forEach { $0.cancel() } }
        if let duration {
            Task {
                try? await Task.sleep(for: .milliseconds(Int(duration * 1000)))
                stopper.stop()
            }
        }
        if dump {
            await Self.dumpEvents(receiver, stopper)
        } else {
            await viewEvents(receiver, stopper)
        }
        // The stream ended: stop() runs and exits.
        while true { try? await Task.sleep(for: .seconds(1)) }
    }

    /// `--dump`: one JSON event per line.
    static func dumpEvents(_ receiver: EventReceiver, _ stopper: Stopper) async {
        for await event in receiver.events {
            if !Output.line(event.serialized()) { stopper.stop() }
        }
    }

    /// The live view, redrawn every `refresh` seconds.
    func viewEvents(_ receiver: EventReceiver, _ stopper: Stopper) async {
        let state = EventsState()
        let consumer = Task { for await event in receiver.events { state.apply(event) } }
        let tty = isatty(STDOUT_FILENO) == 1
        let url = receiver.url.description
        while !stopper.isStopping {
            let frame = state.render(broker: url, now: Date().timeIntervalSince1970, enabledEvents: enableEvents)
            if !Output.write((tty ? "\u{1B}[H\u{1B}[2J" : "\n") + frame) { stopper.stop() }
            Output.flush()
            try? await Task.sleep(for: .milliseconds(Int(refresh * 1000)))
        }
        consumer.cancel()
    }
}

/// Ends `celerity events` once: unsubscribes and unbinds the receiver, then exits 0.
/// (Its own type, not closures inside `run()`: Swift 6.3.1's optimizer crashed on those in a
/// release build, SemanticARCOpts on EventsCommand.run.)
final class Stopper: Sendable {
    let receiver: EventReceiver
    private let stopping = Atomic<Bool>(false)
    init(receiver: EventReceiver) { self.receiver = receiver }
    var isStopping: Bool { stopping.load(ordering: .acquiring) }

    func stop() {
        guard !stopping.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let receiver = self.receiver
        Task {
            await receiver.stop()
            Output.flush()
            Foundation.exit(0)
        }
    }

    /// Handles `signals` (ignored by the process, delivered here) by stopping.
    func onSignals(_ signals: [Int32]) -> [any DispatchSourceSignal] {
        signals.map { sig in
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { [self] in self.stop() }
            source.resume()
            return source
        }
    }
}

/// stdout, unbuffered: each line leaves as it is written (for `--dump | …`); a write
/// that fails (closed pipe) returns false.
enum Output {
    static func line(_ text: String) -> Bool { write(text + "\n") }
    /// Writes all of `text` to fd 1; false when that fails (EPIPE: the reader went away).
    static func write(_ text: String) -> Bool {
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let n = bytes.withUnsafeBytes { Glibc.write(STDOUT_FILENO, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return false }
            bytes = bytes.dropFirst(n)
        }
        return true
    }
    static func flush() {}
    static func err(_ text: String) { FileHandle.standardError.write(Data((text + "\n").utf8)) }
}

/// What the live view shows, kept from the events (Celery's `State`, reduced).
final class EventsState: Sendable {
    struct WorkerRow {
        var hostname: String
        var lastHeartbeat: Double?
        var freq: Double = 60
        var offline = false
        var active: Int?
        var processed: Int?
        var software = ""
    }
    struct TaskRow {
        var uuid: String
        var name: String?
        var state: String
        var worker: String?
        var received: Double?
        var started: Double?
        var runtime: Double?
        var updated: Double
    }
    struct Model {
        var workers: [String: WorkerRow] = [:]
        var tasks: [String: TaskRow] = [:]
        /// (local time, type) of the task events of the last 10 s.
        var recent: [(Double, String)] = []
        var taskEvents = 0
        var total = 0
        var firstAt: Double?
    }
    private let data = Mutex(Model())
    static let window = 10.0
    static let maxTasks = 2000

    static let states: [String: String] = [
        "task-sent": "PENDING", "task-received": "RECEIVED", "task-started": "STARTED", "task-succeeded": "SUCCESS",
        "task-failed": "FAILURE", "task-retried": "RETRY", "task-revoked": "REVOKED", "task-rejected": "REJECTED",
    ]
    static let finished: Set<String> = ["SUCCESS", "FAILURE", "REVOKED", "REJECTED"]

    func apply(_ e: JSONValue, now: Double = Date().timeIntervalSince1970) {
        guard let type = e["type"]?.stringValue else { return }
        let host = e["hostname"]?.stringValue ?? "?"
        let at = EventTimes.adjusted(e) ?? now
        data.withLock { d in
            d.total += 1
            if d.firstAt == nil { d.firstAt = now }
            if type.hasPrefix("worker-") {
                var w = d.workers[host] ?? WorkerRow(hostname: host)
                if let f = e["freq"]?.doubleValue, f > 0 { w.freq = f }
                if let a = e["active"]?.intValue { w.active = a }
                if let p = e["processed"]?.intValue { w.processed = p }
                if let s = e["sw_ident"]?.stringValue { w.software = s + (e["sw_ver"]?.stringValue.map { " " + $0 } ?? "") }
                if type == "worker-offline" {
                    w.offline = true
                    w.lastHeartbeat = nil
                } else {
                    w.offline = false
                    w.lastHeartbeat = max(w.lastHeartbeat ?? 0, at)
                }
                d.workers[host] = w
                return
            }
            guard type.hasPrefix("task-"), let id = e["uuid"]?.stringValue else { return }
            d.taskEvents += 1
            d.recent.append((now, type))
            var t = d.tasks[id] ?? TaskRow(uuid: id, state: "PENDING", updated: at)
            if let n = e["name"]?.stringValue { t.name = n }
            if type != "task-sent" { t.worker = host }
            let newState = Self.states[type] ?? t.state
            // A late task-started after the outcome does not take it back (Celery merges by
            // precedence; this keeps the finished state).
            if !(Self.finished.contains(t.state) && !Self.finished.contains(newState)) { t.state = newState }
            if type == "task-received" { t.received = at }
            if type == "task-started" { t.started = at }
            if let r = e["runtime"]?.doubleValue { t.runtime = r }
            t.updated = max(t.updated, at)
            d.tasks[id] = t
            if d.tasks.count > Self.maxTasks {
                let drop = d.tasks.values.sorted { $0.updated < $1.updated }.prefix(d.tasks.count - Self.maxTasks).map(\.uuid)
                for k in drop { d.tasks[k] = nil }
            }
        }
    }

    func render(broker: String, now: Double, enabledEvents: Bool) -> String {
        data.withLock { d in
            d.recent.removeAll { $0.0 < now - Self.window }
            let span = min(Self.window, max(1, now - (d.firstAt ?? now)))
            func rate(_ type: String) -> String { String(format: "%.2f", Double(d.recent.filter { $0.1 == type }.count) / span) }
            var out = "celerity events: \(broker) at \(StatusTable.clock(Date(timeIntervalSince1970: now)))  (Ctrl-C to quit)\n\n"
            let workers = d.workers.values.sorted { $0.hostname < $1.hostname }
            let ww = StatusTable.width(workers.map(\.hostname), title: "WORKER")
            out += StatusTable.pad("WORKER", ww) + "  " + StatusTable.pad("STATE", 7) + StatusTable.lpad("ACTIVE", 8) + StatusTable.lpad("PROCESSED", 11)
                + StatusTable.lpad("BEAT", 9) + "  SOFTWARE\n"
            if workers.isEmpty { out += "(no worker events yet: heartbeats come every few seconds)\n" }
            var alive = 0
            for w in workers {
                let online = !w.offline && w.lastHeartbeat.map { now < EventTimes.heartbeatExpires($0, freq: w.freq) } ?? false
                if online { alive += 1 }
                let beat = w.lastHeartbeat.map { StatusTable.ago(now - $0) } ?? "-"
                out += StatusTable.pad(w.hostname, ww) + "  " + StatusTable.pad(online ? "online" : "offline", 7)
                    + StatusTable.lpad(w.active.map(String.init) ?? "-", 8) + StatusTable.lpad(w.processed.map(String.init) ?? "-", 11)
                    + StatusTable.lpad(beat, 9) + "  " + StatusTable.cut(w.software, 20) + "\n"
            }
            out += "\nTasks/s (last \(Int(Self.window)) s): received \(rate("task-received"))  succeeded \(rate("task-succeeded"))  failed \(rate("task-failed"))"
                + "    events: \(d.total), task events: \(d.taskEvents)\n"
            if alive > 0 && d.taskEvents == 0 && now - (d.firstAt ?? now) >= 3 {
                out += enabledEvents
                    ? "(no task events yet: no task has run since; or the workers ignored enable_events)\n"
                    : "(no task events: the workers may have them off; start them with -E, run celerity control enable_events, or pass --enable-events)\n"
            }
            out += "\nLATEST TASKS\n" + StatusTable.pad("STATE", 9) + "  " + StatusTable.pad("NAME", 24) + "  " + StatusTable.pad("ID", 36) + StatusTable.lpad("RUNTIME", 9) + "  WORKER\n"
            let latest = d.tasks.values.sorted { $0.updated > $1.updated }.prefix(15)
            if latest.isEmpty { out += "(none yet)\n" }
            for t in latest {
                let runtime = t.runtime.map { String(format: "%.3fs", $0) } ?? "-"
                out += StatusTable.pad(t.state, 9) + "  " + StatusTable.pad(t.name ?? "?", 24) + "  " + StatusTable.pad(t.uuid, 36)
                    + StatusTable.lpad(runtime, 9) + "  " + (t.worker ?? "-") + "\n"
            }
            return out
        }
    }
}
