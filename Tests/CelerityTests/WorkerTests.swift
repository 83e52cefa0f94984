import Celerity
import Foundation
import RedisClient
import Testing

extension Integration {
    /// End to end: a real `celerity worker` process against a real redis-server.
    @Suite(.timeLimit(.minutes(3)))
    struct WorkerTests {
        static let builtinTasks = """
          t.add:
            queue: {q}
            builtin: add
          t.factorial:
            queue: {q}
            builtin: factorial
          t.mat_mul:
            queue: {q}
            builtin: mat_mul
          t.sleep:
            queue: {q}
            builtin: sleep
            time_limit: 1
        """

        @Test func runsTheTutorialTasksAndStoresCeleryResults() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.builtinTasks)
            #expect(try await h.call("t.add", [4, 6]) == .number("10"))
            #expect(try await h.call("t.add", [1.5, 2]) == .number("3.5"))
            let big = try await h.call("t.factorial", [20000], timeout: 120)
            guard case let .number(digits) = big else { Issue.record("factorial returned \(big)"); return }
            #expect(digits.count == 77_338)
            #expect(digits == (try await Python.factorial(20000)))
            let m = try await h.call("t.mat_mul", [20, 20])
            let rows = try #require(m.arrayValue)
            #expect(rows.count == 20)
            #expect(rows.allSatisfy { $0.arrayValue?.count == 20 && $0.arrayValue!.allSatisfy { $0.doubleValue != nil } })

            // The stored document is Celery's: status, result, date_done with +00:00, task_id.
            let c = try h.client()
            let handle = try await c.send("t.add", args: [2, 3])
            _ = try await handle.get(timeout: .seconds(10))
            let raw = try #require(try await h.redisClient().call("GET", "celery-task-meta-\(handle.id)").string)
            let doc = try JSONValue(parsing: raw)
            #expect(doc["status"] == "SUCCESS")
            #expect(doc["result"] == .number("5"))
            #expect(doc["task_id"]?.stringValue == handle.id)
            #expect(doc["date_done"]?.stringValue?.hasSuffix("+00:00") == true)
            let ttl = try await h.redisClient().call("TTL", "celery-task-meta-\(handle.id)").int ?? -1
            #expect(ttl > 80_000 && ttl <= 86_400)
            #expect(await h.stop() == 0)
        }

        @Test func unknownTasksAndBadArgumentsFailClearlyAndTheWorkerKeepsServing() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.builtinTasks)
            let c = try h.client()
            let unknown = try await c.send("t.nope", args: [1], options: .init(queue: h.queue))
            do {
                _ = try await unknown.get(timeout: .seconds(10))
                Issue.record("unknown task succeeded")
            } catch let f as TaskFailure {
                #expect(f.type == "NotRegistered")
                #expect(f.message.contains("t.nope"))
            }
            let few = try await h.callFailing("t.add", [1])
            #expect(few.type == "TypeError")
            #expect(few.message.contains("missing 1 required argument: 'y'"))
            let many = try await h.callFailing("t.add", [1, 2, 3])
            #expect(many.message.contains("takes 2 positional arguments but 3 were given"))
            let strings = try await h.callFailing("t.add", ["a", 2])
            #expect(strings.type == "TypeError")
            let neg = try await h.callFailing("t.factorial", [-3])
            #expect(neg.type == "ValueError")
            #expect(try await h.call("t.add", [2, 2]) == .number("4"))
            #expect(await h.stop() == 0)
        }

        @Test func malformedMessagesAreDeadLetteredWithAReasonAndNothingIsLost() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.builtinTasks)
            let r = try h.redisClient()
            let bad: [String] = [
                "this is not json",
                "{\"no\": \"headers\"}",
                "{\"headers\": {\"id\": \"x1\"}, \"body\": \"W10=\"}",
                "{\"headers\": {\"task\": \"t.add\", \"id\": \"x2\"}, \"content-type\": \"application/x-python-serialize\", \"body\": \"gAN9cQAu\"}",
                "{\"headers\": {\"task\": \"t.add\", \"id\": \"x3\"}, \"content-type\": \"application/json\", \"body\": \"{\\\"a\\\": 1}\"}",
            ]
            for b in bad { try await r.call("LPUSH", h.queue, b) }
            #expect(try await h.call("t.add", [20, 22]) == .number("42"))
            // Every bad message is in the dead-letter list, with a reason, and none is left in flight.
            var mine: [JSONValue] = []
            let deadline = Date().addingTimeInterval(10)
            while Date() < deadline {
                let entries = try await r.call("LRANGE", Keys.deadLetters, 0, -1).array ?? []
                mine = entries.compactMap { $0.string.flatMap { try? JSONValue(parsing: $0) } }.filter { $0["queue"]?.stringValue == h.queue }
                if mine.count == bad.count { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(mine.count == bad.count)
            let reasons = mine.compactMap { $0["reason"]?.stringValue }
            #expect(reasons.contains { $0.contains("not JSON") })
            #expect(reasons.contains { $0.contains("no 'headers'") })
            #expect(reasons.contains { $0.contains("no 'task'") })
            #expect(reasons.contains { $0.contains("application/x-python-serialize") })
            #expect(reasons.contains { $0.contains("[args, kwargs, embed]") })
            #expect(Set(mine.compactMap { $0["message"]?.stringValue }) == Set(bad))
            #expect(mine.allSatisfy { $0["at"]?.stringValue != nil && $0["worker"]?.stringValue == h.node })
            // The ack follows the stored result; give it a moment, then nothing may be left in flight.
            #expect(try await eventually { try await r.call("LLEN", Keys.processing(h.node)).int == 0 })
            #expect(await h.stop() == 0)
        }

        @Test func expiredTasksAreRevokedAndCountdownsWaitInRedis() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.builtinTasks)
            let c = try h.client()
            let expired = try await c.send("t.add", args: [1, 1], options: .init(expires: Date().addingTimeInterval(-5)))
            do {
                _ = try await expired.get(timeout: .seconds(10))
                Issue.record("expired task ran")
            } catch let f as TaskFailure {
                #expect(f.type == "TaskRevokedError")
                #expect(f.message == "expired")
            }
            let start = Date()
            let later = try await c.send("t.add", args: [2, 2], options: .init(countdown: 1.5))
            try await Task.sleep(for: .milliseconds(700))
            // Parked in the delayed sorted set, not held in worker memory.
            // (This message itself: the delayed set is shared with other tests.)
            let members = try await h.redisClient().call("ZRANGE", Keys.delayed, 0, -1).array?.compactMap(\.string) ?? []
            #expect(members.contains { $0.contains(later.id) })
            #expect(try await later.get(timeout: .seconds(15)) == .number("4"))
            #expect(Date().timeIntervalSince(start) >= 1.4)
            #expect(await h.stop() == 0)
        }

        @Test func builtInTimeLimitFailsTheTaskAndTheNextCallWorks() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.builtinTasks)
            let f = try await h.callFailing("t.sleep", [3])
            #expect(f.type == "TimeLimitExceeded")
            #expect(try await h.call("t.sleep", [0.1]) == .number("0.1"))
            #expect(await h.stop() == 0)
        }

        @Test func sigtermFinishesTasksInFlightThenExitsZero() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: """
              t.sleep:
                queue: {q}
                builtin: sleep
            """)
            let c = try h.client()
            let r = try h.redisClient()
            // Wait until the worker is up (its heartbeat exists), then give it a slow task.
            for _ in 0..<100 where try await r.call("EXISTS", Keys.heartbeat(h.node)).int != 1 { try await Task.sleep(for: .milliseconds(50)) }
            let slow = try await c.send("t.sleep", args: [1.5])
            try await Task.sleep(for: .milliseconds(500))
            h.worker.signal(SIGTERM)
            let status = await h.worker.wait()
            #expect(status == 0)
            #expect(try await slow.get(timeout: .seconds(5)) == .number("1.5"))
            #expect(try await r.call("EXISTS", Keys.heartbeat(h.node)).int == 0)
            #expect(try await r.call("LLEN", Keys.processing(h.node)).int == 0)
        }

        @Test func messagesLeftInFlightByADeadRunAreRequeuedAtRestart() async throws {
            let redis = try await sharedRedis.value
            // No worker yet: put a message in the node's processing list as a killed run would leave it.
            let pre = try WorkerHarness(redis: redis, tasks: Self.builtinTasks, startWorker: false)
            let c = try pre.client()
            let m = c.message("t.add", args: [40, 2])
            try await pre.redisClient().call("LPUSH", Keys.processing(pre.node), m.encode())
            let h = try WorkerHarness(redis: redis, tasks: Self.builtinTasks, reusing: pre)
            let handle = AsyncResult(id: m.id, client: c)
            #expect(try await handle.get(timeout: .seconds(15)) == .number("42"))
            #expect(await h.stop() == 0)
        }

        @Test func rpcBackendRepliesToTheClientsReplyList() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.builtinTasks, resultBackend: "rpc://")
            let c = try h.client()
            let a = try await c.send("t.add", args: [3, 4])
            let b = try await c.send("t.add", args: [10, 20])
            // Waiting in the opposite order exercises the stash of replies for other calls.
            #expect(try await b.get(timeout: .seconds(10)) == .number("30"))
            #expect(try await a.get(timeout: .seconds(10)) == .number("7"))
            let f = try await c.send("t.add", args: ["x", 1])
            await #expect(throws: TaskFailure.self) { try await f.get(timeout: .seconds(10)) }
            #expect(await h.stop() == 0)
        }

        @Test func priorityListsAreServedHighestFirstAndOneAtATimeWithOneSlot() async throws {
            let redis = try await sharedRedis.value
            let pre = try WorkerHarness(redis: redis, tasks: Self.builtinTasks, startWorker: false)
            let c = try pre.client()
            // Enqueue before any worker runs: six calls at priority 9 first, then six at 0.
            // With one slot, every priority-0 call runs first, and each list in the order sent.
            var low: [AsyncResult] = [], high: [AsyncResult] = []
            for i in 0..<6 { low.append(try await c.send("t.add", args: [.number("\(i)"), 0], options: .init(priority: 9))) }
            for i in 0..<6 { high.append(try await c.send("t.add", args: [0, .number("\(i)")], options: .init(priority: 0))) }
            let r = try pre.redisClient()
            #expect(try await r.call("LLEN", Keys.queue(pre.queue, priority: 9)).int == 6)
            let h = try WorkerHarness(redis: redis, tasks: Self.builtinTasks, concurrency: 1, reusing: pre)
            for call in low + high { _ = try await call.get(timeout: .seconds(15)) }
            var done: [(call: String, at: Date)] = []
            for (i, call) in high.enumerated() { done.append(("p0#\(i)", try #require(try await c.meta(of: call.id)?.dateDone))) }
            for (i, call) in low.enumerated() { done.append(("p9#\(i)", try #require(try await c.meta(of: call.id)?.dateDone))) }
            let finished = done.sorted { $0.at < $1.at }.map(\.call)
            #expect(finished == done.map(\.call), "the order the calls finished in")
            #expect(await h.stop() == 0)
        }
    }
}
