import Foundation

/// A cron expression problem: which field, what is wrong, and where (1-based column within
/// the expression text).
public struct CronError: Error, Sendable, Hashable, CustomStringConvertible {
    /// `second`, `minute`, `hour`, `day-of-month`, `month` or `day-of-week`; nil for the
    /// expression as a whole (wrong number of fields, unknown macro).
    public var field: String?
    /// 1-based column of the offending text within the expression.
    public var column: Int
    public var message: String
    public init(field: String?, column: Int, _ message: String) {
        self.field = field
        self.column = column
        self.message = message
    }
    /// `field 'hour', column 3: value 25 is out of range 0-23`.
    public var description: String {
        (field.map { "field '\($0)', column \(column): " } ?? "column \(column): ") + message
    }
}

/// A cron expression in Vixie cron's dialect (what cronie and most crontabs accept), with an
/// optional leading seconds field:
///
///     ┌ second (0–59, optional: 6 fields)
///     │ ┌ minute (0–59)
///     │ │ ┌ hour (0–23)
///     │ │ │ ┌ day of month (1–31)
///     │ │ │ │ ┌ month (1–12 or JAN–DEC)
///     │ │ │ │ │ ┌ day of week (0–7 or SUN–SAT; 0 and 7 are Sunday)
///     * * * * * *
///
/// Each field is `*` or a comma list of values and ranges (`a-b`), any of them with a step
/// (`*/15`, `1-30/5`, `5/20` = `5-59/20`). Names are case-insensitive. Macros: `@yearly`
/// (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`), `@hourly`.
///
/// Day rule (Vixie): when both day-of-month and day-of-week are restricted (neither field
/// starts with `*`), a day matches if EITHER matches; otherwise both must.
///
/// Time zones (Vixie's rule, see `next(after:in:)`): a *fixed-time* expression (neither the
/// minute nor the hour field starts with `*`) whose local time is skipped by a forward
/// transition fires once, at the first instant after the gap; a local time repeated by a
/// backward transition fires once, at its first occurrence. Other expressions follow the
/// wall clock: skipped local times do not happen, repeated ones happen twice.
public struct CronExpression: Sendable, Hashable, CustomStringConvertible {
    /// The text it was parsed from.
    public let source: String
    let seconds: Bits
    let minutes: Bits
    let hours: Bits
    let daysOfMonth: Bits
    let months: Bits
    /// 0 = Sunday … 6 = Saturday (7 is folded onto 0).
    let weekdays: Bits
    let domStar: Bool
    let dowStar: Bool
    /// A leading seconds field was given.
    public let hasSeconds: Bool
    /// Neither the minute nor the hour field starts with `*` (Vixie's "non-wildcard" job): the
    /// DST catch-up and no-repeat rules apply.
    public let isFixedTime: Bool

    public var description: String { source }

    static let macros: [String: String] = [
        "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
        "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
    ]
    static let monthNames = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    static let weekdayNames = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]

    struct FieldKind {
        let name: String
        let low: Int
        let high: Int
        let names: [String]   // names[i] is value low + i (months) or i (weekdays)
    }
    static let secondField = FieldKind(name: "second", low: 0, high: 59, names: [])
    static let minuteField = FieldKind(name: "minute", low: 0, high: 59, names: [])
    static let hourField = FieldKind(name: "hour", low: 0, high: 23, names: [])
    static let domField = FieldKind(name: "day-of-month", low: 1, high: 31, names: [])
    static let monthField = FieldKind(name: "month", low: 1, high: 12, names: monthNames)
    static let dowField = FieldKind(name: "day-of-week", low: 0, high: 7, names: weekdayNames)

    public init(_ text: String) throws(CronError) {
        let chars = Array(text)
        // Fields with their 1-based starting columns.
        var fields: [(text: String, column: Int)] = []
        var i = 0
        while i < chars.count {
            if chars[i] == " " || chars[i] == "\t" { i += 1; continue }
            let start = i
            while i < chars.count && chars[i] != " " && chars[i] != "\t" { i += 1 }
            fields.append((String(chars[start..<i]), start + 1))
        }
        guard let first = fields.first else { throw CronError(field: nil, column: 1, "the expression is empty (expected 5 fields, 6 with seconds, or a macro such as @daily)") }
        if first.text.hasPrefix("@") {
            let macro = first.text.lowercased()
            if fields.count > 1 {
                throw CronError(field: nil, column: fields[1].column, "unexpected '\(fields[1].text)' after \(first.text) (a macro stands alone)")
            }
            if macro == "@reboot" {
                throw CronError(field: nil, column: first.column, "@reboot is not supported: a schedule fires at clock times, and there is no single \"boot\" in a cluster of beats and workers")
            }
            guard let expansion = CronExpression.macros[macro] else {
                throw CronError(field: nil, column: first.column, "unknown macro '\(first.text)' (known: @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly)")
            }
            let e = try CronExpression(expansion)
            self = e.renamed(text)
            return
        }
        guard fields.count == 5 || fields.count == 6 else {
            let col = fields.count > 6 ? fields[6].column : chars.count + 1
            throw CronError(field: nil, column: col, "expected 5 fields (minute hour day-of-month month day-of-week) or 6 with a leading second, found \(fields.count)")
        }
        source = text
        hasSeconds = fields.count == 6
        let f = hasSeconds ? fields : [("0", 0)] + fields
        seconds = hasSeconds ? try CronExpression.parseField(f[0].0, column: f[0].1, CronExpression.secondField) : Bits(0)
        minutes = try CronExpression.parseField(f[1].0, column: f[1].1, CronExpression.minuteField)
        hours = try CronExpression.parseField(f[2].0, column: f[2].1, CronExpression.hourField)
        daysOfMonth = try CronExpression.parseField(f[3].0, column: f[3].1, CronExpression.domField)
        months = try CronExpression.parseField(f[4].0, column: f[4].1, CronExpression.monthField)
        var dow = try CronExpression.parseField(f[5].0, column: f[5].1, CronExpression.dowField)
        if dow.contains(7) { dow = dow.inserting(0) }
        weekdays = dow.removing(7)
        domStar = f[3].0.hasPrefix("*")
        dowStar = f[5].0.hasPrefix("*")
        isFixedTime = !f[1].0.hasPrefix("*") && !f[2].0.hasPrefix("*")
        // A day-of-month that no chosen month has would never fire (unless day-of-week ORs in).
        if domStar || dowStar {
            let maxDays = [0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
            let possible = (1...12).contains { m in months.contains(m) && (1...maxDays[m]).contains { daysOfMonth.contains($0) } }
            if !possible {
                throw CronError(field: "day-of-month", column: f[3].1, "day \(f[3].0) never occurs in month \(f[4].0): the expression would never fire")
            }
        }
    }

    private init(copying e: CronExpression, source: String) {
        self.source = source
        seconds = e.seconds; minutes = e.minutes; hours = e.hours; daysOfMonth = e.daysOfMonth
        months = e.months; weekdays = e.weekdays; domStar = e.domStar; dowStar = e.dowStar
        hasSeconds = e.hasSeconds; isFixedTime = e.isFixedTime
    }
    private func renamed(_ text: String) -> CronExpression { CronExpression(copying: self, source: text) }

    static func parseField(_ text: String, column: Int, _ kind: FieldKind) throws(CronError) -> Bits {
        var bits = Bits(empty: ())
        var offset = 0
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let col = column + offset
            offset += part.count + 1
            if part.isEmpty { throw CronError(field: kind.name, column: col, "empty item in the list '\(text)'") }
            var base = Substring(part)
            var step = 1
            var stepGiven = false
            if let slash = part.firstIndex(of: "/") {
                base = part[..<slash]
                let stepText = part[part.index(after: slash)...]
                let stepCol = col + base.count + 1
                guard !stepText.isEmpty, stepText.allSatisfy(\.isCronDigit), let s = Int(stepText) else {
                    throw CronError(field: kind.name, column: stepCol, "step '\(stepText)' must be a positive whole number")
                }
                let span = kind.high - kind.low + 1
                guard s >= 1 && s <= span else {
                    throw CronError(field: kind.name, column: stepCol, "step \(s) is out of range 1-\(span)")
                }
                step = s
                stepGiven = true
            }
            var lo: Int, hi: Int
            if base == "*" {
                lo = kind.low
                hi = kind.name == "day-of-week" ? 6 : kind.high
            } else if let dash = base.firstIndex(of: "-"), dash != base.startIndex {
                let a = base[..<dash], b = base[base.index(after: dash)...]
                lo = try value(a, column: col, kind)
                hi = try value(b, column: col + a.count + 1, kind)
                if hi < lo {
                    throw CronError(field: kind.name, column: col, "range \(base) goes backwards (\(lo) > \(hi)); split it, e.g. \(lo)-\(kind.high),\(kind.low)-\(hi)")
                }
            } else {
                lo = try value(base, column: col, kind)
                // `5/15` is `5-<last>/15` (cronie and croniter read it so).
                hi = stepGiven ? (kind.name == "day-of-week" ? 6 : kind.high) : lo
                if stepGiven && lo > hi { hi = lo }
            }
            var v = lo
            while v <= hi { bits = bits.inserting(v); v += step }
        }
        return bits
    }

    static func value(_ token: Substring, column: Int, _ kind: FieldKind) throws(CronError) -> Int {
        if token.isEmpty { throw CronError(field: kind.name, column: column, "a value is missing") }
        if token.allSatisfy(\.isCronDigit) {
            guard let v = Int(token), v >= kind.low, v <= kind.high else {
                throw CronError(field: kind.name, column: column, "value \(token) is out of range \(kind.low)-\(kind.high)")
            }
            return v
        }
        if token.hasPrefix("-") { throw CronError(field: kind.name, column: column, "negative values are not allowed") }
        if !kind.names.isEmpty, let i = kind.names.firstIndex(of: token.lowercased()) {
            return kind.name == "month" ? i + 1 : i
        }
        if kind.names.isEmpty {
            throw CronError(field: kind.name, column: column, "'\(token)' is not a number (\(kind.low)-\(kind.high))")
        }
        let known = kind.names.map { $0.uppercased() }
        throw CronError(field: kind.name, column: column, "'\(token)' is neither a number (\(kind.low)-\(kind.high)) nor a name (\(known.first!)…\(known.last!))")
    }

    // MARK: matching

    func dayMatches(year: Int, month: Int, day: Int) -> Bool {
        let dom = daysOfMonth.contains(day)
        let dow = weekdays.contains(Civil.weekday(Civil.days(year: year, month: month, day: day)))
        return domStar || dowStar ? dom && dow : dom || dow
    }

    /// Whether the expression matches this wall-clock time (local seconds, see `Civil`).
    public func matches(localSeconds l: Int) -> Bool {
        let (days, sod) = Civil.floorDivMod(l, 86400)
        let (y, m, d) = Civil.date(days)
        return months.contains(m) && dayMatches(year: y, month: m, day: d) && hours.contains(sod / 3600)
            && minutes.contains(sod / 60 % 60) && seconds.contains(sod % 60)
    }

    /// The first matching wall-clock time at or after `l` (local seconds), skipping field by
    /// field; nil past year `maxYear`.
    func firstMatch(atOrAfter l: Int, maxYear: Int) -> Int? {
        let (days, sod) = Civil.floorDivMod(l, 86400)
        var (y, mo, d) = Civil.date(days)
        var h = sod / 3600, mi = sod / 60 % 60, s = sod % 60
        while true {
            if y > maxYear { return nil }
            if !months.contains(mo) {
                if let n = months.next(atLeast: mo + 1) { mo = n } else { y += 1; mo = months.next(atLeast: 1)! }
                d = 1; h = 0; mi = 0; s = 0
                continue
            }
            if d > Civil.daysIn(year: y, month: mo) {
                mo += 1
                if mo == 13 { mo = 1; y += 1 }
                d = 1; h = 0; mi = 0; s = 0
                continue
            }
            if !dayMatches(year: y, month: mo, day: d) { d += 1; h = 0; mi = 0; s = 0; continue }
            if !hours.contains(h) {
                if let n = hours.next(atLeast: h + 1) { h = n } else { d += 1; h = 0 }
                mi = 0; s = 0
                continue
            }
            if !minutes.contains(mi) {
                if let n = minutes.next(atLeast: mi + 1) { mi = n } else { h += 1; mi = 0; if h == 24 { h = 0; d += 1 } }
                s = 0
                continue
            }
            if !seconds.contains(s) {
                if let n = seconds.next(atLeast: s + 1) { s = n } else {
                    s = 0; mi += 1
                    if mi == 60 { mi = 0; h += 1; if h == 24 { h = 0; d += 1 } }
                }
                continue
            }
            return Civil.days(year: y, month: mo, day: d) * 86400 + h * 3600 + mi * 60 + s
        }
    }

    /// The next fire time strictly after `after` (whole seconds), evaluated on the wall clock
    /// of `zone`; nil when there is none within 400 years (a Gregorian cycle: never).
    ///
    /// Offset changes (DST, or a zone changing its standard offset) follow Vixie cron
    /// (cronie's cron.c, "time jumps"), applied to every change:
    /// - fixed-time expressions (`isFixedTime`): local times skipped by a forward jump fire
    ///   once, at the instant the jump happens (the first instant after the gap), however
    ///   many of them matched; local times repeated by a backward jump fire only at their
    ///   first occurrence;
    /// - wildcard expressions (minute or hour starting with `*`): follow the wall clock;
    ///   skipped local times never happen, repeated ones fire in both passes (an "every 15
    ///   minutes" job keeps firing every 15 real minutes through the repeated hour).
    /// (Vixie cron only applies this to jumps under 3 hours and treats bigger ones as the
    /// clock being set; here it applies to every transition of the zone's rules.)
    public func next(after: Date, in zone: TimeZone) -> Date? {
        var from = Int(floor(after.timeIntervalSince1970)) + 1
        let maxYear = Civil.date(Civil.floorDivMod(from, 86400).0).year + 400
        func offset(_ t: Int) -> Int { zone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(t))) }
        func transition(after t: Int) -> Int? {
            zone.nextDaylightSavingTimeTransition(after: Date(timeIntervalSince1970: Double(t))).map { Int($0.timeIntervalSince1970.rounded()) }
        }
        // The segment (run of constant offset) `from` is in, and the transition that began it
        // (if within a week: older ones no longer matter).
        var segmentStart: Int?
        var cursor = from - 7 * 86400
        while let t = transition(after: cursor), t <= from { segmentStart = t; cursor = t }
        var previousOffset = segmentStart.map { offset($0 - 1) }
        for _ in 0..<2000 {
            let o = offset(from)
            let end = transition(after: from)
            var lower = from + o
            if isFixedTime, let start = segmentStart, let before = previousOffset {
                if before < o && start == from {
                    // Forward jump at `from`: local times [start+before, start+o) were skipped.
                    if let w = firstMatch(atOrAfter: start + before, maxYear: maxYear), w < start + o { return Date(timeIntervalSince1970: Double(from)) }
                } else if before > o {
                    // Backward jump: local times [start+o, start+before) already happened once.
                    lower = max(lower, start + before)
                }
            }
            guard let w = firstMatch(atOrAfter: lower, maxYear: maxYear) else { return nil }
            guard let end, w >= end + o else { return Date(timeIntervalSince1970: Double(w - o)) }
            segmentStart = end
            previousOffset = o
            from = end
        }
        return nil
    }
}

/// A set of small integers (0…63).
struct Bits: Sendable, Hashable {
    var raw: UInt64
    init(empty: ()) { raw = 0 }
    init(_ single: Int) { raw = 1 << UInt64(single) }
    func contains(_ v: Int) -> Bool { v >= 0 && v < 64 && raw & (1 << UInt64(v)) != 0 }
    func inserting(_ v: Int) -> Bits { var b = self; b.raw |= 1 << UInt64(v); return b }
    func removing(_ v: Int) -> Bits { var b = self; b.raw &= ~(1 << UInt64(v)); return b }
    /// The smallest member ≥ v.
    func next(atLeast v: Int) -> Int? {
        guard v < 64 else { return nil }
        let masked = raw & (~UInt64(0) << UInt64(max(v, 0)))
        return masked == 0 ? nil : masked.trailingZeroBitCount
    }
}

/// Proleptic Gregorian civil dates as day numbers since 1970-01-01, and wall-clock times as
/// "local seconds" (day number × 86400 + second of day), independent of any time zone.
public enum Civil {
    public static func floorDivMod(_ a: Int, _ b: Int) -> (Int, Int) {
        let q = a >= 0 ? a / b : -((-a + b - 1) / b)
        return (q, a - q * b)
    }
    /// Days since 1970-01-01 (Howard Hinnant's days_from_civil).
    public static func days(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146097 + doe - 719468
    }
    public static func date(_ days: Int) -> (year: Int, month: Int, day: Int) {
        let z = days + 719468
        let era = (z >= 0 ? z : z - 146096) / 146097
        let doe = z - era * 146097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (m <= 2 ? 1 : 0), m, d)
    }
    /// 0 = Sunday.
    public static func weekday(_ days: Int) -> Int { floorDivMod(days + 4, 7).1 }
    public static func isLeap(_ y: Int) -> Bool { y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) }
    public static func daysIn(year: Int, month: Int) -> Int {
        switch month {
        case 2: return isLeap(year) ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }
    /// Wall-clock local seconds of an instant in a zone.
    public static func localSeconds(_ date: Date, in zone: TimeZone) -> Int {
        Int(floor(date.timeIntervalSince1970)) + zone.secondsFromGMT(for: date)
    }
}

extension Character {
    var isCronDigit: Bool { isASCII && isNumber }
}
