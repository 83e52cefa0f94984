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
          b.unchecked:
            queue: {q}
            builtin: add
            params: null
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

        @Test func mapSendsEveryLineAndPrintsResultsInOrder() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.tasks)
            let input = NSTemporaryDirectory() + "celerity-map-\(h.queue).txt"
            try "[1, 2]\n[3, 4]\n\n5\n[10, -20]\n".write(toFile: input, atomically: true, encoding: .utf8)
            let common = ["--manifest", h.manifestPath, "--broker", h.broker]
            // add's schema stops the bad line before anything is sent.
            let refused = try await ChildProcess.run(Paths.celerity, ["map", "b.add", "--file", input] + common)
            #expect(refused.status == 2, "\(refused.output)")
            #expect(refused.output.contains("line 4: TypeError: b.add() missing 1 required argument: 'y' (nothing sent)"), "\(refused.output)")
            #expect(try await h.redisClient().call("LLEN", Keys.queue(h.queue)).int == 0)
            // Without a schema, the call fails in the worker and its line says so.
            let r = try await ChildProcess.run(Paths.celerity, ["map", "b.unchecked", "--file", input] + common)
            #expect(r.status == 1, "\(r.output)")   // one call failed
            let lines = r.output.split(separator: "\n").map(String.init)
            let results = lines.filter { !$0.contains("calls:") }
            #expect(results == ["3", "7", #"{"error":"TypeError: b.unchecked() missing 1 required argument: 'y'"}"#, "-10"], "\(r.output)")
            #expect(r.output.contains("4 calls: 3 succeeded, 1 failed"))
            try "[1, 1]\n[2, 2]\n".write(toFile: input, atomically: true, encoding: .utf8)
            let ok = try await ChildProcess.run(Paths.celerity, ["map", "b.add", "--file", input, "--quiet"] + common)
            #expect(ok.status == 0, "\(ok.output)")
            #expect(ok.output.contains("2 calls: 2 succeeded, 0 failed"))
            #expect(await h.stop() == 0)
        }
    }
}
