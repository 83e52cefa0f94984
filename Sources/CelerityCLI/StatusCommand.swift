import ArgumentParser
import Celerity
import Foundation
import RedisClient

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show queues, workers, delayed work, dead letters and revocations (read-only).",
        discussion: """
        Queues: the manifest's (tasks and workers sections), those of live workers and the paused ones, or only --queue.

        A queue marked (paused) is paused cluster-wide (celerity queue pause): no worker fetches from it; its messages wait.

        WAITING counts every priority list of a queue: P0-2 is the main list, P3-5, P6-8 and P9 the \\x06\\x16 sub-lists. IN FLIGHT is a worker's processing list (fetched, not yet acked). A dead worker (known, no heartbeat) keeps its list until a live worker hands it back.

        PING lists the nodes that answered a remote-control ping within --ping-timeout (1 s, with --watch at most its
        interval; 0: no ping):
        Celerity workers and Python Celery workers alike (those have no Celerity heartbeat, so they are
        not in the WORKER table). Apart from that one broadcast, status only reads.

        Exit status: 0 ok, 2 bad manifest or URL, 4 Redis cannot be reached.
        """
    )

    @Flag(name: .long, help: "Print one JSON document (with --watch: one compact document per line).")
    var json = false

    @Option(name: .long, parsing: .singleValue, help: ArgumentHelp("Only this queue (repeatable).", valueName: "name"))
    var queue: [String] = []

    @Option(name: .long, help: ArgumentHelp("Refresh every N seconds until interrupted.", valueName: "N"))
    var watch: Double?

    @Option(name: .customLong("ping-timeout"), help: ArgumentHelp("Seconds to wait for ping replies (0: send no ping).", valueName: "s"))
    var pingTimeout: Double = 1

    @OptionGroup var connection: ConnectionOptions

    func validate() throws {
        if let watch, !(watch >= 0.1) { throw ValidationError("--watch must be at least 0.1 seconds") }
        if !(pingTimeout >= 0 && pingTimeout <= 60) { throw ValidationError("--ping-timeout must be between 0 and 60 seconds") }
    }

    /// The snapshot, with the nodes that answer `ping` (read at the same time).
    /// With --watch, the ping waits at most one refresh interval (the refresh then takes it).
    func take(_ inspector: Inspector, _ control: ControlClient, queues: [String]?) async throws -> Inspector.Snapshot {
        guard pingTimeout > 0 else { return try await inspector.snapshot(queues: queues) }
        let timeout = min(pingTimeout, watch ?? pingTimeout)
        async let pongs = control.broadcast("ping", timeout: timeout)
        var snapshot = try await inspector.snapshot(queues: queues)
        let known = Set(snapshot.workers.filter(\.alive).map(\.node))
        do {
            snapshot.pinged = try await pongs.map { r in
                Inspector.PingInfo(node: r.node, reply: r.value["ok"]?.stringValue ?? r.value.serialized(), celerity: known.contains(r.node))
            }.sorted { $0.node < $1.node }
        } catch {
            // A user that may read but not publish (an ACL) still gets the rest.
            FileHandle.standardError.write(Data("status: ping not sent: \(error)\n".utf8))
        }
        return snapshot
    }

    func run() async throws {
        let inspector: Inspector, control: ControlClient
        do {
            let manifest = try await connection.loadManifest(required: false)
            inspector = try Inspector(broker: connection.brokerURL(manifest), manifest: manifest)
            control = ControlClient(redis: Redis(url: inspector.redis.url, label: "status-ping"))
        } catch {
            throw badInput(error)
        }
        let only = queue.isEmpty ? nil : queue
        guard let watch else {
            let snapshot: Inspector.Snapshot
            do { snapshot = try await take(inspector, control, queues: only) } catch {
                throw fail("cannot read the broker at \(inspector.redis.url): \(error)", CelerityExit(error, otherwise: .redisUnreachable))
            }
            try emit(snapshot, compact: false)
            return
        }
        let tty = isatty(STDOUT_FILENO) == 1
        while true {
            let began = Date()
            do {
                let snapshot = try await take(inspector, control, queues: only)
                if tty && !json { write("\u{1B}[H\u{1B}[2J") }
                try emit(snapshot, compact: true)
            } catch {
                // Keep watching: the connection comes back by itself when Redis does.
                FileHandle.standardError.write(Data("\(CeleryDate.format(Date())) cannot read the broker at \(inspector.redis.url): \(error)\n".utf8))
            }
            let left = watch - Date().timeIntervalSince(began)
            if left > 0 { try await Task.sleep(for: .milliseconds(Int(left * 1000))) }
        }
    }

    func emit(_ snapshot: Inspector.Snapshot, compact: Bool) throws {
        if json {
            let encoder = Inspector.Snapshot.encoder
            if compact { encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes] }
            write(String(decoding: try encoder.encode(snapshot), as: UTF8.self) + "\n")
        } else {
            write(StatusTable.render(snapshot))
        }
    }

    func write(_ text: String) { FileHandle.standardOutput.write(Data(text.utf8)) }
}

/// The table of `celerity status`, kept within 100 columns (names are cut at 24, the last
/// column at 24 or 28).
enum StatusTable {
    static func render(_ s: Inspector.Snapshot) -> String {
        var out = "Broker \(s.broker) at \(clock(s.at))\n\n"
        let qw = width(s.queues.map { $0.paused ? $0.name + " (paused)" : $0.name }, title: "QUEUE")
        out += pad("QUEUE", qw) + ["WAITING", "P0-2", "P3-5", "P6-8", "P9", "WORKERS"].map { lpad($0, 8) }.joined() + "  NEXT\n"
        if s.queues.isEmpty { out += "(no queues: name them with --queue, or pass a manifest)\n" }
        for q in s.queues {
            var next = "-"
            if let m = q.next {
                next = m.task ?? "(unreadable message)"
                if let eta = m.eta { next += " eta " + relative(eta, from: s.at) }
                if m.redeliveries > 0 { next += " redelivered \(m.redeliveries)x" }
            }
            let cols = [q.depth] + q.lists.map(\.depth) + [q.consumers.count]
            out += pad(q.paused ? cut(q.name, qw - 9) + " (paused)" : q.name, qw) + cols.map { lpad(String($0), 8) }.joined() + "  " + cut(next, 24) + "\n"
        }
        out += "\n"
        let ww = width(s.workers.map(\.node), title: "WORKER")
        let widths = [7, 8, 10, 4, 10]
        out += pad("WORKER", ww) + "  " + pad("STATE", 5) + zip(["BEAT", "RUNNING", "IN FLIGHT", "C", "PROCESSED"], widths).map { lpad($0, $1) }.joined() + "  QUEUES\n"
        if s.workers.isEmpty { out += "(no workers known)\n" }
        for w in s.workers {
            let hb = w.heartbeat
            func text(_ v: Int?) -> String { v.map { String($0) } ?? "-" }
            let beat: String = w.sinceBeat.map { ago($0) } ?? "-"
            let cells: [String] = [beat, text(hb?.active), String(w.inFlight), text(hb?.concurrency), text(hb?.processed)]
            let queues: String
            if w.alive {
                let paused = Set(hb?.paused ?? [])
                queues = hb?.queues.map { paused.contains($0) ? $0 + " (paused)" : $0 }.joined(separator: ",") ?? ""
            } else { queues = w.inFlight > 0 ? "awaiting recovery" : "-" }
            var line: String = pad(w.node, ww) + "  " + pad(w.alive ? "alive" : "dead", 5)
            line += zip(cells, widths).map { lpad($0, $1) }.joined()
            out += line + "  " + cut(queues, 28) + "\n"
        }
        out += "\n"
        if let pinged = s.pinged {
            let names = pinged.map { $0.node + ($0.celerity ? "" : " (no Celerity heartbeat)") }
            out += "Ping          " + (pinged.isEmpty ? "no node answered" : "\(pinged.count) answered: " + names.joined(separator: ", ")) + "\n"
        }
        let d = s.delayed
        var delayed = "\(d.count)"
        if let due = d.nextDue { delayed += ", next due \(relative(due, from: s.at))" + (d.nextQueue.map { " (\($0))" } ?? "") }
        if d.overdue > 0 { delayed += ", \(d.overdue) overdue (is a worker running?)" }
        out += "Delayed       " + delayed + "\n"
        let dl = s.deadLetters
        var dead = "\(dl.count)"
        if let by = dl.byQueue, !by.isEmpty {
            dead += " (" + by.prefix(5).map { "\($0.queue.isEmpty ? "?" : $0.queue) \($0.count)" }.joined(separator: ", ") + (by.count > 5 ? ", …" : "") + ")"
        }
        if let at = dl.newestAt { dead += ", newest \(relative(at, from: s.at))" }
        out += "Dead letters  " + dead + "\n"
        if let reason = dl.newestReason { out += "              " + cut(reason, 84) + "\n" }
        let r = s.revoked
        out += "Revoked       \(r.live)" + (r.terminateLive > 0 ? " (\(r.terminateLive) with --terminate)" : "")
            + (r.count > r.live ? ", \(r.count - r.live) expired, not pruned yet" : "") + "\n"
        return out
    }

    static func width(_ names: [String], title: String) -> Int { min(24, max(title.count, names.map(\.count).max() ?? 0)) }
    static func pad(_ s: String, _ n: Int) -> String { let c = cut(s, n); return c + String(repeating: " ", count: max(0, n - c.count)) }
    static func lpad(_ s: String, _ n: Int) -> String { String(repeating: " ", count: max(0, n - s.count)) + s }
    static func cut(_ s: String, _ n: Int) -> String { s.count <= n ? s : String(s.prefix(n - 1)) + "…" }

    /// "12.3s ago" / "in 4m".
    static func relative(_ date: Date, from now: Date) -> String {
        let d = date.timeIntervalSince(now)
        return d >= 0 ? "in " + duration(d) : duration(-d) + " ago"
    }
    static func ago(_ seconds: Double) -> String { duration(max(0, seconds)) }
    static func duration(_ s: Double) -> String {
        if s < 60 { return String(format: "%.1fs", s) }
        if s < 3600 { return "\(Int(s / 60))m" }
        if s < 86400 { return "\(Int(s / 3600))h" }
        return "\(Int(s / 86400))d"
    }
    static func clock(_ date: Date) -> String {
        let t = CeleryDate.format(date)
        return String(t.prefix(19)).replacingOccurrences(of: "T", with: " ") + " UTC"
    }
}
