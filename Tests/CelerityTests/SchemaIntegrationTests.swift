import Celerity
import Foundation
import RedisClient
import Testing

extension Integration {
    /// Argument schemas end to end: the worker refuses a bad call from any client, the Swift
    /// client and the CLI stop one before it is queued; `describe` and `call --help-task`.
    @Suite(.timeLimit(.minutes(2)))
    struct SchemaIntegrationTests {
        static let tasks = """
          s.greet:
            queue: {q}
            builtin: echo
            doc: Greets someone.
            params:
              name: {type: string, minLength: 1}
              times: {type: integer, minimum: 1, default: 1}
          s.slow:
            queue: {q}
            builtin: echo
            track_started: true
            params: {rows: {type: array, items: {type: array, items: number}}}
          s.add:
            queue: {q}
            builtin: add
        """

        /// A second manifest for the same queue, without the schemas: a sender that does not
        /// check (as a Python client, or an older Celerity, would send).
        func uncheckedManifest(_ h: WorkerHarness) throws -> String {
            let path = (h.manifestPath as NSString).deletingLastPathComponent + "/unchecked.yaml"
            try """
            tasks:
              s.greet: {queue: \(h.queue), builtin: echo, params: null}
              s.slow: {queue: \(h.queue), builtin: echo, params: null}
              s.add: {queue: \(h.queue), builtin: add, params: null}
            """.write(toFile: path, atomically: true, encoding: .utf8)
            return path
        }

        @Test func workerRefusesABadCallFromAnyClientWithATypeError() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.tasks)
            let unchecked = try uncheckedManifest(h)
            let common = ["--manifest", unchecked, "--broker", h.broker, "--timeout", "20"]
            // Inline fast path (echo, add run where fetched).
            let greet = try await ChildProcess.run(Paths.celerity, ["call", "s.greet", "ann", "x"] + common)
            #expect(greet.status == 1, "\(greet.output)")
            #expect(greet.output.contains(#"TypeError: s.greet: argument times: expected integer, got string "x""#), "\(greet.output)")
            let add = try await ChildProcess.run(Paths.celerity, ["call", "s.add", "1", "\"2\""] + common)
            #expect(add.status == 1, "\(add.output)")
            #expect(add.output.contains(#"TypeError: s.add: argument y: expected number, got string "2""#), "\(add.output)")
            // The usual path (track_started keeps it off the fast path): the path into nested arrays.
            let slow = try await ChildProcess.run(Paths.celerity, ["call", "s.slow", "[[1, 2], [3, \"x\"]]"] + common)
            #expect(slow.status == 1, "\(slow.output)")
            #expect(slow.output.contains(#"TypeError: s.slow: argument rows[1][1]: expected number, got string "x""#), "\(slow.output)")
            // A raw client with no manifest at all: binding errors as Python's.
            let raw = try CelerityClient(broker: h.broker, resultBackend: h.broker)
            let q = CelerityClient.SendOptions(queue: h.queue)
            let f = try await failure(of: raw.send("s.greet", args: [], kwargs: [JSONMember("nme", "ann")], options: q))
            #expect(f.type == "TypeError")
            #expect(f.message == "s.greet() got an unexpected keyword argument 'nme'")
            let f2 = try await failure(of: raw.send("s.greet", kwargs: [JSONMember("times", 2)], options: q))
            #expect(f2.message == "s.greet() missing 1 required argument: 'name'")
            // Good calls run.
            let ok = try await raw.send("s.greet", args: ["ann"], kwargs: [JSONMember("times", 2.0)], options: q).get(timeout: .seconds(20))
            #expect(ok == ["args": ["ann"], "kwargs": ["times": 2.0]])
            #expect(try await raw.send("s.add", args: [.number("99999999999999999999"), 1], options: q).get(timeout: .seconds(20)) == .number("100000000000000000000"))
            #expect(await h.stop() == 0)
        }

        func failure(of handle: AsyncResult) async throws -> TaskFailure {
            do {
                let v = try await handle.get(timeout: .seconds(20))
                throw TestFailure("expected a failure, got \(v)")
            } catch let f as TaskFailure {
                return f
            }
        }

        @Test func clientAndCLIRefuseBeforeQueueing() async throws {
            let redis = try await sharedRedis.value
            // No worker: whatever is queued stays in the list.
            let h = try WorkerHarness(redis: redis, tasks: Self.tasks, startWorker: false)
            let client = try h.client()
            let admin = try h.redisClient()
            do {
                _ = try await client.send("s.greet", args: ["ann", "x"])
                Issue.record("sent")
            } catch let e as ArgumentError {
                #expect(e.path == "times")
                #expect(e.message == #"s.greet: argument times: expected integer, got string "x""#)
                #expect(e.exitStatus == .badInput)
            }
            // sendMany: one bad call and nothing of the batch is queued.
            let good = client.message("s.greet", args: ["ann"])
            let bad = client.message("s.slow", args: [[[1], ["2"]]])
            do {
                _ = try await client.sendMany([good, bad])
                Issue.record("sent")
            } catch let e as ArgumentError {
                #expect(e.path == "rows[1][0]")
            }
            #expect(try await admin.call("LLEN", Keys.queue(h.queue)).int == 0)

            let common = ["--manifest", h.manifestPath, "--broker", h.broker, "--timeout", "2"]
            let r = try await ChildProcess.run(Paths.celerity, ["call", "s.greet", "ann", "x"] + common)
            #expect(r.status == 2, "\(r.output)")
            #expect(r.output.contains(#"TypeError: s.greet: argument times: expected integer, got string "x" (not sent)"#), "\(r.output)")
            #expect(r.output.contains("path: times"), "\(r.output)")
            #expect(r.output.contains("usage: s.greet(name: string, times: integer = 1)"), "\(r.output)")
            let noWait = try await ChildProcess.run(Paths.celerity, ["call", "s.greet", "--kwargs", #"{"name": ""}"#, "--no-wait"] + common)
            #expect(noWait.status == 2, "\(noWait.output)")
            #expect(noWait.output.contains("path: name"), "\(noWait.output)")
            // A built-in's own schema holds for the CLI too.
            let add = try await ChildProcess.run(Paths.celerity, ["call", "s.add", "1"] + common)
            #expect(add.status == 2, "\(add.output)")
            #expect(add.output.contains("TypeError: s.add() missing 1 required argument: 'y' (not sent)"), "\(add.output)")
            // The first step of a chain too.
            let chain = try await ChildProcess.run(Paths.celerity, ["call", "s.add", "1", "\"x\"", "--then", "s.add", "2"] + common)
            #expect(chain.status == 2, "\(chain.output)")
            #expect(chain.output.contains("s.add: argument y: expected number"), "\(chain.output)")
            #expect(try await admin.call("LLEN", Keys.queue(h.queue)).int == 0)
        }

        @Test func describeAndHelpTaskShowTheSchemaAndPolicy() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.tasks + """

              s.limited:
                queue: {q}
                builtin: sleep
                time_limit: 7
                retries: 2
                rate_limit: 10/s
                max_concurrency: 3
            """, startWorker: false)
            let m = ["--manifest", h.manifestPath]
            let d = try await ChildProcess.run(Paths.celerity, ["describe", "s.greet"] + m)
            #expect(d.status == 0, "\(d.output)")
            for line in ["s.greet", "  Greets someone.", "usage:   s.greet(name: string, times: integer = 1)", "queue:   \(h.queue)",
                         "handler: built-in echo", "origin:  tasks.yaml", "schema:  tasks.yaml", #"name   {"type":"string","minLength":1}  (required)"#,
                         #"times  {"type":"integer","minimum":1,"default":1}"#, "policy:", "time_limit: none", "retries: 0"] {
                #expect(d.output.contains(line), "missing \(line) in:\n\(d.output)")
            }
            let lim = try await ChildProcess.run(Paths.celerity, ["describe", "s.limited"] + m)
            for line in ["usage:   s.limited(seconds: number)", "schema:  declared by the built-in sleep", "time_limit: 7.0", "retries: 2",
                         "rate_limit: 10/s", "max_concurrency: 3"] {
                #expect(lim.output.contains(line), "missing \(line) in:\n\(lim.output)")
            }
            let j = try await ChildProcess.run(Paths.celerity, ["describe", "s.greet", "--json"] + m)
            #expect(j.status == 0)
            let doc = try JSONValue(parsing: j.output.trimmingCharacters(in: .whitespacesAndNewlines))
            #expect(doc["name"] == "s.greet")
            #expect(doc["queue"] == .string(h.queue))
            #expect(doc["handler"] == ["builtin": "echo"])
            #expect(doc["origin"] == "tasks.yaml")
            #expect(doc["params"]?["times"] == ["type": "integer", "minimum": 1, "default": 1])
            #expect(doc["json_schema"]?["required"] == ["name"])
            #expect(doc["json_schema"]?["additionalProperties"] == false)
            #expect(doc["policy"]?["retries"] == 0)
            // Unknown task: exit 2 with close names.
            let unknown = try await ChildProcess.run(Paths.celerity, ["describe", "s.gret"] + m)
            #expect(unknown.status == 2)
            #expect(unknown.output.contains("unknown task 's.gret'") && unknown.output.contains("did you mean 's.greet'"), "\(unknown.output)")
            // call --help-task: usage and params, nothing sent (no broker is reachable here).
            let help = try await ChildProcess.run(Paths.celerity, ["call", "--help-task", "s.greet", "--broker", "redis://127.0.0.1:1/0"] + m)
            #expect(help.status == 0, "\(help.output)")
            #expect(help.output.contains("usage: celerity call s.greet name [times] [--kwargs JSON]"), "\(help.output)")
            #expect(help.output.contains("s.greet(name: string, times: integer = 1)"))
            #expect(help.output.contains(#"times  {"type":"integer","minimum":1,"default":1}"#))
            let helpUnknown = try await ChildProcess.run(Paths.celerity, ["call", "--help-task", "greet"] + m)
            #expect(helpUnknown.status == 2)
            #expect(helpUnknown.output.contains("did you mean 's.greet'"), "\(helpUnknown.output)")
        }
    }
}
