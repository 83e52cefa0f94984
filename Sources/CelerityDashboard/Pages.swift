import Celerity
import Foundation

/// The HTML pages: rendered here from the same values as the JSON API, with a little
/// JavaScript for the action buttons (a POST with the CSRF token, then a reload) and the
/// overview's refresh. No build step, no files to serve.
enum Pages {
    static func esc(_ s: String) -> String {
        var o = ""
        o.reserveCapacity(s.count)
        for c in s {
            switch c {
            case "&": o += "&amp;"
            case "<": o += "&lt;"
            case ">": o += "&gt;"
            case "\"": o += "&quot;"
            case "'": o += "&#39;"
            default: o.append(c)
            }
        }
        return o
    }

    static func url(_ s: String) -> String {
        s.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? s
    }

    static func layout(title: String, active: String, csrf: String, broker: String, refresh: Bool = false, _ body: String) -> String {
        let nav = [("/", "Overview"), ("/tasks", "Tasks"), ("/dead", "Dead letters"), ("/delayed", "Delayed"), ("/schedules", "Schedules")].map { href, name in
            "<a href=\"\(href)\"\(href == active ? " class=\"on\"" : "")>\(name)</a>"
        }.joined()
        return """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><title>\(esc(title)) · Celerity</title>
        <meta name="csrf-token" content="\(csrf)">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <style>\(css)</style></head>
        <body data-refresh="\(refresh ? "5" : "0")">
        <header><span class="brand">Celerity</span><nav>\(nav)</nav><span class="broker">\(esc(broker))</span></header>
        <main>
        \(body)
        </main>
        <div id="toast" role="status"></div>
        <script>\(script)</script>
        </body></html>
        """
    }

    static let css = """
    body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
    header{display:flex;gap:1.5em;align-items:center;background:#1d2330;color:#fff;padding:.6em 1.2em}
    .brand{font-weight:700;letter-spacing:.03em}nav a{color:#c9d1e0;text-decoration:none;margin-right:1em}nav a.on{color:#fff;border-bottom:2px solid #6cf}
    .broker{margin-left:auto;color:#8a94a8;font-size:12px}main{padding:1em 1.2em;max-width:1200px}
    h1{font-size:20px;margin:.4em 0 .8em}h2{font-size:16px;margin:1.4em 0 .5em}
    .cards{display:flex;gap:1em;flex-wrap:wrap}.card{background:#fff;border:1px solid #dde1e8;border-radius:6px;padding:.7em 1em;min-width:9em}
    .card b{display:block;font-size:22px}.card span{color:#5b6578;font-size:12px}
    table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #dde1e8}
    th,td{text-align:left;padding:.45em .7em;border-bottom:1px solid #eceef2;vertical-align:top}th{background:#eef1f5;font-weight:600;font-size:12px;color:#3a4356}
    td.n{text-align:right;font-variant-numeric:tabular-nums}.ok{color:#137333}.bad{color:#b3261e}.muted{color:#7a8396}
    button{font:inherit;padding:.2em .7em;border:1px solid #aab3c5;background:#fff;border-radius:4px;cursor:pointer}
    button.danger{border-color:#d9a3a0;color:#b3261e}button:hover{background:#eef1f5}
    form.filter{display:flex;gap:.5em;margin:.5em 0 1em}input{font:inherit;padding:.25em .5em;border:1px solid #aab3c5;border-radius:4px}
    pre{background:#fff;border:1px solid #dde1e8;padding:.7em;overflow:auto;max-height:24em}
    #toast{position:fixed;bottom:1em;right:1em;background:#1d2330;color:#fff;padding:.5em 1em;border-radius:4px;display:none}
    """

    static let script = """
    const csrf=document.querySelector('meta[name=csrf-token]').content;
    function toast(t){const e=document.getElementById('toast');e.textContent=t;e.style.display='block';setTimeout(()=>e.style.display='none',4000)}
    document.addEventListener('click',async ev=>{
      const b=ev.target.closest('button[data-post]');if(!b)return;
      if(b.dataset.confirm&&!confirm(b.dataset.confirm))return;
      b.disabled=true;
      try{
        const r=await fetch(b.dataset.post,{method:'POST',headers:{'X-CSRF-Token':csrf,'Content-Type':'application/json'},body:b.dataset.body||'{}'});
        const j=await r.json().catch(()=>({}));
        toast(r.ok?(j.message||'done'):('failed: '+((j.error&&j.error.message)||j.error||r.status)));
        if(r.ok)setTimeout(()=>location.reload(),600);else b.disabled=false;
      }catch(e){toast('failed: '+e);b.disabled=false}
    });
    const every=+document.body.dataset.refresh;
    if(every>0)setInterval(()=>{if(!document.hidden&&!document.querySelector('button:disabled'))location.reload()},every*1000);
    """

    static func post(_ label: String, _ path: String, body: String = "{}", confirm: String? = nil, danger: Bool = false) -> String {
        "<button data-post=\"\(esc(path))\" data-body=\"\(esc(body))\"\(confirm.map { " data-confirm=\"\(esc($0))\"" } ?? "")\(danger ? " class=\"danger\"" : "")>\(esc(label))</button>"
    }

    static func age(_ seconds: Double?) -> String {
        guard let s = seconds else { return "–" }
        if s < 1 { return "<1 s" }
        if s < 120 { return "\(Int(s)) s" }
        if s < 7200 { return "\(Int(s / 60)) min" }
        return "\(Int(s / 3600)) h"
    }

    static func rate(_ r: Double?) -> String {
        guard let r else { return "–" }
        return r >= 10 ? String(format: "%.0f", r) : String(format: "%.1f", r)
    }

    static func bytes(_ n: Int?) -> String {
        guard let n else { return "–" }
        return String(format: "%.1f MB", Double(n) / 1_048_576)
    }

    static func date(_ d: Date?) -> String { d.map(short) ?? "–" }

    /// `2026-12-03 06:14:56` (UTC, to the second): what a table shows; the API has the full time.
    /// `2026-12-03 15:04:05`; with `millis`, `2026-12-03 15:04:05.123`.
    static func short(_ d: Date) -> String { short(d, millis: false) }

    static func short(_ d: Date, millis: Bool) -> String {
        let s = CeleryDate.format(d)
        let n = millis ? 23 : 19
        guard s.count >= n else { return s }
        return String(s.prefix(n)).replacingOccurrences(of: "T", with: " ")
    }

    static func short(unix: Double?) -> String { unix.map { short(Date(timeIntervalSince1970: $0)) } ?? "–" }

    /// To the millisecond (a task's timeline: received, started and finished are often within one second).
    static func precise(unix: Double?) -> String { unix.map { short(Date(timeIntervalSince1970: $0), millis: true) } ?? "–" }

    // MARK: Overview

    static func overview(_ s: Inspector.Snapshot, minutes: [ClusterState.Minute], recent: [JSONValue], csrf: String, broker: String) -> String {
        let alive = s.workers.filter(\.alive)
        let waiting = s.queues.reduce(0) { $0 + $1.depth }
        let processed = alive.reduce(0) { $0 + ($1.heartbeat?.processed ?? 0) }
        let failed = alive.reduce(0) { $0 + ($1.heartbeat?.failed ?? 0) }
        var h = "<h1>Overview</h1><div class=\"cards\">"
        for (n, label) in [(alive.count, "workers up"), (waiting, "waiting"), (alive.reduce(0) { $0 + $1.inFlight }, "in flight"),
                           (processed, "processed"), (failed, "failed"), (s.delayed.count, "delayed"), (s.deadLetters.count, "dead letters"),
                           (s.revoked.live, "revoked")] {
            h += "<div class=\"card\" data-metric=\"\(esc(label))\"><b>\(n)</b><span>\(label)</span></div>"
        }
        h += "</div><h2>Finished per minute, last \(minutes.count / 60) hours</h2>" + graph(minutes)
        h += "<h2>Workers</h2><table id=\"workers\"><tr><th>Worker</th><th>State</th><th>Queues</th><th>Concurrency</th><th>Running</th><th>In flight</th><th>Processed</th><th>Failed</th><th>RSS</th><th>Last beat</th><th></th></tr>"
        for w in s.workers {
            let hb = w.heartbeat
            h += "<tr data-worker=\"\(esc(w.node))\"><td>\(esc(w.node))<div class=\"muted\">\(esc(hb?.host ?? "")) \(hb?.pid.map { "pid \($0)" } ?? "")</div></td>"
            h += "<td class=\"\(w.alive ? "ok" : "bad")\">\(w.alive ? "online" : "offline")</td><td>\(esc((hb?.queues ?? []).joined(separator: ", ")))</td>"
            h += "<td class=n>\(hb?.concurrency.map(String.init) ?? "–")</td><td class=n>\(hb?.active.map(String.init) ?? "–")</td><td class=n>\(w.inFlight)</td>"
            h += "<td class=n>\(hb?.processed.map(String.init) ?? "–")</td><td class=n>\(hb?.failed.map(String.init) ?? "–")</td><td class=n>\(bytes(hb?.rss))</td>"
            h += "<td>\(age(w.sinceBeat)) ago</td><td>\(w.alive ? post("Shut down", "/api/workers/\(url(w.node))/shutdown", confirm: "Stop \(w.node) (warm: running tasks finish)?", danger: true) : "")</td></tr>"
        }
        if s.workers.isEmpty { h += "<tr><td colspan=11 class=muted>No Celerity worker has run on this broker.</td></tr>" }
        h += "</table><h2>Queues</h2><table id=\"queues\"><tr><th>Queue</th><th>Waiting</th><th>By priority (0-2 / 3-5 / 6-8 / 9)</th><th>In /s</th><th>Out /s</th><th>Oldest</th><th>Next task</th><th>Consumers</th><th></th></tr>"
        for q in s.queues {
            h += "<tr data-queue=\"\(esc(q.name))\"\(q.paused ? " data-paused" : "")><td>\(esc(q.name))\(q.paused ? " <b class=bad>paused</b>" : "")</td><td class=n>\(q.depth)</td><td>\(q.lists.map { String($0.depth) }.joined(separator: " / "))</td>"
            h += "<td class=n>\(rate(q.rateIn))</td><td class=n>\(rate(q.rateOut))</td>"
            h += "<td>\(q.depth > 0 ? age(q.oldestAge) : "–")</td><td>\(esc(q.next?.task ?? "–"))</td><td>\(esc(q.consumers.joined(separator: ", ")))</td>"
            h += "<td>\(q.paused ? post("Resume", "/api/queues/\(url(q.name))/resume") : post("Pause", "/api/queues/\(url(q.name))/pause", confirm: "Stop every worker fetching from \(q.name)? (Messages stay queued.)"))"
            h += " \(q.depth > 0 ? post("Purge", "/api/queues/\(url(q.name))/purge", confirm: "Delete the \(q.depth) messages waiting in \(q.name)?", danger: true) : "")</td></tr>"
        }
        if s.queues.isEmpty { h += "<tr><td colspan=9 class=muted>No queue: give --manifest, or start a worker.</td></tr>" }
        h += "</table><h2>Latest tasks</h2>" + taskTable(recent) + "<p><a href=\"/tasks\">All tasks, search…</a></p>"
        h += "<p class=muted>Read at \(esc(CeleryDate.format(s.at))); refreshes every 5 s.</p>"
        return layout(title: "Overview", active: "/", csrf: csrf, broker: broker, refresh: true, h)
    }

    // MARK: Dead letters

    static func dead(_ entries: [DeadLetters.Entry], matched: Int, total: Int, queue: String, text: String, csrf: String, broker: String) -> String {
        var h = "<h1>Dead letters</h1><form class=filter method=get><input name=queue placeholder=queue value=\"\(esc(queue))\"><input name=q placeholder=\"reason, task or id\" value=\"\(esc(text))\"><button>Filter</button></form>"
        let filter = JSONValue.object([JSONMember("queue", .string(queue)), JSONMember("q", .string(text))]).serialized()
        h += "<p>\(matched) of \(total) match."
        if matched > 0 {
            h += " " + post("Retry all \(matched)", "/api/dead/retry", body: filter, confirm: "Put \(matched) messages back on their queues?")
            h += " " + post("Delete all \(matched)", "/api/dead/delete", body: filter, confirm: "Delete \(matched) dead letters?", danger: true)
        }
        h += "</p><table id=\"dead\"><tr><th>When</th><th>Task</th><th>Queue</th><th>Why</th><th>Worker</th><th></th></tr>"
        for e in entries {
            let t = e.task
            let ids = JSONValue.object([JSONMember("ids", .array([.string(e.id)]))]).serialized()
            h += "<tr data-dead=\"\(esc(e.id))\"><td>\(esc(CeleryDate.parse(e.at).map(short) ?? e.at))</td><td>\(esc(t?.name ?? "?"))<div class=muted><a href=\"/tasks/\(url(t?.id ?? e.id))\">\(esc(t?.id ?? e.id))</a></div></td>"
            h += "<td>\(esc(e.queue))</td><td>\(esc(e.reason))</td><td>\(esc(e.worker))</td>"
            h += "<td>\(post("Retry", "/api/dead/retry", body: ids)) \(post("Delete", "/api/dead/delete", body: ids, danger: true))</td></tr>"
        }
        if entries.isEmpty { h += "<tr><td colspan=6 class=muted>None.</td></tr>" }
        h += "</table>"
        return layout(title: "Dead letters", active: "/dead", csrf: csrf, broker: broker, h)
    }

    // MARK: Delayed

    static func delayed(_ entries: [ClusterState.Delayed], count: Int, csrf: String, broker: String) -> String {
        var h = "<h1>Delayed</h1><p>\(count) waiting for their time (eta, countdown, retry backoff)\(count > entries.count ? "; the first \(entries.count) shown" : "").</p>"
        h += "<table id=\"delayed\"><tr><th>Due</th><th>Task</th><th>Queue</th><th>Retries</th><th></th></tr>"
        for e in entries {
            h += "<tr><td>\(short(e.due))</td><td>\(esc(e.task ?? "?"))<div class=muted>\(esc(e.id ?? ""))</div></td><td>\(esc(e.queue))</td><td class=n>\(e.retries)</td>"
            h += "<td>\(e.id.map { post("Revoke", "/api/tasks/\(url($0))/revoke", danger: true) } ?? "")</td></tr>"
        }
        if entries.isEmpty { h += "<tr><td colspan=5 class=muted>None.</td></tr>" }
        h += "</table>"
        return layout(title: "Delayed", active: "/delayed", csrf: csrf, broker: broker, h)
    }

    // MARK: Task

    /// Bars of processed (and failed, in red) per minute, as an inline SVG.
    static func graph(_ minutes: [ClusterState.Minute]) -> String {
        let w = 960.0, h = 120.0
        let peak = max(1, minutes.map(\.processed).max() ?? 1)
        let step = w / Double(max(minutes.count, 1))
        var bars = ""
        for (i, m) in minutes.enumerated() where m.processed > 0 || m.failed > 0 {
            let x = Double(i) * step
            let ph = h * Double(m.processed) / Double(peak), fh = h * Double(min(m.failed, m.processed)) / Double(peak)
            let time = CeleryDate.format(Date(timeIntervalSince1970: Double(m.minute * 60)))
            bars += "<rect x=\"\(x)\" y=\"\(h - ph)\" width=\"\(max(step - 0.5, 0.5))\" height=\"\(ph)\" fill=\"#6a9fd8\"><title>\(time): \(m.processed) finished, \(m.failed) failed</title></rect>"
            if fh > 0 { bars += "<rect x=\"\(x)\" y=\"\(h - fh)\" width=\"\(max(step - 0.5, 0.5))\" height=\"\(fh)\" fill=\"#d9534f\"/>" }
        }
        let total = minutes.reduce(0) { $0 + $1.processed }, failed = minutes.reduce(0) { $0 + $1.failed }
        let from = minutes.first.map { short(Date(timeIntervalSince1970: Double($0.minute * 60))) } ?? ""
        return "<div class=muted style=\"display:flex;justify-content:space-between;font-size:12px\"><span>\(from) UTC</span><span>now</span></div><svg id=\"throughput\" viewBox=\"0 0 \(w) \(h)\" width=\"100%\" height=\"120\" preserveAspectRatio=\"none\" style=\"background:#fff;border:1px solid #dde1e8\">\(bars)</svg>"
            + "<p class=muted>\(total) finished, \(failed) failed; peak \(peak)/min (\(peak / 60)/s). Blue: finished; red: failed.</p>"
    }

    /// Rows of history records.
    static func taskTable(_ records: [JSONValue]) -> String {
        var h = "<table class=\"tasks\"><tr><th>Finished</th><th>Task</th><th>State</th><th>Args</th><th>Exception</th><th>Runtime</th><th>Worker</th></tr>"
        for r in records {
            let id = r["id"]?.stringValue ?? ""
            let state = r["state"]?.stringValue ?? ""
            let at = short(unix: r["at"]?.doubleValue)
            let runtime = r["runtime"]?.doubleValue.map { String(format: $0 < 0.01 ? "%.6f s" : "%.3f s", $0) } ?? "–"
            h += "<tr data-task=\"\(esc(id))\"><td>\(esc(at))</td><td>\(esc(r["task"]?.stringValue ?? ""))<div class=muted><a href=\"/tasks/\(url(id))\">\(esc(id))</a></div></td>"
            h += "<td class=\"\(state == "SUCCESS" ? "ok" : (state == "FAILURE" ? "bad" : ""))\">\(esc(state))</td><td><code>\(esc(r["args"]?.stringValue ?? ""))</code></td>"
            h += "<td><code>\(esc(r["exception"]?.stringValue ?? ""))</code></td><td class=n>\(runtime)</td><td>\(esc(r["worker"]?.stringValue ?? ""))</td></tr>"
        }
        if records.isEmpty { h += "<tr><td colspan=7 class=muted>None.</td></tr>" }
        return h + "</table>"
    }

    static func tasks(_ records: [JSONValue], scanned: Int, query q: ClusterState.HistoryQuery, csrf: String, broker: String) -> String {
        let states = ["", "SUCCESS", "FAILURE", "RETRY", "REVOKED", "REJECTED"]
        var h = "<h1>Tasks</h1><form class=filter method=get><input name=id placeholder=\"task id\" value=\"\(esc(q.id ?? ""))\">"
        h += "<input name=task placeholder=\"task name\" value=\"\(esc(q.task ?? ""))\"><select name=state>"
        for s in states { h += "<option value=\"\(s)\"\(s == (q.state ?? "") ? " selected" : "")>\(s.isEmpty ? "any state" : s)</option>" }
        h += "</select><input name=worker placeholder=worker value=\"\(esc(q.worker ?? ""))\">"
        h += "<input name=minutes placeholder=\"last N minutes\" size=12 value=\"\(q.within.map { String(Int($0 / 60)) } ?? "")\"><button>Search</button></form>"
        h += "<p class=muted>\(records.count) shown (newest first), \(scanned) records read of the history that workers keep in Redis (<code>celerity:history</code>).</p>"
        h += taskTable(records)
        return layout(title: "Tasks", active: "/tasks", csrf: csrf, broker: broker, h)
    }

    static func schedules(_ rows: [BeatStore.Row], csrf: String, broker: String) -> String {
        var h = "<h1>Schedules</h1><table id=\"schedules\"><tr><th>Name</th><th>Task</th><th>Queue</th><th>Schedule</th><th>Last run</th><th>Next run</th><th>Count</th><th>State</th></tr>"
        for r in rows {
            h += "<tr><td>\(esc(r.entry.name))</td><td>\(esc(r.entry.task))</td><td>\(esc(r.entry.queue))</td><td><code>\(esc(r.schedule))</code></td>"
            h += "<td>\(date(r.last))</td><td>\(r.next.map(short) ?? "never")</td><td class=n>\(r.count)\(r.entry.limit.map { " / \($0)" } ?? "")</td>"
            h += "<td class=\"\(r.overdue ? "bad" : "")\">\(esc(r.state))\(r.overdue ? " (is a beat running?)" : "")</td></tr>"
        }
        if rows.isEmpty { h += "<tr><td colspan=8 class=muted>No schedules (the manifest's <code>schedules:</code>; give --manifest).</td></tr>" }
        return layout(title: "Schedules", active: "/schedules", csrf: csrf, broker: broker, h + "</table>")
    }

    static func task(_ t: ClusterState.TaskView, timeline: [JSONValue], csrf: String, broker: String) -> String {
        var h = "<h1>Task <code>\(esc(t.id))</code></h1>"
        let state = t.meta?["status"]?.stringValue ?? timeline.last?["state"]?.stringValue
            ?? (t.dead != nil ? "DEAD LETTER" : "unknown (pending, running, or its result expired)")
        h += "<div class=cards><div class=card><b id=state>\(esc(state))</b><span>state\(t.revoked ? ", revoked" : "")</span></div></div>"
        h += "<p>\(post("Revoke", "/api/tasks/\(url(t.id))/revoke")) \(post("Terminate", "/api/tasks/\(url(t.id))/revoke", body: #"{"terminate":true}"#, confirm: "Stop it where it runs?", danger: true))</p>"
        if let first = timeline.first {
            h += "<table id=timeline><tr><th>Task</th><td>\(esc(first["task"]?.stringValue ?? ""))</td></tr><tr><th>args</th><td><code>\(esc(first["args"]?.stringValue ?? ""))</code></td></tr>"
            h += "<tr><th>kwargs</th><td><code>\(esc(first["kwargs"]?.stringValue ?? ""))</code></td></tr>"
            for key in ["root_id", "parent_id"] {
                if let v = first[key]?.stringValue, v != t.id { h += "<tr><th>\(key)</th><td><a href=\"/tasks/\(url(v))\">\(esc(v))</a></td></tr>" }
            }
            h += "</table><h2>Timeline</h2><table><tr><th>Received</th><th>Started</th><th>Finished</th><th>State</th><th>Worker</th><th>Exception</th></tr>"
            for r in timeline {
                let at = r["at"]?.doubleValue ?? 0, rt = r["runtime"]?.doubleValue
                let started = rt.map { at - $0 }
                // A tiny built-in runs where it was fetched: received when it started.
                let received = r["received"]?.doubleValue ?? started
                h += "<tr><td>\(precise(unix: received))</td><td>\(precise(unix: started))</td><td>\(precise(unix: at))</td>"
                h += "<td>\(esc(r["state"]?.stringValue ?? ""))</td><td>\(esc(r["worker"]?.stringValue ?? ""))</td><td><code>\(esc(r["exception"]?.stringValue ?? ""))</code></td></tr>"
            }
            h += "</table>"
        }
        if let children = t.meta?["children"]?.arrayValue, !children.isEmpty {
            h += "<h2>Children</h2><ul>"
            for c in children {
                // Celery stores a child as [[id, parent], null] (a result tuple) or a group's nesting.
                if let id = Self.childID(c) { h += "<li><a href=\"/tasks/\(url(id))\">\(esc(id))</a></li>" }
            }
            h += "</ul>"
        }
        if let m = t.meta {
            h += "<h2>Result</h2><table>"
            for key in ["name", "args", "kwargs", "worker", "queue", "retries", "date_done", "parent_id", "root_id", "children"] {
                if let v = m[key], v != .null { h += "<tr><th>\(key)</th><td><code>\(esc(v.stringValue ?? v.serialized()))</code></td></tr>" }
            }
            h += "</table><pre id=result>\(esc(m["result"].map { $0.stringValue ?? $0.serialized() } ?? "null"))</pre>"
            if let tb = m["traceback"]?.stringValue { h += "<h2>Traceback</h2><pre>\(esc(tb))</pre>" }
        }
        if let d = t.dead {
            h += "<h2>Dead letter</h2><p>\(esc(d.at)): \(esc(d.reason)) (worker \(esc(d.worker)), queue \(esc(d.queue)))</p>"
            h += "<p>\(post("Retry", "/api/dead/retry", body: JSONValue.object([JSONMember("ids", .array([.string(d.id)]))]).serialized()))</p><pre>\(esc(d.message))</pre>"
        }
        return layout(title: "Task \(t.id)", active: "/tasks", csrf: csrf, broker: broker, h)
    }

    /// The task id of a `children` entry of a result (`[[id, parent_id], null]`).
    static func childID(_ v: JSONValue) -> String? {
        if let s = v.stringValue, s.count >= 32 { return s }
        for item in v.arrayValue ?? [] { if let id = childID(item) { return id } }
        return nil
    }

    static func error(_ message: String, csrf: String, broker: String) -> String {
        layout(title: "Error", active: "", csrf: csrf, broker: broker, "<h1>Cannot read the broker</h1><pre>\(esc(message))</pre>")
    }
}
