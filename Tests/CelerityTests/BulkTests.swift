import Foundation
import RedisClient
import Synchronization
import Testing
@testable import Celerity

extension Integration {
    /// Bulk send, waiting for many results at once, and the CLI's `map`.
    @Suite(.timeLimit(.minutes(3)))
    struct BulkTests {
        static let tasks = """
          b.add:
            queue: {q}
            builtin: add
        """

        @Test func bulkSendAndGatherReturnEveryResultInOrder() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.tasks, concurrency: 4)
            let c = try h.client()
            // Every 500th call has a missing argument: a FAILURE in its place, the rest unaffected.
            let n = 5000
            let messages = (0..<n).map { i in c.message("b.add", args: i % 500 == 7 ? [.int(i)] : [.int(i), .int(i)]) }
            let handles = try await c.sendMany(messages)
            #expect(handles.map(\.id) == messages.map(\.id))
            let seen = Mutex<[Int]>([])
            let metas = try await c.gather(handles, timeout: .seconds(60)) { done, total in seen.withLock { $0.append(done) }; #expect(total == n) }
            #expect(metas.count == n)
            for (i, m) in metas.enumerated() {
                #expect(m.taskID == handles[i].id)
                if i % 500 == 7 {
                    #expect(m.state == .failure)
                    #expect(m.failure?.type == "TypeError")
                } else {
                    #expect(m.state == .success)
                    #expect(m.result.intValue == 2 * i)
                }
            }
            let reported = seen.withLock { $0 }
            #expect(reported.last == n)
            #expect(reported == reported.sorted())
            // Ids are UUID4-shaped and share this client's prefix (one PSUBSCRIBE covers them).
            #expect(handles.allSatisfy { $0.id.count == 36 && $0.id.hasPrefix(c.idPrefix) && UUID(uuidString: $0.id) != nil })
            #expect(Set(handles.map(\.id)).count == n)
            // Everything acked: the worker's processing list is empty.
            #expect(try await h.redisClient().call("LLEN", "celerity:processing:\(h.node)").int == 0)
            #expect(await h.stop() == 0)
        }

        @Test func resultsOfOtherClientsCallsCanBeWaitedForOneByOneAndInBulk() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.tasks)
            let sender = try h.client()
            let handles = try await sender.sendMany((0..<200).map { sender.message("b.add", args: [.int($0), 1]) })
            // Another client (another process, say) knows only the ids.
            let other = try h.client()
            let first = try await AsyncResult(id: handles[0].id, client: other).get(timeout: .seconds(30))
            #expect(first == 1)
            let metas = try await other.gather(handles.map { AsyncResult(id: $0.id, client: other) }, timeout: .seconds(30))
            #expect(metas.map { $0.result.intValue } == (0..<200).map { $0 + 1 })
            // Already finished long ago: still found (read from the key, not the subscription).
            try await Task.sleep(for: .milliseconds(200))
            #expect(try await AsyncResult(id: handles[199].id, client: try h.client()).get(timeout: .seconds(5)) == 200)
            #expect(await h.stop() == 0)
        }

        @Test func aTimeOutNamesTheFirstMissingResult() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.tasks, startWorker: false)
            let c = try h.client()
            let handles = try await c.sendMany((0..<3).map { c.message("b.add", args: [.int($0), 1]) })
            await #expect(throws: TimeoutError.self) { _ = try await c.gather(handles, timeout: .milliseconds(300)) }
            do { _ = try await c.gather(handles, timeout: .milliseconds(300)) } catch let t as TimeoutError { #expect(t.id == handles[0].id) }
        }

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

        @Test func mapSendsEveryLineAndPrintsResultsInOrder() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.tasks)
            let input = NSTemporaryDirectory() + "celerity-map-\(h.queue).txt"
            try "[1, 2]\n[3, 4]\n\n5\n[10, -20]\n".write(toFile: input, atomically: true, encoding: .utf8)
            let common = ["--manifest", h.manifestPath, "--broker", h.broker]
            let r = try await ChildProcess.run(Paths.celerity, ["map", "b.add", "--file", input] + common)
            #expect(r.status == 1, "\(r.output)")   // one call failed
            let lines = r.output.split(separator: "\n").map(String.init)
            let results = lines.filter { !$0.contains("calls:") }
            #expect(results == ["3", "7", #"{"error":"TypeError: b.add() missing 1 required argument: 'y'"}"#, "-10"], "\(r.output)")
            #expect(r.output.contains("4 calls: 3 succeeded, 1 failed"))
            try "[1, 1]\n[2, 2]\n".write(toFile: input, atomically: true, encoding: .utf8)
            let ok = try await ChildProcess.run(Paths.celerity, ["map", "b.add", "--file", input, "--quiet"] + common)
            #expect(ok.status == 0, "\(ok.output)")
            #expect(ok.output.contains("2 calls: 2 succeeded, 0 failed"))
            #expect(await h.stop() == 0)
        }
    }
}

@Suite struct ResultWaitersTests {
    static func meta(_ id: String) -> ResultMeta { .success(id, .int(1)) }

    @Test func aResultThatArrivedFirstIsTakenWithoutWaiting() async {
        let w = ResultWaiters()
        w.deliver("a", Self.meta("a"))
        let m = await w.wait("a", until: Date().addingTimeInterval(5))
        #expect(m?.taskID == "a")
        #expect(w.take("a") == nil)   // taken once
    }

    @Test func aWaiterIsResumedByDeliveryOrByItsDeadline() async {
        let w = ResultWaiters()
        async let got = w.wait("b", until: Date().addingTimeInterval(5))
        try? await Task.sleep(for: .milliseconds(50))
        w.deliver("b", Self.meta("b"))
        #expect(await got?.taskID == "b")
        let t0 = Date()
        #expect(await w.wait("never", until: Date().addingTimeInterval(0.2)) == nil)
        #expect(-t0.timeIntervalSinceNow >= 0.19)
    }

    @Test func droppingFromAFullStashChangesTheMark() {
        let w = ResultWaiters(capacity: 2)
        let before = w.mark
        w.deliver("1", Self.meta("1"))
        w.deliver("2", Self.meta("2"))
        #expect(w.mark == before)
        w.deliver("3", Self.meta("3"))
        #expect(w.mark != before)   // handles sent before this must read their keys
        #expect(w.take("1") == nil)
        #expect(w.take("3") != nil)
    }
}

@Suite struct SlotsTests {
    /// A slot taken past the room (a message a fetch loop already holds) is a debt: the next
    /// release pays it back, and only the one after gives a waiter its slot.
    @Test func aSlotTakenPastTheRoomIsPaidBackBeforeAnyWaiterGetsOne() async throws {
        let slots = Slots(1)
        #expect(await slots.acquire() == 1)
        slots.take()
        let got = Mutex(false)
        let waiter = Task { let n = await slots.acquire(); got.withLock { $0 = true }; return n }
        try await Task.sleep(for: .milliseconds(50))
        slots.release()   // pays the debt
        try await Task.sleep(for: .milliseconds(50))
        #expect(got.withLock { $0 } == false)
        slots.release()   // now the waiter's
        #expect(await waiter.value == 1)
        #expect(got.withLock { $0 })
    }
}
