import Celerity
import Foundation
import RedisClient
import Testing

extension Integration {
    /// Issue 9, points 2 and 5: what a live worker holds in its processing list and what it
    /// may start. A lost fetch reply must not strand messages; a stalled worker must not start
    /// what another worker already took back.
    @Suite(.timeLimit(.minutes(3)))
    struct StrandedMessageTests {
        static let tasks = """
          s.add:
            queue: {q}
            builtin: add
          s.sleep:
            queue: {q}
            builtin: sleep
        """

        /// A message that a fetch moved into the worker's processing list, whose reply never
        /// reached the worker (a connection reset): placed there by hand, it is exactly what a
        /// lost reply leaves. It is handed back and run within seconds.
        @Test func aMessageWhoseFetchReplyWasLostIsHandedBackAndRun() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.tasks, concurrency: 2)
            let r = try h.redisClient()
            let c = try h.client()
            #expect(try await h.call("s.add", [1, 1]) == .number("2"))   // the worker is up
            let message = c.message("s.add", args: [20, 22])
            let waiter = AsyncResult(id: message.id, client: c)
            try await r.call("LPUSH", Keys.processing(h.node), message.encode())
            let start = Date()
            #expect(try await waiter.get(timeout: .seconds(20)) == .number("42"))
            #expect(Date().timeIntervalSince(start) < 12)
            #expect(try await eventually { try await r.call("LLEN", Keys.processing(h.node)).int == 0 })
            #expect(h.worker.output.contains("handed back messages stranded in this worker's processing list"))
            #expect(await h.stop() == 0)
        }

        /// A worker stopped (SIGSTOP) with messages prefetched, long enough for its heartbeat to
        /// expire: another worker takes its list back and runs everything. When the first one
        /// resumes it may finish the task it was running (at-least-once) but starts none of
        /// the messages it had only prefetched.
        @Test func aStalledWorkerStartsNoneOfThePrefetchedMessagesAnotherWorkerTookBack() async throws {
            let redis = try await sharedRedis.value
            let a = try WorkerHarness(redis: redis, tasks: Self.tasks, concurrency: 1,
                                      extraArgs: ["--prefetch-multiplier", "4"], node: "stalled-\(UUID().uuidString.prefix(6))@test")
            let r = try a.redisClient()
            let c = try a.client()
            #expect(try await a.call("s.add", [1, 1]) == .number("2"))
            var handles: [AsyncResult] = []
            for _ in 0..<5 { handles.append(try await c.send("s.sleep", args: [1.5])) }
            // One running, the rest prefetched into its processing list.
            #expect(try await eventually { try await r.call("LLEN", Keys.processing(a.node)).int ?? 0 >= 4 })
            #expect(try await eventually { a.worker.output.contains("task started") })
            a.worker.signal(SIGSTOP)
            let stoppedAt = a.worker.output.count
            let b = try WorkerHarness(redis: redis, tasks: Self.tasks, concurrency: 4, node: "rescuer-\(UUID().uuidString.prefix(6))@test", reusingQueueOf: a)
            for handle in handles { #expect(try await handle.get(timeout: .seconds(40)) == .number("1.5")) }
            a.worker.signal(SIGCONT)
            // Time to finish what it was running and to look at what it had prefetched.
            #expect(try await eventually(seconds: 10) { a.worker.output.contains("not started: another worker took this message back") },
                    "\(a.worker.output.suffix(3000))")
            try await Task.sleep(for: .seconds(2))
            let after = String(a.worker.output.dropFirst(stoppedAt))
            let startedAfter = after.split(separator: "\n").filter { $0.contains("task started") }
            #expect(startedAfter.isEmpty, "the stalled worker started \(startedAfter.count) messages it no longer held")
            let succeededOnA = a.worker.output.split(separator: "\n").filter { $0.contains("task succeeded") && $0.contains("s.sleep") }
            #expect(succeededOnA.count <= 1)
            #expect(try await r.call("LLEN", Keys.processing(a.node)).int == 0)
            #expect(try await a.call("s.add", [2, 2]) == .number("4"))   // both serve on
            #expect(await a.stop() == 0)
            #expect(await b.stop() == 0)
        }
    }
}
