import Foundation

/// An `every:` interval: `30s`, `5m`, `1h30m`, `2d`, or a plain number of seconds.
public struct EveryInterval: Sendable, Hashable, CustomStringConvertible {
    public let seconds: Int
    public init(seconds: Int) { self.seconds = seconds }

    /// Parses `<n>d<n>h<n>m<n>s` (any of the parts, in that order, at least one) or a plain
    /// whole number of seconds. The result must be at least one second.
    public init(parsing text: String) throws(ScheduleError) {
        let t = text.trimmingCharacters(in: .whitespaces)
        if !t.isEmpty, t.allSatisfy(\.isCronDigit) {
            guard let n = Int(t), n >= 1 else { throw ScheduleError("'\(text)' must be at least 1 second") }
            seconds = n
            return
        }
        let units: [(Character, Int, String)] = [("d", 86400, "days"), ("h", 3600, "hours"), ("m", 60, "minutes"), ("s", 1, "seconds")]
        var total = 0
        var digits = ""
        var nextUnit = 0
        var sawPart = false
        for c in t.lowercased() {
            if c.isCronDigit { digits.append(c); continue }
            guard let u = units.firstIndex(where: { $0.0 == c }) else {
                throw ScheduleError("'\(text)' is not a duration: unexpected '\(c)' (write e.g. 30s, 5m, 1h30m, 2d, or a number of seconds)")
            }
            guard !digits.isEmpty, let n = Int(digits) else {
                throw ScheduleError("'\(text)' is not a duration: '\(c)' needs a number before it (e.g. 30s, 1h30m)")
            }
            guard u >= nextUnit else {
                throw ScheduleError("'\(text)' is not a duration: give the parts largest first, each once (d, h, m, s; e.g. 1h30m)")
            }
            let (product, overflow) = n.multipliedReportingOverflow(by: units[u].1)
            guard !overflow, total <= Int.max - product else { throw ScheduleError("'\(text)' is too long a duration") }
            total += product
            digits = ""
            nextUnit = u + 1
            sawPart = true
        }
        guard sawPart, digits.isEmpty else {
            throw ScheduleError(t.isEmpty ? "the duration is empty (write e.g. 30s, 5m, 1h30m, 2d)"
                                : "'\(text)' is not a duration: '\(digits)' has no unit (d, h, m or s; e.g. 30s, 1h30m)")
        }
        guard total >= 1 else { throw ScheduleError("'\(text)' must be at least 1 second") }
        seconds = total
    }

    /// `1h30m`, `30s`, `2d`.
    public var description: String {
        var rest = seconds
        var out = ""
        for (unit, size) in [("d", 86400), ("h", 3600), ("m", 60), ("s", 1)] where rest >= size {
            out += "\(rest / size)\(unit)"
            rest %= size
        }
        return out
    }
}

/// A schedule problem outside the cron expression itself (a duration, a date).
public struct ScheduleError: Error, Sendable, Hashable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// When an entry fires: cron times in its time zone, or every N seconds.
public enum ScheduleRule: Sendable, Hashable, CustomStringConvertible {
    case cron(CronExpression)
    case every(EveryInterval)

    public var description: String {
        switch self {
        case let .cron(c): return "cron \"\(c.source)\""
        case let .every(e): return "every \(e)"
        }
    }
}

/// What a beat does with ticks missed while no beat ran (`misfire:`).
public enum MisfirePolicy: String, Sendable, Hashable, CaseIterable {
    /// Missed ticks are dropped; the entry next fires at its next regular time.
    case skip
    /// One run for all missed ticks (never a burst), then the regular times.
    case runOnce = "run_once"
}

/// One entry of `schedules:` in tasks.yaml.
public struct ScheduleEntry: Sendable, Hashable {
    public var name: String
    public var task: String
    public var rule: ScheduleRule
    /// The zone cron fields are read in (UTC by default). `every:` ignores it.
    public var timeZone: TimeZone
    public var args: [JSONValue]
    public var kwargs: [JSONMember]
    public var queue: String
    public var misfire: MisfirePolicy
    /// No fire before `start` (an `every:` entry counts its intervals from it), none after `end`.
    public var start: Date?
    public var end: Date?
    /// At most this many fires in all (the beat keeps the count).
    public var limit: Int?
    /// The task's `unique:` policy (from its manifest entry): a tick whose call is still
    /// queued or running is skipped.
    public var unique: UniqueSpec?

    public init(name: String, task: String, rule: ScheduleRule, timeZone: TimeZone = TimeZone(identifier: "UTC")!, args: [JSONValue] = [],
                kwargs: [JSONMember] = [], queue: String = "celery", misfire: MisfirePolicy = .skip, start: Date? = nil, end: Date? = nil, limit: Int? = nil) {
        self.name = name
        self.task = task
        self.rule = rule
        self.timeZone = timeZone
        self.args = args
        self.kwargs = kwargs
        self.queue = queue
        self.misfire = misfire
        self.start = start
        self.end = end
        self.limit = limit
    }

    /// The first fire time strictly after `after`, within `start`…`end`; nil when there is
    /// none. `every:` times are `start + k × interval` (aligned to the Unix epoch when there
    /// is no `start`, so every node computes the same ticks).
    public func nextFire(after: Date) -> Date? {
        var t = after
        if let start, start > after {
            // `start` itself is a candidate: look from just before it.
            t = start.addingTimeInterval(-0.000_001)
        }
        let next: Date?
        switch rule {
        case let .cron(c): next = c.next(after: t, in: timeZone)
        case let .every(e):
            let anchor = start.map { Int(ceil($0.timeIntervalSince1970)) } ?? 0
            let x = Int(floor(t.timeIntervalSince1970))
            let k = Civil.floorDivMod(x - anchor, e.seconds).0 + 1
            next = Date(timeIntervalSince1970: Double(anchor + k * e.seconds))
        }
        guard let next else { return nil }
        if let end, next > end { return nil }
        return next
    }

    /// As `nextFire(after:)`, and nil once the entry has fired `limit` times.
    public func nextFire(after: Date, firedCount: Int) -> Date? {
        if let limit, firedCount >= limit { return nil }
        return nextFire(after: after)
    }
}

/// ISO 8601 instants for `start:` and `end:`.
public enum ScheduleDate {
    /// `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS[.fff]]` with `Z` or `±HH:MM` (or `±HHMM`, `±HH`);
    /// a space may replace `T`. Without an offset the time (or midnight) is read on the wall
    /// clock of `zone` (a skipped local time means the end of the gap; a repeated one, its
    /// first occurrence).
    public static func parse(_ text: String, zone: TimeZone) throws(ScheduleError) -> Date {
        let bad = ScheduleError("'\(text)' is not an ISO 8601 date or time (e.g. 2026-07-01, 2026-07-01T09:30:00Z, 2026-07-01T09:30:00+02:00)")
        let c = Array(text.trimmingCharacters(in: .whitespaces).utf8)
        var i = 0
        func num(_ width: Int) -> Int? {
            guard i + width <= c.count else { return nil }
            var v = 0
            for k in i..<(i + width) {
                guard c[k] >= 48 && c[k] <= 57 else { return nil }
                v = v * 10 + Int(c[k] - 48)
            }
            i += width
            return v
        }
        func eat(_ ch: Character) -> Bool {
            if i < c.count && c[i] == ch.asciiValue! { i += 1; return true }
            return false
        }
        guard let y = num(4), eat("-"), let mo = num(2), eat("-"), let d = num(2) else { throw bad }
        guard (1...12).contains(mo), (1...Civil.daysIn(year: y, month: mo)).contains(d) else {
            throw ScheduleError("'\(text)': there is no day \(d) in month \(mo) of \(y)")
        }
        var h = 0, mi = 0, s = 0
        var fraction = 0.0
        var offset: Int?
        if i < c.count {
            guard eat("T") || eat("t") || eat(" ") else { throw bad }
            guard let hh = num(2), eat(":"), let mm = num(2) else { throw bad }
            h = hh; mi = mm
            if eat(":") {
                guard let ss = num(2) else { throw bad }
                s = ss
                if eat(".") || eat(",") {
                    var digits = 0, scale = 1.0
                    while i < c.count, c[i] >= 48, c[i] <= 57 { scale /= 10; fraction += Double(c[i] - 48) * scale; i += 1; digits += 1 }
                    if digits == 0 { throw bad }
                }
            }
            guard h <= 23, mi <= 59, s <= 59 else { throw ScheduleError("'\(text)': the time of day is out of range") }
            if i < c.count {
                if eat("Z") || eat("z") { offset = 0 } else {
                    let sign: Int
                    if eat("+") { sign = 1 } else if eat("-") { sign = -1 } else { throw bad }
                    guard let oh = num(2) else { throw bad }
                    var om = 0
                    if eat(":") { guard let m = num(2) else { throw bad }; om = m } else if let m = num(2) { om = m }
                    guard oh <= 23, om <= 59 else { throw bad }
                    offset = sign * (oh * 3600 + om * 60)
                }
            }
            guard i == c.count else { throw bad }
        }
        let local = Civil.days(year: y, month: mo, day: d) * 86400 + h * 3600 + mi * 60 + s
        if let offset { return Date(timeIntervalSince1970: Double(local - offset) + fraction) }
        return Date(timeIntervalSince1970: Double(instant(ofLocal: local, in: zone)) + fraction)
    }

    /// `2026-12-03T03:00:00+01:00`: the wall-clock time in `zone` with its offset (`Z` in UTC).
    public static func format(_ date: Date, in zone: TimeZone) -> String {
        let t = Int(floor(date.timeIntervalSince1970))
        let o = zone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(t)))
        let (days, sod) = Civil.floorDivMod(t + o, 86400)
        let (y, m, d) = Civil.date(days)
        func two(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }
        let zoneText = o == 0 ? "Z" : (o < 0 ? "-" : "+") + two(abs(o) / 3600) + ":" + two(abs(o) / 60 % 60)
        return "\(y)-\(two(m))-\(two(d))T\(two(sod / 3600)):\(two(sod / 60 % 60)):\(two(sod % 60))" + zoneText
    }

    /// The first instant whose wall-clock time in `zone` is `local`; for a skipped local time,
    /// the end of the gap.
    static func instant(ofLocal local: Int, in zone: TimeZone) -> Int {
        func offset(_ t: Int) -> Int { zone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(t))) }
        // Candidate offsets: those around the time (a day either side covers any transition).
        let guesses = Set([offset(local - 86400 * 2), offset(local), offset(local + 86400 * 2)]).sorted(by: >)
        for o in guesses where offset(local - o) == o { return local - o }
        // In a gap: the transition after the earliest candidate.
        let t = local - (guesses.first ?? 0)
        return zone.nextDaylightSavingTimeTransition(after: Date(timeIntervalSince1970: Double(t))).map { Int($0.timeIntervalSince1970) } ?? t
    }
}
