import Celerity
import Foundation
import Testing

extension Integration {
    /// Persistent plugins: long-lived processes speaking JSON-RPC, supervised by a real worker.
    @Suite(.timeLimit(.minutes(3)))
    struct PersistentPluginTests {
        static func tasks(_ extra: String = "") -> String {
            """
              plugins.py_add:
                queue: {q}
                plugin: [python3, {root}/plugins/py_tasks.py]
                mode: persistent
                processes: 2
              plugins.py_fail:
                queue: {q}
                plugin: [python3, {root}/plugins/py_tasks.py]
                mode: persistent
                processes: 2
              plugins.py_sleep:
                queue: {q}
                plugin: [python3, {root}/plugins/py_tasks.py]
                mode: persistent
                processes: 2
                time_limit: 1
              m.bad:
                queue: {q}
                plugin: [python3, {root}/Tests/Fixtures/plugins/misbehave_persistent.py]
                mode: persistent
                time_limit: 4
                grace_period: 0.5
                max_output_bytes: 1000000
            \(extra)
            """
        }

        /// The same caps for a persistent plugin's error answer; the process keeps serving.
        @Test func aHugeErrorAnswerIsCutWhereItIsStoredAndLogged() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: """
              m.big:
                queue: {q}
                plugin: [python3, {root}/Tests/Fixtures/plugins/misbehave_persistent.py]
                mode: persistent
            """, concurrency: 2)
            let handle = try await h.client().send("m.big", args: ["hugeerror"])
            await #expect(throws: TaskFailure.self) { _ = try await handle.get(timeout: .seconds(60)) }
            try await expectStoredFailureIsCut(h, handle.id)
            #expect(try await h.call("m.big", ["ok"]) == .string("ok"))
            #expect(await h.stop() == 0)
        }

        @Test func persistentPythonPluginServesCallsFailuresAndCancellation() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.tasks(), concurrency: 4)
            #expect(try await h.call("plugins.py_add", [2, 3]) == .number("5"))
            let big = String(repeating: "7", count: 6000)
            #expect(try await h.call("plugins.py_add", [.number(big), 0]) == .number(big))
            let f = try await h.callFailing("plugins.py_fail", [])
            #expect(f.type == "ValueError" && f.message == "boom")
            // The helper answers $/cancel at the limit; the process survives and serves the next call.
            let start = Date()
            let limited = try await h.callFailing("plugins.py_sleep", [30])
            #expect(limited.type == "TimeLimitExceeded")
            #expect(Date().timeIntervalSince(start) < 9)
            #expect(try await h.call("plugins.py_sleep", [0.05]) == .number("0.05"))
            #expect(await h.stop() == 0)
        }

        /// A queue of persistent plugins only: a message that ends the wait goes to its plugin
        /// from the fetcher's thread, and a quiet answer is stored and acked on the plugin's
        /// reader thread. The same guarantees hold there: every result stored and acked, a
        /// revocation with terminate stops the call, the time limit strikes, the next call works.
        @Test func quietCallsTakenWhereTheyArriveKeepEveryGuarantee() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.tasks(), concurrency: 4)
            let r = try h.redisClient()
            for i in 0..<20 {
                #expect(try await h.call("plugins.py_add", [.number("\(i)"), 1]) == .number("\(i + 1)"))
            }
            #expect(try await eventually { try await r.call("LLEN", Keys.processing(h.node)).int == 0 })
            let c = try h.client()
            let running = try await c.send("plugins.py_sleep", args: [30])
            try await Task.sleep(for: .milliseconds(500))
            let start = Date()
            try await c.revoke(running.id, terminate: true)
            do {
                _ = try await running.get(timeout: .seconds(15))
                Issue.record("a terminated call succeeded")
            } catch let f as TaskFailure {
                #expect(f.type == "TaskRevokedError")
            }
            #expect(Date().timeIntervalSince(start) < 8)
            let limited = try await h.callFailing("plugins.py_sleep", [30])
            #expect(limited.type == "TimeLimitExceeded")
            #expect(try await h.call("plugins.py_add", [40, 2]) == .number("42"))
            #expect(try await eventually { try await r.call("LLEN", Keys.processing(h.node)).int == 0 })
            #expect(await h.stop() == 0)
        }

        /// Requests bigger than a pipe's buffer (64 KiB) go out in pieces without blocking
        /// anyone; a pipelined process (max_inflight 32, one thread) answers many calls at once.
        @Test func bigRequestsAndPipelinedCallsArriveWhole() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.tasks("""
              plugins.py_echo:
                queue: {q}
                plugin: [python3, {root}/plugins/py_tasks.py]
                mode: persistent
              plugins.py_quick_add:
                queue: {q}
                plugin: [python3, {root}/plugins/py_quick.py]
                mode: persistent
                processes: 1
            """), concurrency: 16)
            let big = String(repeating: "abcdefghij", count: 300_000)   // 3 MB in one request line
            let echoed = try await h.call("plugins.py_echo", [.string(big), 1])
            #expect(echoed["args"]?.arrayValue?.first?.stringValue == big)
            let client = try h.client()
            let handles = try await client.sendMany((0..<2000).map { client.message("plugins.py_quick_add", args: [.int($0), 1]) })
            let results = try await client.gather(handles, timeout: .seconds(60))
            let wrong = results.enumerated().filter { i, m in m.state != .success || m.result.intValue != i + 1 }
            #expect(wrong.isEmpty, "\(wrong.prefix(3))")
            // Another call after the flood works, and a big one too (the writer is not stuck).
            #expect(try await h.call("plugins.py_quick_add", [.number(String(repeating: "9", count: 100_000)), 1]) == .number("1" + String(repeating: "0", count: 100_000)))
            #expect(await h.stop() == 0)
        }

        /// With room for more than one call at a time too: a call sent as soon as the previous
        /// result is out must not land on a process that has just used up its max_calls.
        @Test(arguments: [1, 4])
        func processesAreReusedAndRecycledAfterMaxCalls(concurrency: Int) async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: """
              m.pid:
                queue: {q}
                plugin: [python3, {root}/Tests/Fixtures/plugins/misbehave_persistent.py]
                mode: persistent
                max_calls: 3
            """, concurrency: concurrency)
            var pids: [String] = []
            for _ in 0..<6 { pids.append(try await h.call("m.pid", ["pid"]).serialized()) }
            #expect(Set(pids[0..<3]).count == 1, "\(pids)")
            #expect(Set(pids[3..<6]).count == 1, "\(pids)")
            #expect(pids[0] != pids[3], "not recycled after 3 calls: \(pids)")
            #expect(await h.stop() == 0)
        }

        @Test(arguments: [
            ("garbage", "PluginCrashed", "not a JSON-RPC message"),
            ("logs", "PluginCrashed", "INFO doing the work"),
            ("half", "PluginCrashed", "half a line"),
            ("huge", "PluginProtocolError", "more than 1000000 bytes"),
            ("exit", "PluginCrashed", "ended with this call in flight"),
            ("orphan", "PluginCrashed", "ended with this call in flight"),
            ("wrongid", "PluginCrashed", "never sent to it"),
            ("hang", "TimeLimitExceeded", "time limit of 4 s"),
            ("ignoreterm", "TimeLimitExceeded", "time limit of 4 s"),
        ])
        func misbehavingPersistentPluginsFailClearlyAndTheNextCallWorks(mode: String, type: String, words: String) async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.tasks(), concurrency: 2)
            #expect(try await h.call("m.bad", ["ok"]) == .string("ok"))
            let f = try await h.callFailing("m.bad", [.string(mode)], timeout: 20)
            #expect(f.type == type, "\(mode): \(f)")
            #expect(f.message.contains(words), "\(mode): \(f.message)")
            // The process is restarted (with backoff) and serves again.
            #expect(try await h.call("m.bad", ["ok"], timeout: 20) == .string("ok"))
            #expect(await h.stop() == 0)
        }

        @Test func answersTwiceAndStderrFloodsDoNotLoseCalls() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.tasks(), concurrency: 2)
            #expect(try await h.call("m.bad", ["twice"]) == .string("first"))
            #expect(try await h.call("m.bad", ["flood"], timeout: 20) == .string("flooded"))
            #expect(try await h.call("m.bad", ["ok"], timeout: 20) == .string("ok"))
            #expect(await h.stop() == 0)
        }

        @Test func aCrashLoopPausesTheQueueAndKeepsItsMessages() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: """
              m.crashing:
                queue: {q}
                plugin: [python3, {root}/Tests/Fixtures/plugins/misbehave_persistent.py, crashinit]
                mode: persistent
            """, concurrency: 1)
            let r = try h.redisClient()
            #expect(try await eventually(seconds: 20) { h.worker.output.contains("queue paused") }, "\(h.worker.output.suffix(2000))")
            let c = try h.client()
            _ = try await c.send("m.crashing", args: [])
            try await Task.sleep(for: .seconds(1))
            // Not fetched while paused: the message waits in its queue, nothing is burnt.
            #expect(try await r.call("LLEN", h.queue).int == 1)
            #expect(h.worker.isRunning)
            #expect(await h.stop() == 0)
        }
    }
}
