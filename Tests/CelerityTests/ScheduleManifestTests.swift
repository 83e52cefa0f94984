import Foundation
import Testing
@testable import Celerity

/// `schedules:` in tasks.yaml: what a valid entry becomes, and each mistake reported at
/// `t.yaml:<line>:<column>` with what is wrong.
@Suite struct ScheduleManifestTests: ManifestTesting {
    let head = "tasks:\n  a: {builtin: add, queue: math}\nschedules:\n"

    @Test func validEntriesInFileOrderWithDefaults() throws {
        try withTemporaryDirectory { dir in
            let m = try parse(head + """
              nightly-report: { task: reports.build, cron: "0 3 * * *", timezone: Europe/Paris, args: [1, "x"], kwargs: {k: true}, misfire: run_once, queue: reports }
              ping:           { task: a, every: 30s }
              gap:
                task: a
                cron: "@daily"
                start: 2027-01-01
                end: "2027-12-31T00:00:00Z"
                limit: 3
              plain: {task: a, every: 90, queue: other}

            """, in: dir)
            #expect(m.schedules.map(\.name) == ["nightly-report", "ping", "gap", "plain"])
            let n = m.schedules[0]
            #expect(n.task == "reports.build" && n.queue == "reports" && n.misfire == .runOnce)
            #expect(n.timeZone.identifier == "Europe/Paris")
            #expect(n.args == [.number("1"), .string("x")])
            #expect(n.kwargs == [JSONMember("k", .bool(true))])
            guard case let .cron(c) = n.rule else { Issue.record("not a cron rule"); return }
            #expect(c.source == "0 3 * * *")
            let ping = m.schedules[1]
            #expect(ping.rule == .every(EveryInterval(seconds: 30)))
            #expect(ping.queue == "math", "the task's queue by default")
            #expect(ping.misfire == .skip && ping.timeZone.secondsFromGMT() == 0 && ping.args.isEmpty && ping.limit == nil)
            let gap = m.schedules[2]
            #expect(gap.start == Date(timeIntervalSince1970: 1_798_761_600))  // 2027-01-01T00:00:00Z
            #expect(gap.end == Date(timeIntervalSince1970: 1_830_211_200))    // 2027-12-31T00:00:00Z
            #expect(gap.limit == 3)
            #expect(gap.nextFire(after: Date(timeIntervalSince1970: 0)) == gap.start, "@daily from its start: midnight of the start day")
            #expect(m.schedules[3].rule == .every(EveryInterval(seconds: 90)) && m.schedules[3].queue == "other")
        }
    }

    @Test func emptySchedulesIsAllowed() throws {
        try withTemporaryDirectory { dir in
            let m = try parse(head, in: dir)
            #expect(m.schedules.isEmpty)
        }
    }

    @Test(arguments: [
        // (entry line(s) after "schedules:\n", position, words)
        ("  s: {task: a, cron: \"0 25 * * *\"}\n", "4:25", ["schedule 's'", "cron \"0 25 * * *\"", "field 'hour', column 3", "out of range 0-23"]),
        ("  s: {task: a, cron: '0 3 * * MON-FRX'}\n", "4:35", ["field 'day-of-week', column 13", "'FRX'"]),
        ("  s: {task: a, cron: 0 3 * *}\n", "4:29", ["expected 5 fields", "found 4"]),
        ("  s:\n    task: a\n    cron: \"*/0 * * * *\"\n", "6:14", ["field 'minute', column 3", "step 0"]),
        ("  s: {task: a, cron: \"@reboot\"}\n", "4:23", ["@reboot is not supported"]),
        ("  s: {task: a, cron: \"0 0 30 2 *\"}\n", "4:27", ["day-of-month", "never occurs"]),
        ("  s: {task: a, every: 1h30}\n", "4:23", ["schedules.s.every", "no unit"]),
        ("  s: {task: a, every: 1.5}\n", "4:23", ["schedules.s.every", "whole number of seconds"]),
        ("  s: {task: a, every: 0}\n", "4:23", ["schedules.s.every", "at least 1 second"]),
        ("  s: {task: a, every: [1]}\n", "4:23", ["schedules.s.every", "must be a string", "a list"]),
        ("  s: {task: a}\n", "4:6", ["schedule 's'", "needs 'cron' or 'every'"]),
        ("  s: {task: a, cron: \"@daily\", every: 5m}\n", "4:32", ["both 'cron' and 'every'"]),
        ("  s: {cron: \"@daily\"}\n", "4:6", ["schedule 's'", "missing the field 'task'"]),
        ("  s: {task: a, cron: \"@daily\", queu: x}\n", "4:32", ["unknown key 'queu'", "schedule 's'", "queue"]),
        ("  s: {task: nope, cron: \"@daily\"}\n", "4:13", ["task 'nope'", "not under tasks", "'queue'"]),
        ("  s: {task: a, cron: \"@daily\", timezone: Europe/Pariss}\n", "4:42", ["unknown time zone 'Europe/Pariss'", "IANA"]),
        ("  s: {task: a, cron: \"@daily\", timezone: europe/paris}\n", "4:42", ["unknown time zone", "did you mean Europe/Paris"]),
        ("  s: {task: a, cron: \"@daily\", misfire: once}\n", "4:41", ["misfire", "'skip' or 'run_once'", "'once'"]),
        ("  s: {task: a, cron: \"@daily\", limit: 0}\n", "4:39", ["schedules.s.limit", "≥ 1"]),
        ("  s: {task: a, cron: \"@daily\", start: tomorrow}\n", "4:39", ["schedules.s.start", "ISO 8601"]),
        ("  s: {task: a, cron: \"@daily\", end: 2026-02-30}\n", "4:37", ["schedules.s.end", "no day 30 in month 2"]),
        ("  s: {task: a, cron: \"@daily\", start: 2027-01-02, end: 2027-01-01}\n", "4:56", ["end is before its start"]),
        ("  s: {task: a, cron: \"@daily\", args: {x: 1}}\n", "4:38", ["schedules.s.args", "must be a list"]),
        ("  s: {task: a, cron: \"@daily\", kwargs: [1]}\n", "4:40", ["schedules.s.kwargs", "must be a mapping"]),
        ("  s: {task: a, cron: \"@daily\", queue: \"\"}\n", "4:39", ["schedules.s.queue", "must not be empty"]),
        ("  - {task: a, cron: \"@daily\"}\n", "4:3", ["schedules must be a mapping", "a list"]),
    ] as [(String, String, [String])])
    func badEntriesSayWhereAndWhat(entry: String, position: String, words: [String]) throws {
        try withTemporaryDirectory { dir in
            expectError(head + entry, in: dir, at: position, words)
        }
    }

    /// `celerity check` lists valid schedules with their next fire time, and refuses a bad one
    /// with file:line:col and exit status 2.
    @Test func checkListsSchedulesWithNextFireTime() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("celerity-sched-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let good = dir.appendingPathComponent("good.yaml").path
        try (head + """
          nightly: {task: reports.build, cron: "0 3 * * *", timezone: Europe/Paris, queue: reports, misfire: run_once}
          ping: {task: a, every: 1h30m, start: "2020-01-01T00:10:00Z", limit: 5}

        """).write(toFile: good, atomically: true, encoding: .utf8)
        let ok = try await ChildProcess.run(Paths.celerity, ["check", good])
        #expect(ok.status == 0, "\(ok.output)")
        #expect(ok.output.contains("1 task, 0 worker groups, 2 schedules"), "\(ok.output)")
        // The next 03:00 in Paris, computed here independently of the CLI's clock reading.
        let nightly = try CronExpression("0 3 * * *").next(after: Date(), in: TimeZone(identifier: "Europe/Paris")!)!
        let nightlyText = ScheduleDate.format(nightly, in: TimeZone(identifier: "Europe/Paris")!)
        #expect(ok.output.contains("schedule nightly: reports.build → queue reports, cron \"0 3 * * *\" Europe/Paris, next \(nightlyText)"), "\(ok.output)")
        #expect(ok.output.contains("misfire run_once"), "\(ok.output)")
        // Every 1h30m from 00:10Z: the next tick is at :10 or :40 past an hour, UTC.
        let line = ok.output.split(separator: "\n").first { $0.contains("schedule ping:") }.map(String.init) ?? ""
        #expect(line.contains("a → queue math, every 1h30m, next "), "\(ok.output)")
        #expect(line.contains(":10:00Z") || line.contains(":40:00Z"), "\(line)")
        #expect(line.contains("limit 5"), "\(line)")

        let bad = dir.appendingPathComponent("bad.yaml").path
        try (head + "  nightly: {task: a, cron: \"0 3 * * 8\"}\n").write(toFile: bad, atomically: true, encoding: .utf8)
        let no = try await ChildProcess.run(Paths.celerity, ["check", bad])
        #expect(no.status == 2, "\(no.output)")
        #expect(no.output.contains("\(bad):4:37: error: schedule 'nightly': cron \"0 3 * * 8\": field 'day-of-week', column 9: value 8 is out of range 0-7"), "\(no.output)")
    }
}
