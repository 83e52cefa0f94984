import Celerity
import Foundation
import Testing

extension Integration {
    /// Workflows built from Swift and from the CLI (chains, groups, chords, declared workflows),
    /// run by a Celerity worker and, for a mixed chain, a Python Celery worker.
    @Suite(.timeLimit(.minutes(3)))
    struct WorkflowClientTests {
        static let tasks = """
          c.add:
            queue: {q}
            builtin: add
          c.sum:
            queue: {q}
            builtin: sum
          c.fail:
            queue: {q}
            builtin: fail
        workflows:
          squares_then_sum:
            chain:
              - chord:
                  header: [{task: c.add, args: [0]}, {task: c.add, args: [1], times: 2}]
                  body: c.sum
              - {task: c.add, args: [100]}
        """

        @Test func swiftClientChainsGroupsAndChords() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.tasks, concurrency: 4)
            let c = try h.client()
            let add = { (args: [JSONValue]) in c.signature("c.add", args: args) }
            #expect(try await c.apply(c.chain([add([1, 2]), add([3]), add([4])])).get() == 10)
            #expect(try await c.apply(c.chain([add([1, 2]), c.signature("c.add", args: [5, 5], immutable: true)])).get() == 10)
            #expect(try await c.apply(c.group((0..<5).map { add([.int($0), .int($0)]) })).get() == [0, 2, 4, 6, 8])
            #expect(try await c.apply(c.chord((1...10).map { add([.int($0), 0]) }, c.signature("c.sum"))).get() == 55)
            // args given to `apply` go to the first calls
            #expect(try await c.apply(c.chain([c.signature("c.add"), add([1])]), args: [20, 22]).get() == 43)
            // a chord inside a chain, and a chain as a chord's body
            #expect(try await c.apply(c.chain([add([1, 1]), c.chord([add([1]), add([2])], c.signature("c.sum")), add([100])])).get() == 107)
            #expect(try await c.apply(c.chord([add([1, 1]), add([2, 2])], c.chain([c.signature("c.sum"), add([10])]))).get() == 16)
            // failures reach the waiter: a failing step, a failing chord part (ChordError)
            await #expect(throws: TaskFailure.self) { try await c.apply(c.chain([add([1, 2]), c.signature("c.fail", immutable: true), add([1])])).get(timeout: .seconds(20)) }
            do {
                _ = try await c.apply(c.chord([add([1, 1]), c.signature("c.fail", args: ["part failed"])], c.signature("c.sum"))).get(timeout: .seconds(20))
                Issue.record("a chord with a failing part succeeded")
            } catch let f as TaskFailure {
                #expect(f.type == "ChordError")
                #expect(f.message.contains("part failed"))
            }
            #expect(await h.stop() == 0)
        }

        @Test func rpcRunsChainsAndGroupsAndRefusesChords() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.tasks, concurrency: 4, resultBackend: "rpc://", db: 13)
            let c = try h.client()
            let add = { (args: [JSONValue]) in c.signature("c.add", args: args) }
            #expect(try await c.apply(c.chain([add([1, 2]), add([3]), add([4])])).get() == 10)
            #expect(try await c.apply(c.group([add([1, 1]), add([2, 2])])).get() == [2, 4])
            do {
                _ = try await c.apply(c.chord([add([1, 1])], c.signature("c.sum")))
                Issue.record("rpc accepted a chord")
            } catch let e as ClientError {
                #expect(e.description.contains("rpc backend does not support chords"))
            }
            #expect(await h.stop() == 0)
        }

        @Test func cliChainsWithThenAndRunsDeclaredWorkflows() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.tasks, concurrency: 4)
            let common = ["--manifest", h.manifestPath, "--broker", h.broker]
            let chain = try await ChildProcess.run(Paths.celerity, ["call", "c.add", "1", "2", "--then", "c.add", "3", "--then", "c.add", "-4"] + common)
            #expect(chain.status == 0, "\(chain.output)")
            #expect(chain.output.trimmingCharacters(in: .whitespacesAndNewlines) == "2")
            // (5+0) + (5+1) + (5+1) = 17, then + 100
            let declared = try await ChildProcess.run(Paths.celerity, ["call", "squares_then_sum", "5"] + common)
            #expect(declared.status == 0, "\(declared.output)")
            #expect(declared.output.trimmingCharacters(in: .whitespacesAndNewlines) == "117")
            let failing = try await ChildProcess.run(Paths.celerity, ["call", "c.add", "1", "2", "--then", "c.fail"] + common)
            #expect(failing.status == 1)
            #expect(failing.output.contains("ValueError"))
            #expect(await h.stop() == 0)
        }

        @Test func checkPointsAtUnknownTasksAndWrongArityInWorkflows() async throws {
            let dir = NSTemporaryDirectory() + "celerity-wf-\(UUID().uuidString.prefix(6))"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let path = dir + "/tasks.yaml"
            let head = "tasks:\n  c.add:\n    queue: q\n    builtin: add\nworkflows:\n  w:\n    chain:\n"
            try (head + "      - c.add\n      - c.nope\n").write(toFile: path, atomically: true, encoding: .utf8)
            let unknown = try await ChildProcess.run(Paths.celerity, ["check", path])
            #expect(unknown.status == 2)
            #expect(unknown.output.contains("\(path):9:9: error: workflow 'w', chain step 2 names unknown task 'c.nope'"), "\(unknown.output)")
            try (head + "      - c.add\n      - {task: c.add, args: [1, 2]}\n").write(toFile: path, atomically: true, encoding: .utf8)
            let arity = try await ChildProcess.run(Paths.celerity, ["check", path])
            #expect(arity.status == 2)
            #expect(arity.output.contains("\(path):9:9: error: workflow 'w', chain step 2: 'c.add' (built-in add) takes 2 arguments, here it would get 3 (1 from the step before it)"), "\(arity.output)")
            try (head + "      - c.add\n      - {task: c.add, args: [1]}\n").write(toFile: path, atomically: true, encoding: .utf8)
            let ok = try await ChildProcess.run(Paths.celerity, ["check", path])
            #expect(ok.status == 0, "\(ok.output)")
        }

        /// A chain sent from Swift whose steps alternate between a Python Celery worker and a
        /// Celerity worker.
        @Test func aSwiftChainAlternatesBetweenPythonAndCelerityWorkers() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.tasks, concurrency: 2, db: 14)
            let pyQueue = h.queue + "-py"
            let py = try ChildProcess(name: "py-chain-worker", executable: Paths.python3,
                                      arguments: ["-m", "celery", "-A", "py_worker_app", "worker", "-Q", pyQueue, "--pool", "solo", "-c", "1",
                                                  "-n", "pychain@%h", "--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "info"],
                                      environment: ["CELERITY_BROKER_URL": h.broker, "CELERITY_RESULT_BACKEND": h.broker],
                                      directory: Paths.root + "/interop")
            let c = try h.client()
            let mul = { (args: [JSONValue]) in c.signature("pyapp.mul", args: args, options: .init(queue: pyQueue)) }
            let r = try await c.apply(c.chain([c.signature("c.add", args: [1, 2]), mul([5]), c.signature("c.add", args: [1]), mul([2])]))
            #expect(try await r.get(timeout: .seconds(60)) == 32, "Python worker:\n\(py.output.suffix(2000))")
            await py.stop(grace: 10)
            #expect(await h.stop() == 0)
        }
    }
}
