import Foundation
import Yams

/// `schedules:` in tasks.yaml:
///
///     schedules:
///       nightly-report: {task: reports.build, cron: "0 3 * * *", timezone: Europe/Paris, args: [daily], misfire: skip}
///       ping:           {task: ops.ping, every: 30s}
///
/// Fields: `task`; exactly one of `cron` and `every`; `timezone` (IANA, default UTC), `args`,
/// `kwargs`, `queue` (default: the task's queue; required for a task not under `tasks:`),
/// `misfire` (`skip` or `run_once`, default skip), `start`, `end` (ISO 8601), `limit`.
extension ManifestReader {
    static let scheduleKeys: Set<String> = ["task", "cron", "every", "timezone", "args", "kwargs", "queue", "misfire", "start", "end", "limit"]

    func schedules(_ n: Node, tasks: [String: TaskSpec]) throws(ManifestError) -> [ScheduleEntry] {
        if n.null != nil, case let .scalar(s) = n, s.style == .plain { return [] }
        var out: [ScheduleEntry] = []
        for (name, kn, value) in try mapping(n, "schedules", allowed: []) {
            if name.isEmpty { throw fail(kn, "a schedule needs a non-empty name") }
            out.append(try schedule(name, value, tasks: tasks))
        }
        return out
    }

    func schedule(_ name: String, _ n: Node, tasks: [String: TaskSpec]) throws(ManifestError) -> ScheduleEntry {
        let what = "schedule '\(name)'"
        let fields = try mapping(n, what, allowed: ManifestReader.scheduleKeys)
        func field(_ key: String) -> (Node, Node)? { fields.first { $0.0 == key }.map { ($0.1, $0.2) } }

        guard let (_, taskNode) = field("task") else { throw fail(n, "\(what) is missing the field 'task'") }
        let task = try string(taskNode, "schedules.\(name).task")
        if task.isEmpty { throw fail(taskNode, "schedules.\(name).task must not be empty") }

        var zone = TimeZone(identifier: "UTC")!
        if let (_, zn) = field("timezone") {
            let id = try string(zn, "schedules.\(name).timezone")
            guard let z = ManifestReader.timeZone(id) else {
                let hint = TimeZone.knownTimeZoneIdentifiers.first { $0.lowercased() == id.lowercased() }
                throw fail(zn, "unknown time zone '\(id)' in \(what)" + (hint.map { " (did you mean \($0)?)" } ?? " (an IANA name such as Europe/Paris, America/New_York or UTC)"))
            }
            zone = z
        }

        let cronField = field("cron"), everyField = field("every")
        let rule: ScheduleRule
        switch (cronField, everyField) {
        case (nil, nil): throw fail(n, "\(what) needs 'cron' or 'every' (e.g. cron: \"0 3 * * *\" or every: 30s)")
        case let ((_, _)?, (ek, _)?): throw fail(ek, "\(what) has both 'cron' and 'every'; give one")
        case let ((_, cn)?, nil):
            let text = try string(cn, "schedules.\(name).cron")
            do throws(CronError) { rule = .cron(try CronExpression(text)) } catch {
                throw ManifestError(columnLocation(cn, error.column), "\(what): cron \"\(text)\": \(error.description)")
            }
        case let (nil, (_, en)?):
            let text: String
            if case let .scalar(s) = en, s.style == .plain, let i = en.int { text = String(i) }
            else if case let .scalar(s) = en, s.style == .plain, en.float != nil { throw fail(en, "schedules.\(name).every must be a whole number of seconds or a duration such as 30s or 1h30m, got \(s.string)") }
            else { text = try string(en, "schedules.\(name).every") }
            do throws(ScheduleError) { rule = .every(try EveryInterval(parsing: text)) } catch {
                throw fail(en, "schedules.\(name).every: \(error.message)")
            }
        }

        var entry = ScheduleEntry(name: name, task: task, rule: rule, timeZone: zone)
        if let spec = tasks[task] {
            entry.queue = spec.queue
            entry.unique = spec.unique
        }
        var sawQueue = false
        for (key, _, v) in fields {
            switch key {
            case "args":
                guard case let .sequence(items) = v else { throw fail(v, "schedules.\(name).args must be a list, found \(kind(v))") }
                entry.args = items.map(json)
            case "kwargs":
                guard case .mapping = v, case let .object(o) = json(v) else { throw fail(v, "schedules.\(name).kwargs must be a mapping, found \(kind(v))") }
                entry.kwargs = o
            case "queue":
                entry.queue = try string(v, "schedules.\(name).queue")
                if entry.queue.isEmpty { throw fail(v, "schedules.\(name).queue must not be empty") }
                sawQueue = true
            case "misfire":
                let m = try string(v, "schedules.\(name).misfire")
                guard let p = MisfirePolicy(rawValue: m) else {
                    throw fail(v, "schedules.\(name).misfire must be 'skip' or 'run_once', got '\(m)'")
                }
                entry.misfire = p
            case "start", "end":
                let text: String
                if case let .scalar(s) = v { text = s.string } else { throw fail(v, "schedules.\(name).\(key) must be an ISO 8601 date or time, found \(kind(v))") }
                do throws(ScheduleError) {
                    let d = try ScheduleDate.parse(text, zone: zone)
                    if key == "start" { entry.start = d } else { entry.end = d }
                } catch { throw fail(v, "schedules.\(name).\(key): \(error.message)") }
            case "limit": entry.limit = try integer(v, "schedules.\(name).limit", min: 1)
            default: break
            }
        }
        if tasks[task] == nil && !sawQueue && !undescribedTasks {
            throw fail(taskNode, "\(what) names task '\(task)', which is not under tasks: give the schedule a 'queue' (a Python worker may serve it)")
        }
        if let s = entry.start, let e = entry.end, e < s, let (_, en) = field("end") {
            throw fail(en, "schedules.\(name).end is before its start")
        }
        return entry
    }

    /// `file:line:col` of a column inside a scalar's text (a quote before it counts).
    func columnLocation(_ n: Node, _ column: Int) -> String {
        guard let mark = n.mark else { return path }
        var quote = 0
        if case let .scalar(s) = n, s.style == .singleQuoted || s.style == .doubleQuoted { quote = 1 }
        return "\(path):\(mark.line):\(mark.column + quote + column - 1)"
    }

    /// An IANA zone (or UTC/GMT in any case).
    static func timeZone(_ id: String) -> TimeZone? {
        if ["utc", "gmt", "z", "etc/utc"].contains(id.lowercased()) { return TimeZone(identifier: "UTC") }
        guard !id.isEmpty, let z = TimeZone(identifier: id) else { return nil }
        return z
    }
}
