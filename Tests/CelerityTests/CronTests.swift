import Foundation
import Testing
@testable import Celerity

/// Cron expressions, `every:` durations and schedule entries: unit cases, then property tests
/// against Python (Celery 5.7's own `crontab`, and croniter for Vixie's day rule and DST).
@Suite struct CronTests {
    static let utc = TimeZone(identifier: "UTC")!
    static let paris = TimeZone(identifier: "Europe/Paris")!
    static let newYork = TimeZone(identifier: "America/New_York")!
    static let sydney = TimeZone(identifier: "Australia/Sydney")!

    /// An instant from an ISO 8601 text with an offset.
    func at(_ text: String) -> Date { try! ScheduleDate.parse(text, zone: CronTests.utc) }
    func fmt(_ d: Date?, _ zone: TimeZone = CronTests.utc) -> String { d.map { ScheduleDate.format($0, in: zone) } ?? "nil" }

    /// The first `count` fire times after `start`, each found from the previous one.
    func fires(_ expr: String, after start: String, _ zone: TimeZone = CronTests.utc, count: Int = 1) throws -> [String] {
        let c = try CronExpression(expr)
        var out: [String] = []
        var t = at(start)
        for _ in 0..<count {
            guard let n = c.next(after: t, in: zone) else { out.append("nil"); break }
            out.append(fmt(n, zone))
            t = n
        }
        return out
    }

    // MARK: syntax

    @Test func stepsRangesAndLists() throws {
        #expect(try fires("*/15 * * * *", after: "2026-05-04T10:07:00Z", count: 3) == ["2026-05-04T10:15:00Z", "2026-05-04T10:30:00Z", "2026-05-04T10:45:00Z"])
        #expect(try fires("1-30/5 10 * * *", after: "2026-05-04T10:00:00Z", count: 7)
                == ["01", "06", "11", "16", "21", "26"].map { "2026-05-04T10:\($0):00Z" } + ["2026-05-05T10:01:00Z"])
        #expect(try fires("5,20-22,50 8 * * *", after: "2026-05-04T08:06:00Z", count: 5)
                == ["2026-05-04T08:20:00Z", "2026-05-04T08:21:00Z", "2026-05-04T08:22:00Z", "2026-05-04T08:50:00Z", "2026-05-05T08:05:00Z"])
        // `N/step` is `N-<last>/step`.
        #expect(try fires("40/7 3 * * *", after: "2026-05-04T00:00:00Z", count: 3) == ["2026-05-04T03:40:00Z", "2026-05-04T03:47:00Z", "2026-05-04T03:54:00Z"])
        // Strictly after: a matching `after` is not returned again.
        #expect(try fires("0 12 * * *", after: "2026-05-04T12:00:00Z") == ["2026-05-05T12:00:00Z"])
        #expect(try fires("0 12 * * *", after: "2026-05-04T11:59:59.5Z") == ["2026-05-04T12:00:00Z"])
    }

    @Test func namesAreCaseInsensitiveAndSevenIsSunday() throws {
        // 2026-05-04 is a Monday.
        #expect(try fires("0 9 * jan,MAY,Jul mon-FRI", after: "2026-05-08T10:00:00Z", count: 2) == ["2026-05-11T09:00:00Z", "2026-05-12T09:00:00Z"])
        #expect(try fires("0 0 * * 7", after: "2026-05-04T00:00:00Z") == ["2026-05-10T00:00:00Z"])
        #expect(try fires("0 0 * * 0", after: "2026-05-04T00:00:00Z") == ["2026-05-10T00:00:00Z"])
        #expect(try fires("0 0 * * SUN", after: "2026-05-04T00:00:00Z") == ["2026-05-10T00:00:00Z"])
        #expect(try fires("0 0 * * 5-7", after: "2026-05-04T00:00:00Z", count: 4)
                == ["2026-05-08T00:00:00Z", "2026-05-09T00:00:00Z", "2026-05-10T00:00:00Z", "2026-05-15T00:00:00Z"])
        #expect(try fires("0 0 1 feb-apr *", after: "2026-05-04T00:00:00Z", count: 2) == ["2027-02-01T00:00:00Z", "2027-03-01T00:00:00Z"])
    }

    @Test func optionalLeadingSecondsField() throws {
        let c = try CronExpression("*/20 30 9 * * *")
        #expect(c.hasSeconds)
        #expect(try fires("*/20 30 9 * * *", after: "2026-05-04T09:30:00Z", count: 3) == ["2026-05-04T09:30:20Z", "2026-05-04T09:30:40Z", "2026-05-05T09:30:00Z"])
        #expect(try fires("* * * * * *", after: "2026-12-31T23:59:59Z") == ["2027-01-01T00:00:00Z"])
    }

    @Test func macros() throws {
        let after = "2026-05-04T10:07:00Z"
        #expect(try fires("@hourly", after: after) == ["2026-05-04T11:00:00Z"])
        #expect(try fires("@daily", after: after) == ["2026-05-05T00:00:00Z"])
        #expect(try fires("@midnight", after: after) == ["2026-05-05T00:00:00Z"])
        #expect(try fires("@weekly", after: after) == ["2026-05-10T00:00:00Z"])
        #expect(try fires("@monthly", after: after) == ["2026-06-01T00:00:00Z"])
        #expect(try fires("@yearly", after: after) == ["2027-01-01T00:00:00Z"])
        #expect(try fires("@ANNUALLY", after: after) == ["2027-01-01T00:00:00Z"])
        #expect(try CronExpression("@daily").source == "@daily")
    }

    @Test func vixieDayRule() throws {
        // Both restricted: the 13th OR any Friday.
        #expect(try fires("0 0 13 * 5", after: "2026-01-01T00:00:00Z", count: 4)
                == ["2026-01-02T00:00:00Z", "2026-01-09T00:00:00Z", "2026-01-13T00:00:00Z", "2026-01-16T00:00:00Z"])
        // A field starting with `*` makes it AND: odd days that are Mondays.
        #expect(try fires("0 0 */2 * 1", after: "2026-03-01T00:00:00Z", count: 2) == ["2026-03-09T00:00:00Z", "2026-03-23T00:00:00Z"])
        #expect(try fires("0 0 1-7 * */7", after: "2026-03-01T00:00:00Z", count: 2) == ["2026-04-05T00:00:00Z", "2026-05-03T00:00:00Z"])
        // Only day-of-week restricted: every Wednesday.
        #expect(try fires("0 0 * * wed", after: "2026-03-01T00:00:00Z", count: 2) == ["2026-03-04T00:00:00Z", "2026-03-11T00:00:00Z"])
    }

    @Test func leapDaysAndShortMonths() throws {
        #expect(try fires("0 0 29 2 *", after: "2026-01-01T00:00:00Z", count: 3) == ["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z", "2036-02-29T00:00:00Z"])
        // 2100 is not a leap year.
        #expect(try fires("59 23 29 2 *", after: "2096-03-01T00:00:00Z") == ["2104-02-29T23:59:00Z"])
        #expect(try fires("0 0 31 * *", after: "2026-01-31T00:00:00Z", count: 3) == ["2026-03-31T00:00:00Z", "2026-05-31T00:00:00Z", "2026-07-31T00:00:00Z"])
        #expect(try fires("0 0 28-31 2 *", after: "2027-02-27T00:00:00Z", count: 2) == ["2027-02-28T00:00:00Z", "2028-02-28T00:00:00Z"])
        #expect(try fires("0 0 30 1,2 *", after: "2026-01-30T00:00:00Z") == ["2027-01-30T00:00:00Z"])
    }

    @Test func farAwayTimesAreFoundQuickly() throws {
        let c = try CronExpression("59 23 29 2 *")
        let clock = ContinuousClock()
        var t = at("2000-01-01T00:00:00Z")
        let elapsed = clock.measure {
            for _ in 0..<100 { t = c.next(after: t, in: CronTests.paris)! }
        }
        #expect(fmt(t, CronTests.paris).hasPrefix("24"), "100 leap days after 2000 fall in the 2400s: \(fmt(t))")
        #expect(elapsed < .seconds(2), "100 leap-day searches took \(elapsed)")
    }

    @Test(arguments: [
        ("", nil, 1, "empty"),
        ("0 3 * *", nil, 8, "expected 5 fields"),
        ("0 3 * * * * *", nil, 13, "found 7"),
        ("60 * * * *", "minute", 1, "out of range 0-59"),
        ("0 24 * * *", "hour", 3, "out of range 0-23"),
        ("0 0 0 * *", "day-of-month", 5, "out of range 1-31"),
        ("0 0 32 * *", "day-of-month", 5, "out of range 1-31"),
        ("0 0 * 13 *", "month", 7, "out of range 1-12"),
        ("0 0 * * 8", "day-of-week", 9, "out of range 0-7"),
        ("61 0 0 * * *", "second", 1, "out of range 0-59"),
        ("*/0 * * * *", "minute", 3, "step 0"),
        ("*/61 * * * *", "minute", 3, "step 61"),
        ("*/x * * * *", "minute", 3, "step 'x'"),
        ("0 5-2 * * *", "hour", 3, "goes backwards"),
        ("0 1,,2 * * *", "hour", 5, "empty item"),
        ("0 0 * foo *", "month", 7, "'foo'"),
        ("0 0 * * MON-FRX", "day-of-week", 13, "'FRX'"),
        ("0 0 * JAN-DEX *", "month", 11, "'DEX'"),
        ("0 abc * * *", "hour", 3, "not a number"),
        ("0 -1 * * *", "hour", 3, "negative values"),
        ("0 0 30 2 *", "day-of-month", 5, "never occurs"),
        ("0 0 31 4,6 *", "day-of-month", 5, "never occurs"),
        ("@reboot", nil, 1, "@reboot is not supported"),
        ("@sometimes", nil, 1, "unknown macro"),
        ("@daily 5", nil, 8, "a macro stands alone"),
    ] as [(String, String?, Int, String)])
    func errorsSayWhichFieldWhatAndWhere(expr: String, field: String?, column: Int, words: String) {
        do {
            _ = try CronExpression(expr)
            Issue.record("'\(expr)' parsed")
        } catch {
            #expect(error.field == field, "\(expr): \(error)")
            #expect(error.column == column, "\(expr): \(error)")
            #expect(error.description.contains(words), "\(expr): \(error)")
        }
    }

    @Test func thirtyFirstOfFebruaryOrFridayIsFine() throws {
        // With both day fields restricted a day-of-week can still match (Vixie OR).
        #expect(try fires("0 0 30 2 fri", after: "2026-01-01T00:00:00Z", count: 2) == ["2026-02-06T00:00:00Z", "2026-02-13T00:00:00Z"])
    }

    // MARK: time zones and DST

    @Test func daylightSavingSpringForwardParis() throws {
        // 2026-03-29: 02:00 CET → 03:00 CEST. A fixed-time job in the gap fires once, at 03:00 CEST.
        #expect(try fires("30 2 * * *", after: "2026-03-28T12:00:00+01:00", .paris, count: 3)
                == ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"])
        // Several skipped times of one job: still once.
        #expect(try fires("0,30 2 * * *", after: "2026-03-29T01:00:00+01:00", .paris, count: 2)
                == ["2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00"])
        // Wildcard jobs follow the clock: 02:00 and 02:30 do not exist.
        #expect(try fires("*/30 * * * *", after: "2026-03-29T01:00:00+01:00", .paris, count: 3)
                == ["2026-03-29T01:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T03:30:00+02:00"])
        #expect(try fires("30 * * * *", after: "2026-03-29T01:40:00+01:00", .paris) == ["2026-03-29T03:30:00+02:00"])
        // A job at 03:00 itself fires once at 03:00.
        #expect(try fires("0 3 * * *", after: "2026-03-29T01:00:00+01:00", .paris) == ["2026-03-29T03:00:00+02:00"])
    }

    @Test func daylightSavingFallBackParis() throws {
        // 2026-10-25: 03:00 CEST → 02:00 CET; 02:00–02:59 happen twice. A fixed-time job fires at the first.
        #expect(try fires("30 2 * * *", after: "2026-10-24T12:00:00+02:00", .paris, count: 2)
                == ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"])
        // From inside the second pass: the repeated time is not fired again.
        #expect(try fires("45 2 * * *", after: "2026-10-25T02:10:00+01:00", .paris) == ["2026-10-26T02:45:00+01:00"])
        // A wildcard job keeps its real-time rhythm through both passes.
        #expect(try fires("*/30 * * * *", after: "2026-10-25T01:50:00+02:00", .paris, count: 6)
                == ["2026-10-25T02:00:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-25T02:00:00+01:00",
                    "2026-10-25T02:30:00+01:00", "2026-10-25T03:00:00+01:00", "2026-10-25T03:30:00+01:00"])
        #expect(try fires("0 * * * *", after: "2026-10-25T02:50:00+02:00", .paris) == ["2026-10-25T02:00:00+01:00"])
    }

    @Test func daylightSavingNewYorkAndSydney() throws {
        // New York 2026-03-08 02:00 EST → 03:00 EDT; 2026-11-01 02:00 EDT → 01:00 EST.
        #expect(try fires("30 2 * * *", after: "2026-03-07T12:00:00-05:00", .newYork, count: 2) == ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"])
        #expect(try fires("30 1 * * *", after: "2026-10-31T12:00:00-04:00", .newYork, count: 2) == ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"])
        // Sydney (southern hemisphere) 2026-04-05 03:00 AEDT → 02:00 AEST; 2026-10-04 02:00 AEST → 03:00 AEDT.
        #expect(try fires("15 2 * * *", after: "2026-04-04T12:00:00+11:00", .sydney, count: 2) == ["2026-04-05T02:15:00+11:00", "2026-04-06T02:15:00+10:00"])
        #expect(try fires("15 2 * * *", after: "2026-10-03T12:00:00+10:00", .sydney, count: 2) == ["2026-10-04T03:00:00+11:00", "2026-10-05T02:15:00+11:00"])
        // UTC fires on the UTC clock whatever the machine's zone.
        #expect(try fires("0 3 * * *", after: "2026-10-25T00:00:00Z", .utc) == ["2026-10-25T03:00:00Z"])
    }

    // MARK: every, dates, entries

    @Test func everyDurations() throws {
        for (text, seconds) in [("30s", 30), ("5m", 300), ("1h30m", 5400), ("2d", 172800), ("90", 90), ("1d2h3m4s", 93784), ("1H", 3600)] {
            #expect(try EveryInterval(parsing: text).seconds == seconds, "\(text)")
        }
        #expect(EveryInterval(seconds: 5400).description == "1h30m")
        for (text, words) in [("", "empty"), ("1h30", "no unit"), ("30x", "unexpected 'x'"), ("m", "needs a number"),
                              ("30m1h", "largest first"), ("1h1h", "largest first"), ("0s", "at least 1 second"), ("0", "at least 1 second"), ("-5s", "unexpected '-'")] {
            do {
                _ = try EveryInterval(parsing: text)
                Issue.record("'\(text)' parsed")
            } catch {
                #expect(error.message.contains(words), "\(text): \(error)")
            }
        }
    }

    @Test func isoDates() throws {
        #expect(fmt(try ScheduleDate.parse("2026-07-01", zone: .paris), .utc) == "2026-06-30T22:00:00Z")
        #expect(fmt(try ScheduleDate.parse("2026-07-01T09:30:00+05:30", zone: .paris), .utc) == "2026-07-01T04:00:00Z")
        #expect(fmt(try ScheduleDate.parse("2026-07-01 09:30", zone: .utc), .utc) == "2026-07-01T09:30:00Z")
        #expect(fmt(try ScheduleDate.parse("2026-07-01T09:30:00Z", zone: .paris), .utc) == "2026-07-01T09:30:00Z")
        // Naive times in a gap mean the end of the gap; repeated ones the first occurrence.
        #expect(fmt(try ScheduleDate.parse("2026-03-29T02:30", zone: .paris), .utc) == "2026-03-29T01:00:00Z")
        #expect(fmt(try ScheduleDate.parse("2026-10-25T02:30", zone: .paris), .utc) == "2026-10-25T00:30:00Z")
        for bad in ["tomorrow", "2026-02-30", "2026-13-01", "2026-07-01T25:00", "2026-07-01T09:30:00+2", "2026-07-01T09:30:00Q"] {
            #expect(throws: ScheduleError.self, "\(bad)") { _ = try ScheduleDate.parse(bad, zone: .utc) }
        }
    }

    @Test func entryNextFireHonoursStartEndAndLimit() throws {
        var e = ScheduleEntry(name: "p", task: "t", rule: .every(EveryInterval(seconds: 30)))
        // Aligned to the epoch: every node computes the same ticks.
        #expect(e.nextFire(after: Date(timeIntervalSince1970: 100.5)) == Date(timeIntervalSince1970: 120))
        #expect(e.nextFire(after: Date(timeIntervalSince1970: 120)) == Date(timeIntervalSince1970: 150))
        e.start = Date(timeIntervalSince1970: 1_000_007)
        #expect(e.nextFire(after: Date(timeIntervalSince1970: 5)) == Date(timeIntervalSince1970: 1_000_007))
        #expect(e.nextFire(after: Date(timeIntervalSince1970: 1_000_008)) == Date(timeIntervalSince1970: 1_000_037))
        e.end = Date(timeIntervalSince1970: 1_000_040)
        #expect(e.nextFire(after: Date(timeIntervalSince1970: 1_000_037)) == nil)
        e.limit = 2
        #expect(e.nextFire(after: Date(timeIntervalSince1970: 5), firedCount: 1) == Date(timeIntervalSince1970: 1_000_007))
        #expect(e.nextFire(after: Date(timeIntervalSince1970: 5), firedCount: 2) == nil)

        var c = ScheduleEntry(name: "n", task: "t", rule: .cron(try CronExpression("0 3 * * *")), timeZone: .paris)
        c.start = at("2026-07-01T03:00:00+02:00")
        #expect(fmt(c.nextFire(after: at("2026-01-01T00:00:00Z")), .paris) == "2026-07-01T03:00:00+02:00")
        #expect(fmt(c.nextFire(after: at("2026-07-01T03:00:00+02:00")), .paris) == "2026-07-02T03:00:00+02:00")
    }

    // MARK: property tests against Python

    /// Cases for the oracle and what Swift computed for each.
    struct Case {
        var expr: String
        var zone: TimeZone
        var after: Int
        var oracle: String
        var count: Int
    }

    /// Runs interop/cron_oracle.py once with all cases as JSON on stdin.
    func oracle(_ cases: [Case]) async throws -> [[String: Any]] {
        let input: [String: Any] = ["cases": cases.map { ["expr": $0.expr, "tz": $0.zone.identifier, "after": $0.after, "oracle": $0.oracle, "count": $0.count] as [String: Any] }]
        let file = NSTemporaryDirectory() + "cron-cases-\(UUID().uuidString).json"
        try JSONSerialization.data(withJSONObject: input).write(to: URL(fileURLWithPath: file))
        defer { try? FileManager.default.removeItem(atPath: file) }
        let r = try await ChildProcess.run("/bin/sh", ["-c", "exec \"$0\" \"$1\" < \"$2\"", Paths.python3, Paths.root + "/interop/cron_oracle.py", file], name: "cron-oracle")
        guard r.status == 0, let line = r.output.split(separator: "\n").last(where: { $0.hasPrefix("[") }),
              let list = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [[String: Any]], list.count == cases.count else {
            throw TestFailure("cron_oracle.py failed (\(r.status)): \(r.output.suffix(2000))")
        }
        return list
    }

    /// A small deterministic generator (SplitMix64).
    struct Seeded: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// A random field. `vixieOnly` allows what Celery's parser lacks (7 for Sunday, `N/step`).
    static func field(_ lo: Int, _ hi: Int, names: [String] = [], namesFrom: Int = 0, vixieOnly: Bool, _ g: inout Seeded) -> String {
        func v(_ a: Int, _ b: Int) -> String {
            let x = Int.random(in: a...b, using: &g)
            if !names.isEmpty, x - namesFrom < names.count, x >= namesFrom, Int.random(in: 0..<4, using: &g) == 0 {
                let n = names[x - namesFrom]
                return Bool.random(using: &g) ? n.uppercased() : n
            }
            return String(x)
        }
        func range() -> String {
            let a = Int.random(in: lo...hi, using: &g), b = Int.random(in: a...hi, using: &g)
            return "\(v(a, a))-\(v(b, b))"
        }
        let span = hi - lo + 1
        switch Int.random(in: 0..<10, using: &g) {
        case 0, 1: return "*"
        case 2: return "*/\(Int.random(in: 2...max(2, span / 2), using: &g))"
        case 3, 4: return v(lo, hi)
        case 5: return range()
        case 6: return "\(range())/\(Int.random(in: 1...max(1, span / 3), using: &g))"
        case 7: return (0..<Int.random(in: 2...4, using: &g)).map { _ in Bool.random(using: &g) ? v(lo, hi) : range() }.joined(separator: ",")
        case 8: return vixieOnly ? "\(Int.random(in: lo...hi, using: &g))/\(Int.random(in: 1...max(1, span / 2), using: &g))" : v(lo, hi)
        default: return vixieOnly && hi == 6 ? "7" : "*"
        }
    }

    /// Random valid 5-field expressions; with `celery`, only those Celery reads the same way
    /// (a day field starting with `*`, so both ANDs; no 7, no `N/step`).
    static func expressions(_ n: Int, celery: Bool, seconds: Bool = false, seed: UInt64) -> [String] {
        var g = Seeded(state: seed)
        var out: [String] = []
        let months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
        let days = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
        while out.count < n {
            let vixie = !celery
            var minute = field(0, 59, vixieOnly: vixie, &g)
            var hour = field(0, 23, vixieOnly: vixie, &g)
            // Hours near the DST changes are interesting: bias some expressions towards 1–3.
            if Int.random(in: 0..<4, using: &g) == 0 { hour = ["2", "1-3", "2,14", "*/2", "3", "1"][Int.random(in: 0..<6, using: &g)] }
            if Int.random(in: 0..<6, using: &g) == 0 { minute = ["0", "30", "*/15", "15,45"][Int.random(in: 0..<4, using: &g)] }
            var dom = field(1, 31, vixieOnly: vixie, &g)
            let month = Int.random(in: 0..<3, using: &g) == 0 ? field(1, 12, names: months, namesFrom: 1, vixieOnly: vixie, &g) : "*"
            var dow = Int.random(in: 0..<2, using: &g) == 0 ? field(0, 6, names: days, vixieOnly: vixie, &g) : "*"
            if celery && !dom.hasPrefix("*") && !dow.hasPrefix("*") {
                if Bool.random(using: &g) { dom = "*" } else { dow = "*" }
            }
            var expr = "\(minute) \(hour) \(dom) \(month) \(dow)"
            if seconds { expr = field(0, 59, vixieOnly: true, &g) + " " + expr }
            if (try? CronExpression(expr)) != nil { out.append(expr) }
        }
        return out
    }

    /// Start instants: spread over 2026, and around each DST change of the zone in 2026.
    static func starts(_ zone: TimeZone, _ n: Int, _ g: inout Seeded) -> [Int] {
        let year = 1_767_225_600 // 2026-01-01T00:00:00Z
        var transitions: [Int] = []
        var t = Date(timeIntervalSince1970: Double(year))
        while let x = zone.nextDaylightSavingTimeTransition(after: t), x.timeIntervalSince1970 < Double(year + 365 * 86400) {
            transitions.append(Int(x.timeIntervalSince1970))
            t = x
        }
        var out: [Int] = []
        for i in 0..<n {
            if !transitions.isEmpty && i % 3 != 0 {
                let tr = transitions[i % transitions.count]
                // Within three days before the change, or inside the hours around it; whole minutes mostly.
                let offset = i % 2 == 0 ? Int.random(in: -3 * 86400...3600, using: &g) : Int.random(in: -7200...7200, using: &g)
                var x = tr + offset
                if Bool.random(using: &g) { x = x / 60 * 60 }
                out.append(x)
            } else {
                out.append(year + Int.random(in: 0..<(365 * 86400), using: &g))
            }
        }
        return out
    }

    /// How many instants have this wall-clock time in the zone (0: skipped, 2: repeated).
    static func occurrences(ofLocal l: Int, _ zone: TimeZone) -> Int {
        let offsets = Set([-2, 0, 2].map { zone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(l + $0 * 86400))) })
        return offsets.filter { zone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(l - $0))) == $0 }.count
    }

    /// Swift's chain of `count` fires after `after`.
    static func chain(_ expr: String, _ zone: TimeZone, after: Int, count: Int) -> [Int] {
        let c = try! CronExpression(expr)
        var t = Date(timeIntervalSince1970: Double(after))
        var out: [Int] = []
        for _ in 0..<count {
            guard let n = c.next(after: t, in: zone) else { break }
            out.append(Int(n.timeIntervalSince1970))
            t = n
        }
        return out
    }

    static let zones: [TimeZone] = [utc, paris, newYork, sydney]

    /// Celery 5.7's crontab, for the expressions and instants where both mean the same thing:
    /// day-of-month or day-of-week starting with `*` (both AND the day fields) and no DST
    /// ambiguity: Celery computes on the wall clock and then localizes, so a fire whose local
    /// time is skipped or repeated, or a search starting inside a repeated hour, differs
    /// (counted, and checked against croniter in the next test).
    @Test func agreesWithCeleryCrontab() async throws {
        let exprs = CronTests.expressions(300, celery: true, seed: 13)
        var g = Seeded(state: 7)
        var cases: [Case] = []
        for (i, e) in exprs.enumerated() {
            let zone = CronTests.zones[i % CronTests.zones.count]
            for s in CronTests.starts(zone, 6, &g) { cases.append(Case(expr: e, zone: zone, after: s, oracle: "celery", count: 3)) }
        }
        let answers = try await oracle(cases)
        var compared = 0, dstDifferences = 0
        var failures: [String] = []
        for (c, a) in zip(cases, answers) {
            guard let theirs = a["next"] as? [Int], let theirWalls = a["wall"] as? [Int] else {
                failures.append("\(c.expr) [\(c.zone.identifier)] after \(c.after): Celery: \(a["error"] ?? "?")")
                continue
            }
            let ours = CronTests.chain(c.expr, c.zone, after: c.after, count: c.count)
            var previous = c.after
            var previousTheirsOdd = false
            for i in 0..<min(ours.count, theirs.count) {
                if ours[i] == theirs[i] {
                    compared += 1
                    previous = ours[i]
                    // Celery continues from its own wall time, which may be one the gap skipped.
                    previousTheirsOdd = CronTests.occurrences(ofLocal: theirWalls[i], c.zone) != 1
                    continue
                }
                let startAmbiguous = previousTheirsOdd || CronTests.occurrences(ofLocal: Civil.localSeconds(Date(timeIntervalSince1970: Double(previous)), in: c.zone), c.zone) != 1
                let theirsOdd = CronTests.occurrences(ofLocal: theirWalls[i], c.zone) != 1
                let oursWall = Civil.localSeconds(Date(timeIntervalSince1970: Double(ours[i])), in: c.zone)
                let oursCatchUp = CronTests.occurrences(ofLocal: oursWall - 1, c.zone) == 0   // just after a gap
                if startAmbiguous || theirsOdd || oursCatchUp { dstDifferences += 1 } else {
                    failures.append("\(c.expr) [\(c.zone.identifier)] after \(fmt(Date(timeIntervalSince1970: Double(previous)), c.zone)): "
                                    + "Celerity \(fmt(Date(timeIntervalSince1970: Double(ours[i])), c.zone)), Celery \(fmt(Date(timeIntervalSince1970: Double(theirs[i])), c.zone))")
                }
                break
            }
        }
        #expect(failures.isEmpty, "\(failures.count) disagreements with Celery, e.g.:\n\(failures.prefix(15).joined(separator: "\n"))")
        #expect(compared > 4000, "only \(compared) fire times compared")
        #expect(dstDifferences < compared / 20, "\(dstDifferences) DST differences")
        print("Celery crontab: \(compared) fire times agree, \(dstDifferences) differ at a DST change (\(cases.count) cases)")
    }

    /// croniter (with Vixie's day rule) for everything else: both day fields restricted (OR),
    /// 7 for Sunday, `N/step`, a seconds field, and DST. Differences allowed, all at DST
    /// changes, where Celerity follows Vixie cron and croniter does not: croniter fires a
    /// fixed-time job twice in a repeated hour (Celerity once), catches up skipped times of
    /// wildcard expressions too (Celerity: only fixed-time ones), and keeps the seconds field
    /// in a catch-up (Celerity fires at the gap's end). Nothing else.
    @Test func agreesWithCroniterIncludingDST() async throws {
        let exprs = CronTests.expressions(240, celery: false, seed: 2026) + CronTests.expressions(60, celery: false, seconds: true, seed: 99)
        var g = Seeded(state: 11)
        var cases: [Case] = []
        for (i, e) in exprs.enumerated() {
            let zone = CronTests.zones[i % CronTests.zones.count]
            for s in CronTests.starts(zone, 6, &g) { cases.append(Case(expr: e, zone: zone, after: s, oracle: "croniter", count: 4)) }
        }
        let answers = try await oracle(cases)
        var compared = 0, repeatsSkipped = 0, gapSeconds = 0, wildcardCatchUps = 0
        var failures: [String] = []
        for (c, a) in zip(cases, answers) {
            guard var theirs = a["next"] as? [Int], let theirWalls = a["wall"] as? [Int] else {
                failures.append("\(c.expr) [\(c.zone.identifier)]: croniter: \(a["error"] ?? "?")")
                continue
            }
            let cron = try CronExpression(c.expr)
            let fixed = cron.isFixedTime
            func gapEnd(_ t: Int) -> Bool {
                CronTests.occurrences(ofLocal: Civil.localSeconds(Date(timeIntervalSince1970: Double(t - 1)), in: c.zone) + 1, c.zone) == 0
            }
            if !fixed {
                // croniter catches up skipped times of every expression; Vixie cron (and
                // Celerity) only those of fixed-time ones: a wildcard job follows the clock.
                let before = theirs.count
                theirs = theirs.filter { t in !(gapEnd(t) && !cron.matches(localSeconds: Civil.localSeconds(Date(timeIntervalSince1970: Double(t)), in: c.zone))) }
                wildcardCatchUps += before - theirs.count
            }
            if fixed {
                // Drop croniter's second fire of a repeated local time (Vixie fires only the first).
                var kept: [Int] = []
                for (t, w) in zip(theirs, theirWalls) {
                    if CronTests.occurrences(ofLocal: w, c.zone) == 2, t != ScheduleDate.instant(ofLocal: w, in: c.zone) { repeatsSkipped += 1; continue }
                    kept.append(t)
                }
                theirs = kept
            }
            let ours = CronTests.chain(c.expr, c.zone, after: c.after, count: theirs.count)
            if ours == theirs { compared += ours.count; continue }
            // With a seconds field, a catch-up after a gap fires at the gap's end (like cron);
            // croniter keeps the expression's seconds. Allowed, nothing else.
            if ours.count == theirs.count, zip(ours, theirs).allSatisfy({ o, t in
                o == t || (fixed && (1..<60).contains(t - o) && gapEnd(o))
            }) {
                gapSeconds += 1
                compared += ours.count
                continue
            }
            failures.append("\(c.expr) [\(c.zone.identifier)] after \(fmt(Date(timeIntervalSince1970: Double(c.after)), c.zone)):\n  Celerity \(ours.map { fmt(Date(timeIntervalSince1970: Double($0)), c.zone) })\n  croniter \(theirs.map { fmt(Date(timeIntervalSince1970: Double($0)), c.zone) })")
        }
        #expect(failures.isEmpty, "\(failures.count) disagreements with croniter, e.g.:\n\(failures.prefix(10).joined(separator: "\n"))")
        #expect(compared > 5000, "only \(compared) fire times compared")
        #expect(repeatsSkipped + gapSeconds + wildcardCatchUps < compared / 100, "too many DST exceptions")
        print("croniter: \(compared) fire times agree; \(repeatsSkipped) second fires of a repeated local time dropped; \(gapSeconds) gap catch-ups at the gap end rather than at the seconds field; \(wildcardCatchUps) catch-ups of wildcard expressions dropped (\(cases.count) cases)")
    }
}

extension TimeZone {
    static var paris: TimeZone { CronTests.paris }
    static var newYork: TimeZone { CronTests.newYork }
    static var sydney: TimeZone { CronTests.sydney }
    static var utc: TimeZone { CronTests.utc }
}
