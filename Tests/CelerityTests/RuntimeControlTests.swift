import Celerity
import Foundation
import RedisClient
import Testing

extension Integration {
    /// The remote-control commands that change a running Celerity worker, sent by Python
    /// Celery's own client (interop/runtime_control.py: `app.control.broadcast`/`inspect`),
    /// and what they do to the tasks it runs: pool_grow/pool_shrink, add_consumer/
    /// cancel_consumer, rate_limit, time_limit.
    @Suite(.timeLimit(.minutes(3)))
    struct RuntimeControlTests {
        static let tasks = """
          o.add:
            queue: {q}
            builtin: add
          o.sleep:
            queue: {q}
            builtin: sleep
        """

        /// The node's reply to each step (see interop/runtime_control.py).
        static func control(_ h: WorkerHarness, _ steps: [String]) async throws -> [JSONValue] {
            let run = try await ChildProcess.run(Paths.python3, [Paths.root + "/interop/runtime_control.py", "--broker", h.broker, "--node", h.node] + steps,
                                                 name: "runtime-control")
            guard run.status == 0 else { throw TestFailure("runtime_control.py \(steps): \(run.status)\n\(run.output)\nworker:\n\(h.worker.output.suffix(2000))") }
            let lines = run.output.split(separator: "\n").filter { $0.hasPrefix("{") || $0.hasPrefix("[") || $0 == "null" }
            guard lines.count == steps.count else { throw TestFailure("runtime_control.py \(steps): \(run.output)") }
            return try lines.map { try JSONValue(parsing: String($0)) }
        }

        static func control(_ h: WorkerHarness, _ step: String) async throws -> JSONValue { try await control(h, [step])[0] }

        static func ok(_ text: String) -> JSONValue { .object([JSONMember("ok", .string(text))]) }

        /// Tasks running now, by `inspect active`.
        static func activeCount(_ h: WorkerHarness) async throws -> Int {
            try await control(h, "inspect:active").arrayValue?.count ?? -1
        }

        @Test func poolGrowAndShrinkChangeHowManyTasksRunAtOnce() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.tasks, concurrency: 2, db: 12)
            let client = try h.client()
            #expect(try await Self.control(h, #"pool_grow={"n": 2}"#) == Self.ok("pool will grow"))
            let stats = try await Self.control(h, "inspect:stats")
            #expect(stats["pool"]?["max-concurrency"] == .int(4), "\(stats)")
            #expect(stats["prefetch_count"] == .int(16))
            // The heartbeat document (`celerity status`) says so too.
            let r = try h.redisClient()
            #expect(try await eventually(seconds: 5) {
                guard let b = try await r.call("GET", Keys.heartbeat(h.node)).bytes else { return false }
                return try JSONValue(parsing: b)["concurrency"] == .int(4)
            })
            // Four sleeps run side by side now (two before).
            var grown: [AsyncResult] = []
            for _ in 0..<4 { grown.append(try await client.send("o.sleep", args: [4])) }
            #expect(try await eventually(seconds: 5) { try await Self.activeCount(h) == 4 }, "worker:\n\(h.worker.output.suffix(2000))")
            // Shrinking to 1 while four run stops none of them; new ones then run one at a time.
            #expect(try await Self.control(h, #"pool_shrink={"n": 3}"#) == Self.ok("pool will shrink"))
            #expect(try await Self.control(h, "inspect:stats")["pool"]?["max-concurrency"] == .int(1))
            var shrunk: [AsyncResult] = []
            for _ in 0..<3 { shrunk.append(try await client.send("o.sleep", args: [1.5])) }
            for g in grown { _ = try await g.get(timeout: .seconds(20)) }
            // One at a time: never two seen running, and the three take three times as long.
            let freed = Date()
            var seen: [Int] = []
            for _ in 0..<3 {
                try await Task.sleep(for: .milliseconds(300))
                seen.append(try await Self.activeCount(h))
            }
            #expect(seen.allSatisfy { $0 <= 1 } && seen.contains(1), "active while shrunk to 1: \(seen)\nworker:\n\(h.worker.output.suffix(3000))")
            for s in shrunk { _ = try await s.get(timeout: .seconds(20)) }
            #expect(Date().timeIntervalSince(freed) >= 4.2, "three 1.5 s sleeps at concurrency 1")
            // Never below 1: Celery's error shape (a ValueError), and the concurrency stays 1.
            let refused = try await Self.control(h, #"pool_shrink={"n": 1}"#)
            #expect(refused["error"]?.stringValue?.hasPrefix("ValueError(") == true, "\(refused)")
            #expect(try await Self.control(h, "inspect:stats")["pool"]?["max-concurrency"] == .int(1))
            #expect(await h.stop() == 0)
        }

        /// `-c 1` runs messages one at a time in the order fetched; grown, side by side.
        @Test func poolGrowOfAWorkerStartedWithOneSlot() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.tasks, concurrency: 1, db: 12)
            let client = try h.client()
            #expect(try await Self.control(h, "pool_grow") == Self.ok("pool will grow"))
            let began = Date()
            var runs: [AsyncResult] = []
            for _ in 0..<2 { runs.append(try await client.send("o.sleep", args: [2])) }
            #expect(try await eventually(seconds: 3) { try await Self.activeCount(h) == 2 }, "worker:\n\(h.worker.output.suffix(2000))")
            for r in runs { _ = try await r.get(timeout: .seconds(20)) }
            #expect(Date().timeIntervalSince(began) < 3.9, "two 2 s sleeps with two slots")
            #expect(await h.stop() == 0)
        }

        @Test func addConsumerRunsANewQueueAndCancelConsumerLeavesItsMessagesQueued() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.tasks, concurrency: 2, db: 12)
            let client = try h.client()
            let extra = h.queue + "_extra"
            #expect(try await Self.control(h, "add_consumer=" + #"{"queue": "\#(extra)"}"#) == Self.ok("add consumer \(extra)"))
            let queues = try await Self.control(h, "inspect:active_queues").arrayValue?.compactMap { $0["name"]?.stringValue } ?? []
            #expect(queues == [h.queue, extra])
            #expect(try await client.send("o.add", args: [20, 22], options: .init(queue: extra)).get(timeout: .seconds(10)) == .int(42))
            // Messages already fetched from it when it is cancelled still run and are acked.
            var fetched: [AsyncResult] = []
            for _ in 0..<6 { fetched.append(try await client.send("o.sleep", args: [0.6], options: .init(queue: extra))) }
            let r = try h.redisClient()
            #expect(try await eventually(seconds: 3) { try await r.call("LLEN", extra).int == 0 })
            #expect(try await Self.control(h, "cancel_consumer=" + #"{"queue": "\#(extra)"}"#) == Self.ok("no longer consuming from \(extra)"))
            for f in fetched { #expect(try await f.get(timeout: .seconds(20)) == .double(0.6)) }
            #expect(try await eventually(seconds: 5) { try await r.call("LLEN", Keys.processing(h.node)).int == 0 })
            let after = try await Self.control(h, "inspect:active_queues").arrayValue?.compactMap { $0["name"]?.stringValue } ?? []
            #expect(after == [h.queue])
            // A message sent after the cancel stays queued; the other queue is still served.
            let left = try await client.send("o.add", args: [1, 2], options: .init(queue: extra))
            #expect(try await client.send("o.add", args: [2, 3]).get(timeout: .seconds(10)) == .int(5))
            try await Task.sleep(for: .seconds(2))
            #expect(try await r.call("LLEN", extra).int == 1)
            // Consuming it again runs it.
            #expect(try await Self.control(h, "add_consumer=" + #"{"queue": "\#(extra)"}"#) == Self.ok("add consumer \(extra)"))
            #expect(try await left.get(timeout: .seconds(10)) == .int(3))
            #expect(await h.stop() == 0)
        }

        @Test func rateLimitSpacesATasksRunsAndDisablingItRestoresFullSpeed() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.tasks, concurrency: 2, db: 12)
            let client = try h.client()
            let steps = try await Self.control(h, [#"rate_limit={"task_name": "o.add", "rate_limit": "30/m"}"#,
                                                   #"rate_limit={"task_name": "nope", "rate_limit": "1/s"}"#,
                                                   #"rate_limit={"task_name": "o.add", "rate_limit": "ten/s"}"#])
            #expect(steps[0] == Self.ok("new rate limit set successfully"))
            #expect(steps[1] == .object([JSONMember("error", "unknown task")]))
            #expect(steps[2]["error"]?.stringValue?.hasPrefix("Invalid rate limit string: ValueError(") == true, "\(steps[2])")
            // 30/m: one start every 2 s. Three calls: the first at once, the third ~4 s later.
            let sent = Date()
            var spaced: [AsyncResult] = []
            for i in 0..<3 { spaced.append(try await client.send("o.add", args: [.int(i), 1])) }
            // When each one's result came (in whatever order the three took their turns).
            let done = try await withThrowingTaskGroup(of: Double.self) { g in
                for s in spaced { g.addTask { _ = try await s.get(timeout: .seconds(20)); return Date().timeIntervalSince(sent) } }
                return try await g.reduce(into: [Double]()) { $0.append($1) }.sorted()
            }
            #expect(done[0] < 1.5, "\(done)")
            #expect(done[1] >= 1.6 && done[2] >= 3.6, "\(done)")
            // Messages waiting for a later turn wait in Redis (parked: a SIGKILL would not lose
            // them), holding no execution slot: a sleep runs meanwhile.
            var waiting: [AsyncResult] = []
            for i in 0..<4 { waiting.append(try await client.send("o.add", args: [.int(i), 1])) }
            let r = try h.redisClient()
            #expect(try await eventually(seconds: 3) { try await r.call("ZCARD", Keys.rateParked("o.add")).int ?? 0 >= 3 })
            #expect(try await client.send("o.sleep", args: [0.1]).get(timeout: .seconds(3)) == .double(0.1))
            // `registered` shows the rate as Celery does (rate_limit is one of its default items).
            let registered = try await Self.control(h, "inspect:registered").arrayValue?.compactMap(\.stringValue) ?? []
            #expect(registered.contains("o.add [rate_limit=30/m]"), "\(registered)")
            // Disabled: those waiting go at once, and new calls run at full speed.
            let disable = Date()
            #expect(try await Self.control(h, #"rate_limit={"task_name": "o.add", "rate_limit": 0}"#) == Self.ok("rate limit disabled successfully"))
            for w in waiting { _ = try await w.get(timeout: .seconds(10)) }
            #expect(Date().timeIntervalSince(disable) < 2.5)
            let fast = Date()
            var many: [AsyncResult] = []
            for i in 0..<20 { many.append(try await client.send("o.add", args: [.int(i), 1])) }
            for m in many { _ = try await m.get(timeout: .seconds(10)) }
            #expect(Date().timeIntervalSince(fast) < 2, "20 calls after disabling")
            #expect(await h.stop() == 0)
        }

        @Test func timeLimitChangesATasksLimitsAtRunTime() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.tasks, concurrency: 2, db: 12)
            let steps = try await Self.control(h, [#"time_limit={"task_name": "o.sleep", "hard": 1}"#,
                                                   #"time_limit={"task_name": "nope", "hard": 1}"#])
            #expect(steps[0] == Self.ok("time limits set successfully"))
            #expect(steps[1] == .object([JSONMember("error", "unknown task")]))
            // A 3 s sleep now fails at 1 s with Celery's TimeLimitExceeded, as the manifest's limit would.
            let began = Date()
            let f = try await h.callFailing("o.sleep", [3])
            #expect(f.type == "TimeLimitExceeded", "\(f)")
            #expect(Date().timeIntervalSince(began) < 2.5)
            // Cleared (hard None): the sleep runs to its end.
            #expect(try await Self.control(h, #"time_limit={"task_name": "o.sleep", "hard": null, "soft": null}"#) == Self.ok("time limits set successfully"))
            #expect(try await h.call("o.sleep", [1.5]) == .double(1.5))
            #expect(await h.stop() == 0)
        }
    }
}
