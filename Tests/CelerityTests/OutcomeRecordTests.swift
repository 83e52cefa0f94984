import Celerity
import Foundation
import RedisClient
import Testing

extension Integration {
    /// Every outcome is recorded exactly once, whichever route carried it: the counters in the
    /// worker's heartbeat (what `celerity status` shows) add up to what was sent.
    @Suite(.timeLimit(.minutes(3)))
    struct OutcomeRecordTests {
        /// What the worker's heartbeat says, once its counters reach `processed` (or 15 s pass).
        static func counters(_ h: WorkerHarness, processed: Int) async throws -> JSONValue {
            let r = try h.redisClient()
            let deadline = Date().addingTimeInterval(15)
            var doc: JSONValue = .null
            while Date() < deadline {
                if let raw = try await r.call("GET", Keys.heartbeat(h.node)).string {
                    doc = try JSONValue(parsing: raw)
                    if (doc["processed"]?.intValue ?? 0) >= processed { break }
                }
                try await Task.sleep(for: .milliseconds(200))
            }
            // One more heartbeat: a route that counted twice would show by now.
            try await Task.sleep(for: .milliseconds(2500))
            if let raw = try await r.call("GET", Keys.heartbeat(h.node)).string { doc = try JSONValue(parsing: raw) }
            return doc
        }

        /// Inline built-ins: a burst (run in batches where they were fetched), one by one (run
        /// on the fetcher's thread after its blocking fetch), a failure; and a one-shot plugin
        /// that fails, is retried, and fails for good.
        @Test func inlineRoutesRecordEachOutcomeOnce() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: """
              t.add:
                queue: {q}
                builtin: add
              t.retrying:
                queue: {q}
                plugin: [python3, {root}/Tests/Fixtures/plugins/misbehave.py]
                retries: 1
                retry_backoff: 0.1
            """)
            let c = try h.client()
            let burst = try await c.sendMany((0..<300).map { c.message("t.add", args: [.int($0), 1]) })
            for handle in burst { _ = try await handle.get(timeout: .seconds(30)) }
            for i in 0..<5 {
                #expect(try await h.call("t.add", [.int(i), 2]) == .int(i + 2))
                try await Task.sleep(for: .milliseconds(50))
            }
            _ = try await h.callFailing("t.add", ["x", []])       // a failure, no retries
            _ = try await h.callFailing("t.retrying", ["exit3"])  // a one-shot plugin: fails, retried once, fails for good
            let doc = try await Self.counters(h, processed: 308)
            #expect(doc["processed"]?.intValue == 308)  // 305 successes, 3 failed runs
            #expect(doc["failed"]?.intValue == 3)
            #expect(doc["retried"]?.intValue == 1)
            #expect(await h.stop() == 0)
        }

        /// Persistent plugins: successes stored on the plugin's reader thread, failures on the
        /// usual path.
        @Test func pluginRoutesRecordEachOutcomeOnce() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: """
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
            """, concurrency: 4)
            let c = try h.client()
            let burst = try await c.sendMany((0..<200).map { c.message("plugins.py_add", args: [.int($0), 1]) })
            for handle in burst { _ = try await handle.get(timeout: .seconds(30)) }
            for i in 0..<5 { #expect(try await h.call("plugins.py_add", [.int(i), 1]) == .int(i + 1)) }
            for _ in 0..<2 { _ = try await h.callFailing("plugins.py_fail", []) }
            let doc = try await Self.counters(h, processed: 207)
            #expect(doc["processed"]?.intValue == 207)
            #expect(doc["failed"]?.intValue == 2)
            #expect(doc["retried"]?.intValue == 0)
            #expect(await h.stop() == 0)
        }
    }
}
