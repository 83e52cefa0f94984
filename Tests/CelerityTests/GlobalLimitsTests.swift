import Celerity
import Foundation
import RedisClient
import Testing

/// tasks.yaml `rate_limit` (+ `burst`) and `max_concurrency`, parsed and checked.
@Suite struct GlobalLimitsManifestTests {
    func parse(_ task: String) throws(ManifestError) -> Manifest {
        try Manifest.parse("tasks:\n  t:\n" + task, path: "tasks.yaml", baseDirectory: "/tmp")
    }

    func error(_ task: String) -> String {
        do { _ = try parse(task); return "no error" } catch { return error.description }
    }

    @Test func ratesBurstsAndCapsAreRead() throws {
        let m = try parse("    builtin: add\n    rate_limit: 100/s\n    burst: 10\n    max_concurrency: 5\n")
        #expect(m.tasks["t"]?.rateLimit == TaskSpec.RateLimit(perSecond: 100, burst: 10, text: "100/s"))
        #expect(m.tasks["t"]?.maxConcurrency == 5)
        #expect(try parse("    builtin: add\n    rate_limit: 30/m\n").tasks["t"]?.rateLimit?.perSecond == 0.5)
        #expect(try parse("    builtin: add\n    rate_limit: 36/h\n").tasks["t"]?.rateLimit?.perSecond == 0.01)
        #expect(try parse("    builtin: add\n    rate_limit: 7\n").tasks["t"]?.rateLimit == TaskSpec.RateLimit(perSecond: 7, burst: 1, text: "7"))
        #expect(try parse("    builtin: add\n").tasks["t"]?.rateLimit == nil)
    }

    @Test func badLimitsSayWhereAndWhat() {
        #expect(error("    builtin: add\n    rate_limit: 10/d\n") == "tasks.yaml:4:17: error: t.rate_limit: unknown unit 'd' (expected s, m or h, as in '100/s')")
        #expect(error("    builtin: add\n    rate_limit: ten/s\n") == "tasks.yaml:4:17: error: t.rate_limit: 'ten' is not a number (expected a rate like '100/s', '10/m' or '5/h')")
        #expect(error("    builtin: add\n    rate_limit: 0/s\n") == "tasks.yaml:4:17: error: t.rate_limit must be more than 0 and at most 1000000/s, got '0/s'")
        #expect(error("    builtin: add\n    rate_limit: [1]\n").hasPrefix("tasks.yaml:4:17: error: t.rate_limit must be a rate like '100/s'"))
        #expect(error("    builtin: add\n    burst: 3\n") == "tasks.yaml:4:5: error: t.burst applies to a rate limit: add 'rate_limit: <n>/s' (or /m, /h) to task 't'")
        #expect(error("    builtin: add\n    rate_limit: 1/s\n    burst: 0\n") == "tasks.yaml:5:12: error: t.burst must be ≥ 1, got 0")
        #expect(error("    builtin: add\n    max_concurrency: 0\n") == "tasks.yaml:4:22: error: t.max_concurrency must be ≥ 1, got 0")
    }
}

extension Integration {
    /// Rate limits and concurrency caps that hold for all workers together (`TaskGate`),
    /// measured with three `celerity worker` processes on one Redis, calls sent by the Swift
    /// client and by Python Celery's own client.
    @Suite(.timeLimit(.minutes(6)))
    struct GlobalLimitsTests {
        static let db = 4

        static func workers(_ tasks: String, count: Int, concurrency: Int = 4) async throws -> [WorkerHarness] {
            let redis = try await sharedRedis.value
            let first = try WorkerHarness(redis: redis, tasks: tasks, concurrency: concurrency, db: db, node: "w0-\(UUID().uuidString.prefix(6))@limits")
            var all = [first]
            for i in 1..<count {
                all.append(try WorkerHarness(redis: redis, tasks: tasks, concurrency: concurrency, db: db, node: "w\(i)-\(first.prefix)@limits", reusingQueueOf: first))
            }
            return all
        }

        /// Python Celery's client sends `count` calls; their ids.
        static func pythonSend(_ h: WorkerHarness, task: String, count: Int, args: String) async throws -> [String] {
            let run = try await ChildProcess.run(Paths.python3, [Paths.root + "/interop/send_many.py", "--broker", h.broker, "--task", task,
                                                                 "--queue", h.queue, "--count", String(count), "--args", args], name: "send-many")
            guard run.status == 0 else { throw TestFailure("send_many.py: \(run.status)\n\(run.output)") }
            return run.output.split(separator: "\n").map(String.init).filter { $0.count == 36 }
        }

        /// When each call finished (`date_done`), sorted.
        static func finishTimes(_ client: CelerityClient, _ ids: [String], timeout: Duration) async throws -> [Date] {
            var times: [Date] = []
            for id in ids {
                let meta = try await client.waitForResult(id, timeout: timeout)
                guard meta.state == .success, let done = meta.dateDone else { throw TestFailure("\(id): \(meta.state) \(meta.result)") }
                times.append(done)
            }
            return times.sorted()
        }

        /// The most calls that finished within any window of `seconds`.
        static func busiestWindow(_ times: [Date], seconds: Double) -> Int {
            var most = 0, lo = 0
            for hi in times.indices {
                while times[hi].timeIntervalSince(times[lo]) > seconds { lo += 1 }
                most = max(most, hi - lo + 1)
            }
            return most
        }

        /// 40/s across three workers (12 execution slots, fetching as fast as they can):
        /// 200 calls from the Swift client and 200 from Python Celery's run at 40/s together,
        /// within 5%, and no second holds more than the rate plus its burst.
        @Test func aRateHoldsForThreeWorkersTogether() async throws {
            let ws = try await Self.workers("""
              {q}.add:
                queue: {q}
                builtin: add
                rate_limit: 40/s
            """, count: 3)
            let h = ws[0]
            let client = try h.client()
            let task = h.queue + ".add"
            var ids = try await client.sendMany((0..<200).map { client.message(task, args: [.int($0), 1]) }).map(\.id)
            ids += try await Self.pythonSend(h, task: task, count: 200, args: "[1, 2]")
            #expect(ids.count == 400)
            let times = try await Self.finishTimes(client, ids, timeout: .seconds(60))
            let span = times.last!.timeIntervalSince(times.first!)
            let rate = Double(times.count - 1) / span
            print("rate limit 40/s, 3 workers, 400 calls: \(String(format: "%.2f", rate))/s over \(String(format: "%.2f", span)) s; busiest second: \(Self.busiestWindow(times, seconds: 1.0))")
            #expect(abs(rate / 40 - 1) <= 0.05, "achieved \(rate)/s")
            // One second holds at most 40 starts plus the burst (1), and some for the time
            // between a start and its stored result on a loaded machine: these are the times
            // results were stored, and a host that steals the CPU (67% steal seen here) stores
            // a few late, then together (45 once in CI). Three workers limiting each on its own
            // would finish ~120 in a second; without the limit the 400 take well under one.
            #expect(Self.busiestWindow(times, seconds: 1.0) <= 50)
            #expect(Self.busiestWindow(times, seconds: 2.0) <= 90)
            // Each worker ran a share (the limit is shared, not per worker).
            for w in ws { #expect(await w.stop() == 0) }
            let ran = ws.map { w in w.worker.output.components(separatedBy: "task succeeded").count - 1 }
            #expect(ran.allSatisfy { $0 > 0 }, "\(ran)")
        }

        /// A burst lets that many start at once after a quiet spell, then the rate holds.
        @Test func aBurstStartsAtOnceThenTheRateHolds() async throws {
            let ws = try await Self.workers("""
              {q}.add:
                queue: {q}
                builtin: add
                rate_limit: 10/s
                burst: 8
            """, count: 1)
            let h = ws[0]
            let client = try h.client()
            let task = h.queue + ".add"
            let handles = try await client.sendMany((0..<28).map { client.message(task, args: [.int($0), 1]) })
            let times = try await Self.finishTimes(client, handles.map(\.id), timeout: .seconds(30))
            let first = times[0]
            // 8 at once (without the burst the 8th would come 0.7 s after the first), then 20
            // more at 10/s: about 2 s in all.
            #expect(times[7].timeIntervalSince(first) < 0.4, "\(times.map { $0.timeIntervalSince(first) })")
            let total = times.last!.timeIntervalSince(first)
            #expect(total > 1.8 && total < 2.6, "\(total)")
            #expect(await h.stop() == 0)
        }

        /// Messages waiting for their turn wait in Redis: a worker killed (SIGKILL) while most
        /// of a backlog is parked loses none of it; another worker runs them all, still at the rate.
        @Test func parkedMessagesSurviveAKilledWorker() async throws {
            let tasks = """
              {q}.add:
                queue: {q}
                builtin: add
                rate_limit: 5/s
            """
            let ws = try await Self.workers(tasks, count: 1)
            let h = ws[0]
            let client = try h.client()
            let task = h.queue + ".add"
            let handles = try await client.sendMany((0..<30).map { client.message(task, args: [.int($0), 1]) })
            let r = try h.redisClient()
            #expect(try await eventually(seconds: 5) { try await r.call("ZCARD", Keys.rateParked(task)).int ?? 0 >= 20 })
            // No execution slot and no memory holds them: the worker's processing list is short.
            #expect(try await r.call("LLEN", Keys.processing(h.node)).int ?? 99 <= 4)
            h.worker.signal(SIGKILL)
            _ = await h.worker.wait()
            let redis = try await sharedRedis.value
            let other = try WorkerHarness(redis: redis, tasks: tasks, concurrency: 2, db: Self.db, node: "w9-\(h.prefix)@limits", reusingQueueOf: h)
            let times = try await Self.finishTimes(client, handles.map(\.id), timeout: .seconds(60))
            #expect(times.count == 30)
            #expect(try await r.call("ZCARD", Keys.rateParked(task)).int == 0)
            #expect(await other.stop() == 0)
        }

        /// A limit removed from tasks.yaml strands nothing: messages parked under it go back to
        /// their queue as soon as a worker without the limit runs.
        @Test func messagesParkedUnderARemovedLimitStillRun() async throws {
            let ws = try await Self.workers("""
              {q}.add:
                queue: {q}
                builtin: add
                rate_limit: 1/s
            """, count: 1)
            let h = ws[0]
            let client = try h.client()
            let task = h.queue + ".add"
            let handles = try await client.sendMany((0..<20).map { client.message(task, args: [.int($0), 1]) })
            let r = try h.redisClient()
            #expect(try await eventually(seconds: 5) { try await r.call("ZCARD", Keys.rateParked(task)).int ?? 0 >= 15 })
            #expect(await h.stop() == 0)
            let redis = try await sharedRedis.value
            let unlimited = try WorkerHarness(redis: redis, tasks: """
              {q}.add:
                queue: {q}
                builtin: add
            """, concurrency: 4, db: Self.db, node: "w5-\(h.prefix)@limits", reusingQueueOf: h)
            let restarted = Date()
            _ = try await Self.finishTimes(client, handles.map(\.id), timeout: .seconds(30))
            #expect(Date().timeIntervalSince(restarted) < 6, "\(Date().timeIntervalSince(restarted)) s")
            #expect(try await r.call("ZCARD", Keys.rateParked(task)).int == 0)
            #expect(await unlimited.stop() == 0)
        }

        /// `rate_limit` from Python Celery's control client, sent to ONE worker, changes the
        /// limit of both (it is global); 0 lifts it for both, and what was parked goes at once.
        @Test func theRateLimitCommandChangesTheGlobalLimit() async throws {
            let ws = try await Self.workers("""
              {q}.add:
                queue: {q}
                builtin: add
            """, count: 2)
            let h = ws[0]
            let client = try h.client()
            let task = h.queue + ".add"
            let set = try await RuntimeControlTests.control(h, #"rate_limit={"task_name": "\#(task)", "rate_limit": "600/m"}"#)
            #expect(set == RuntimeControlTests.ok("new rate limit set successfully"))
            // The other worker learns it within a second (it reads the limit from Redis).
            try await Task.sleep(for: .milliseconds(1500))
            let handles = try await client.sendMany((0..<41).map { client.message(task, args: [.int($0), 1]) })
            let times = try await Self.finishTimes(client, handles.map(\.id), timeout: .seconds(30))
            let rate = Double(times.count - 1) / times.last!.timeIntervalSince(times.first!)
            #expect(abs(rate / 10 - 1) <= 0.1, "achieved \(rate)/s for 600/m on two workers")
            // A backlog parked, then the limit lifted: all of it runs at once.
            let backlog = try await client.sendMany((0..<50).map { client.message(task, args: [.int($0), 1]) })
            let r = try h.redisClient()
            #expect(try await eventually(seconds: 5) { try await r.call("ZCARD", Keys.rateParked(task)).int ?? 0 >= 30 })
            let lifted = Date()
            let off = try await RuntimeControlTests.control(h, #"rate_limit={"task_name": "\#(task)", "rate_limit": 0}"#)
            #expect(off == RuntimeControlTests.ok("rate limit disabled successfully"))
            _ = try await Self.finishTimes(client, backlog.map(\.id), timeout: .seconds(30))
            #expect(Date().timeIntervalSince(lifted) < 3, "\(Date().timeIntervalSince(lifted)) s after lifting")
            for w in ws { #expect(await w.stop() == 0) }
        }

        /// Runs recorded by tests/Fixtures/plugins/record_run.sh: the most that overlapped.
        static func mostOverlapping(_ log: String) throws -> (most: Int, runs: Int) {
            let text = try String(contentsOfFile: log, encoding: .utf8)
            var events: [(Int, Int)] = []
            for line in text.split(separator: "\n") {
                let f = line.split(separator: " ")
                guard f.count == 3, let t = Int(f[1]) else { continue }
                events.append((t, f[0] == "start" ? 1 : -1))
            }
            // Ends before starts at the same instant.
            events.sort { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }
            var now = 0, most = 0
            for (_, d) in events { now += d; most = max(most, now) }
            return (most, events.filter { $0.1 == 1 }.count)
        }

        /// `max_concurrency: 3` on three workers with 4 slots each: never more than 3 run at
        /// once (recorded by the plugin itself), and the cap is reached. A worker SIGKILLed
        /// while it runs capped calls gives its places back when their leases lapse, and every
        /// call completes.
        @Test func aCapHoldsAcrossWorkersAndACrashedWorkersPlacesComeBack() async throws {
            let log = NSTemporaryDirectory() + "celerity-cap-\(UUID().uuidString.prefix(8)).log"
            _ = FileManager.default.createFile(atPath: log, contents: nil)
            let tasks = """
              {q}.slow:
                queue: {q}
                plugin: [sh, {root}/Tests/Fixtures/plugins/record_run.sh, \(log), "0.3"]
                max_concurrency: 3
            """
            let ws = try await Self.workers(tasks, count: 3)
            let h = ws[0]
            let client = try h.client()
            let task = h.queue + ".slow"
            let sent = Date()
            let handles = try await client.sendMany((0..<30).map { _ in client.message(task) })
            for x in handles { #expect(try await x.get(timeout: .seconds(60)) == .string("ran")) }
            let elapsed = Date().timeIntervalSince(sent)
            let (most, runs) = try Self.mostOverlapping(log)
            print("max_concurrency 3, 3 workers × 4 slots, 30 calls of 0.3 s: most at once \(most), \(runs) runs, \(String(format: "%.2f", elapsed)) s")
            #expect(runs == 30)
            #expect(most == 3, "most overlapping runs: \(most)")
            #expect(elapsed >= 2.9, "\(elapsed)")
            // Nothing left behind: no place held, nobody waiting.
            let r = try h.redisClient()
            #expect(try await eventually(seconds: 3) { try await r.call("ZCARD", Keys.running(task)).int == 0 })
            #expect(try await r.call("LLEN", Keys.capWaiting(task)).int == 0)

            // A crash: the other two stop; worker 0 alone takes all 3 places and is SIGKILLed
            // with them. A new worker gets them only when their leases lapse (10 s), and every
            // call completes (those worker 0 held are handed back by the usual recovery).
            for w in ws.dropFirst() { #expect(await w.stop() == 0) }
            try "".write(toFile: log, atomically: true, encoding: .utf8)
            let more = try await client.sendMany((0..<12).map { _ in client.message(task) })
            #expect(try await eventually(seconds: 5) { try await r.call("ZCARD", Keys.running(task)).int == 3 })
            ws[0].worker.signal(SIGKILL)
            _ = await ws[0].worker.wait()
            let killed = Date()
            let redis = try await sharedRedis.value
            let next = try WorkerHarness(redis: redis, tasks: tasks, concurrency: 4, db: Self.db, node: "w3-\(h.prefix)@limits", reusingQueueOf: h)
            for x in more { #expect(try await x.get(timeout: .seconds(90)) == .string("ran")) }
            // Worker 0's calls had to wait for the lapse of their leases (and its list's recovery).
            #expect(Date().timeIntervalSince(killed) > 7, "\(Date().timeIntervalSince(killed)) s")
            let after = try Self.mostOverlapping(log)
            #expect(after.most <= 3, "most overlapping runs after the crash: \(after.most)")
            #expect(after.runs >= 12)
            #expect(await next.stop() == 0)
        }

        /// A cap with a rate: both hold, and a message waiting for a place holds nothing.
        @Test func aCapAndARateTogether() async throws {
            let log = NSTemporaryDirectory() + "celerity-caprate-\(UUID().uuidString.prefix(8)).log"
            _ = FileManager.default.createFile(atPath: log, contents: nil)
            let ws = try await Self.workers("""
              {q}.slow:
                queue: {q}
                plugin: [sh, {root}/Tests/Fixtures/plugins/record_run.sh, \(log), "0.5"]
                max_concurrency: 2
                rate_limit: 8/s
            """, count: 2)
            let h = ws[0]
            let client = try h.client()
            let task = h.queue + ".slow"
            let handles = try await client.sendMany((0..<12).map { _ in client.message(task) })
            let r = try h.redisClient()
            #expect(try await eventually(seconds: 5) { try await r.call("LLEN", Keys.capWaiting(task)).int ?? 0 > 0 })
            for x in handles { #expect(try await x.get(timeout: .seconds(60)) == .string("ran")) }
            let (most, runs) = try Self.mostOverlapping(log)
            #expect(runs == 12 && most == 2, "\(most) at once, \(runs) runs")
            for w in ws { #expect(await w.stop() == 0) }
        }
    }
}
