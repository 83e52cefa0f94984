import Celerity
import Foundation
import Testing

extension Integration {
    /// The fetch loops of a worker of several queues share one prefetch room: every queue is served.
    @Suite(.timeLimit(.minutes(3)))
    struct PrefetchTests {
        /// Regression: fetch loops of several queues share one prefetch room; they once waited
        /// for whole batches while each held part of it, and none fetched again.
        @Test func manyQueuesSharingAPrefetchRoomAreAllServed() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: """
              m.a:
                queue: {q}
                builtin: factorial
              m.b:
                queue: {q}-b
                builtin: factorial
              m.c:
                queue: {q}-c
                builtin: factorial
              m.d:
                queue: {q}-d
                builtin: factorial
            """, concurrency: 8, extraArgs: ["-Q", "{q},{q}-b,{q}-c,{q}-d"])
            let c = try h.client()
            for round in 0..<3 {
                let handles = try await c.sendMany(["m.a", "m.b", "m.c", "m.d"].flatMap { t in (0..<40).map { c.message(t, args: [.int(500 + $0 + round)]) } })
                let metas = try await c.gather(handles, timeout: .seconds(20))
                #expect(metas.allSatisfy { $0.state == .success })
            }
            #expect(await h.stop() == 0)
        }

        /// Regression: a fetch loop waiting on an empty queue held part of the prefetch room
        /// while it blocked, so in a worker of several queues the idle ones sat on it and the
        /// busy one got a slot only when a blocking fetch timed out (a few calls per second).
        @Test func idleQueuesDoNotHoldThePrefetchRoomWhileTheyWait() async throws {
            let redis = try await sharedRedis.value
            let idle = (1...5).map { "{q}-\($0)" }
            let h = try WorkerHarness(redis: redis, tasks: """
              m.busy:
                queue: {q}
                builtin: factorial
            """ + idle.enumerated().map { "\n  m.idle\($0.offset):\n    queue: \($0.element)\n    builtin: factorial" }.joined(),
                                      concurrency: 1, extraArgs: ["-Q", (["{q}"] + idle).joined(separator: ",")])
            let c = try h.client()
            _ = try await c.send("m.busy", args: [3]).get(timeout: .seconds(20))   // the worker is up
            try await Task.sleep(for: .milliseconds(700))                          // every idle loop is waiting
            let started = Date()
            let handles = try await c.sendMany((0..<200).map { c.message("m.busy", args: [.int(10 + $0 % 5)]) })
            let metas = try await c.gather(handles, timeout: .seconds(60))
            let took = Date().timeIntervalSince(started)
            #expect(metas.allSatisfy { $0.state == .success })
            #expect(took < 4, "200 tiny calls took \(took) s with five idle queues beside them")
            #expect(await h.stop() == 0)
        }
    }
}
