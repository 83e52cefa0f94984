import ArgumentParser
import Celerity
import CelerityBuiltins
import Foundation

struct CheckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Validate a manifest and list its tasks.",
        discussion: "Errors name file:line:column and what is wrong. Exit status 0 when valid, 2 when not (a bad manifest, as for every command)."
    )

    @Argument(help: ArgumentHelp("The manifest to check (default: $CELERITY_MANIFEST or ./tasks.yaml).", valueName: "file"))
    var file: String?

    @Flag(name: .long, help: "List the built-in handlers this build provides.")
    var builtins = false

    func run() async throws {
        if builtins {
            for name in Builtins.registry.names.sorted() { print(name) }
            return
        }
        let path = file ?? ProcessInfo.processInfo.environment["CELERITY_MANIFEST"] ?? "tasks.yaml"
        do {
            let m = try Manifest.load(path: path, builtins: Builtins.registry.names)
            print("\(path): OK, \(m.tasks.count) task\(m.tasks.count == 1 ? "" : "s"), \(m.workers.count) worker group\(m.workers.count == 1 ? "" : "s")"
                  + (m.schedules.isEmpty ? "" : ", \(m.schedules.count) schedule\(m.schedules.count == 1 ? "" : "s")"))
            for name in m.taskOrder {
                guard let t = m.tasks[name] else { continue }
                let handler: String
                switch t.handler {
                case let .builtin(b): handler = "builtin \(b)"
                case let .plugin(p): handler = "plugin \(p.argv.joined(separator: " "))"
                }
                var policy = t.timeLimit.map { ", time limit \($0) s" } ?? ""
                if let r = t.rateLimit { policy += ", rate limit \(r.text)" + (r.burst > 1 ? " (burst \(r.burst))" : "") + " across all workers" }
                if let c = t.maxConcurrency { policy += ", at most \(c) at once across all workers" }
                if let u = t.unique { policy += ", unique (\(u))" }
                let origin = t.discoveredFrom.map { f in
                    let over = m.discovery.found.first { $0.task == name }?.overridden ?? []
                    return " [discovered in \(f)" + (over.isEmpty ? "" : "; tasks.yaml sets \(over.joined(separator: ", "))") + "]"
                } ?? ""
                print("  \(name) → queue \(t.queue), \(handler)\(policy)\(origin)")
            }
            let d = m.discovery
            for dir in d.directories {
                let here = d.found.filter { $0.directory == dir.path }
                print("  plugin folder \(dir.path): \(here.count) task\(here.count == 1 ? "" : "s") discovered (default queue \(dir.queue))")
            }
            if !d.directories.isEmpty {
                print("  discovery: \(d.plugins) plugin\(d.plugins == 1 ? "" : "s") asked, \(d.cached) answer\(d.cached == 1 ? "" : "s") from the cache")
            }
            for p in d.problems { print("  warning: \(p)") }
            for w in m.workers { print("  worker group \(w.name): queues \(w.queues.joined(separator: ",")), concurrency \(w.concurrency)") }
            for name in m.workflows.keys.sorted() { print("  workflow \(name): \(m.workflows[name]!.summary)") }
            let now = Date()
            for e in m.schedules {
                var zone = ""
                if case .cron = e.rule, !["UTC", "GMT"].contains(e.timeZone.identifier) { zone = " \(e.timeZone.identifier)" }
                let next = e.nextFire(after: now).map { "next \(ScheduleDate.format($0, in: e.timeZone))" + (e.timeZone.secondsFromGMT(for: $0) == 0 ? "" : " (\(ScheduleDate.format($0, in: TimeZone(identifier: "UTC")!)))") }
                    ?? "no fire after now (ended)"
                var extras: [String] = []
                if e.misfire != .skip { extras.append("misfire \(e.misfire.rawValue)") }
                if let start = e.start { extras.append("start \(ScheduleDate.format(start, in: e.timeZone))") }
                if let end = e.end { extras.append("end \(ScheduleDate.format(end, in: e.timeZone))") }
                if let limit = e.limit { extras.append("limit \(limit)") }
                print("  schedule \(e.name): \(e.task) → queue \(e.queue), \(e.rule)\(zone), \(next)" + (extras.isEmpty ? "" : ", " + extras.joined(separator: ", ")))
            }
        } catch {
            throw fail(error.description, .badInput)
        }
    }
}
