import Celerity
import Foundation
import RedisClient
import Testing

extension Integration {
    /// Celerity's own monitoring CLI (`celerity inspect`, `control`, `events`, `status`,
    /// `revoke`), the real binary, against a Celerity worker and a real Python Celery 5.7
    /// worker on the same Redis database.
    @Suite(.timeLimit(.minutes(3)))
    struct ControlCLITests {
        struct Env {
            let h: WorkerHarness
            let py: ChildProcess
            let pyNode: String
            let pyQueue: String

            /// Runs `celerity <args> --broker <db>`.
            func cli(_ args: [String], name: String = "cli") async throws -> (status: Int32, output: String) {
                try await ChildProcess.run(Paths.celerity, args + ["--broker", h.broker], name: name)
            }

            /// Runs `celerity <args> --json` and parses its one JSON line.
            func json(_ args: [String]) async throws -> (status: Int32, doc: JSONValue?, output: String) {
                let r = try await cli(args + ["--json"])
                let line = r.output.split(separator: "\n").first { $0.hasPrefix("{") }
                return (r.status, line.flatMap { try? JSONValue(parsing: String($0)) }, r.output)
            }
        }

        static func start() async throws -> Env {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: """
              o.add:
                queue: {q}
                builtin: add
              o.sleep:
                queue: {q}
                builtin: sleep
            """, concurrency: 2, db: 11)
            let pyQueue = h.queue + "-py"
            let pyNode = h.prefix + "-py@test"
            let py = try ChildProcess(name: "py-cli-worker", executable: Paths.python3,
                                      arguments: ["-m", "celery", "-A", "py_worker_app", "worker", "-Q", pyQueue, "--pool", "solo", "-c", "1",
                                                  "-n", pyNode, "--without-gossip", "--without-mingle", "-l", "info"],
                                      environment: ["CELERITY_BROKER_URL": h.broker, "CELERITY_RESULT_BACKEND": h.broker],
                                      directory: Paths.root + "/interop")
            let env = Env(h: h, py: py, pyNode: pyNode, pyQueue: pyQueue)
            // Both answer ping once started.
            let up = try await eventually(seconds: 40) {
                let r = try await env.json(["inspect", "ping", "--timeout", "0.5"])
                return r.doc?[h.node] != nil && r.doc?[pyNode] != nil
            }
            if !up { throw TestFailure("workers did not answer ping:\nworker:\n\(h.worker.output.suffix(2000))\npython:\n\(py.output.suffix(2000))") }
            return env
        }

        @Test func inspectAndControlReachCelerityAndPythonWorkers() async throws {
            let e = try await Self.start()
            let (h, pyNode) = (e.h, e.pyNode)

            // ping, human output as celery inspect prints it.
            let ping = try await e.cli(["inspect", "ping"])
            #expect(ping.status == 0, "\(ping.output)")
            #expect(ping.output.contains("->  \(h.node): OK\n        pong") && ping.output.contains("->  \(pyNode): OK\n        pong"), "\(ping.output)")
            #expect(ping.output.contains("2 nodes online."), "\(ping.output)")

            // stats, registered, active_queues: both answer, each with its own content.
            let stats = try await e.json(["inspect", "stats"])
            #expect(stats.status == 0 && stats.doc?[h.node]?["pid"]?.intValue != nil && stats.doc?[pyNode]?["pid"]?.intValue != nil, "\(stats.output)")
            let registered = try await e.json(["inspect", "registered"])
            #expect(registered.doc?[h.node]?.arrayValue?.contains("o.add") == true, "\(registered.output)")
            #expect(registered.doc?[pyNode]?.arrayValue?.contains("pyapp.add") == true, "\(registered.output)")
            let queues = try await e.json(["inspect", "active_queues"])
            #expect(queues.doc?[h.node]?.arrayValue?.first?["name"]?.stringValue == h.queue, "\(queues.output)")
            #expect(queues.doc?[pyNode]?.arrayValue?.first?["name"]?.stringValue == e.pyQueue, "\(queues.output)")

            // active: both reply; a running task shows on the Celerity worker.
            let sleeping = try await e.cli(["call", "o.sleep", "3", "--no-wait", "--manifest", h.manifestPath], name: "call-sleep")
            let sleepID = sleeping.output.trimmingCharacters(in: .whitespacesAndNewlines)
            var active: (status: Int32, doc: JSONValue?, output: String) = (0, nil, "")
            let seen = try await eventually(seconds: 10) {
                active = try await e.json(["inspect", "active"])
                return active.doc?[h.node]?.arrayValue?.contains { $0["id"]?.stringValue == sleepID } == true
            }
            #expect(seen, "active: \(active.output)")
            #expect(active.doc?[pyNode]?.arrayValue != nil, "\(active.output)")

            // -d: only the named node answers (the wait ends at its reply).
            let onlyPy = try await e.json(["inspect", "ping", "-d", pyNode, "--timeout", "5"])
            #expect(onlyPy.status == 0 && onlyPy.doc?.objectValue?.map(\.key) == [pyNode], "\(onlyPy.output)")
            let onlyC = try await e.json(["inspect", "registered", "--destination", h.node])
            #expect(onlyC.doc?.objectValue?.map(\.key) == [h.node], "\(onlyC.output)")

            // Nobody replies: the message, exit 3.
            let nobody = try await e.cli(["inspect", "ping", "-d", "no-such-node@nowhere", "--timeout", "0.5"])
            #expect(nobody.status == 3 && nobody.output.contains("No nodes replied within time constraint."), "\(nobody.status) \(nobody.output)")

            // A control command with an argument, then an error reply: shown as ERROR, exit 1
            // (Celerity workers refuse autoscale).
            let grow = try await e.cli(["control", "pool_grow", "1", "-d", h.node])
            #expect(grow.status == 0 && grow.output.contains("pool will grow"), "\(grow.status) \(grow.output)")
            let autoscale = try await e.cli(["control", "autoscale", "4", "2", "-d", h.node])
            #expect(autoscale.status == 1 && autoscale.output.contains("->  \(h.node): ERROR"), "\(autoscale.status) \(autoscale.output)")

            // status: both listed as answering ping; only the Celerity one has a heartbeat key.
            let status = try await e.cli(["status", "--json"])
            let doc = try JSONValue(parsing: String(status.output.drop(while: { $0 != "{" })))
            let pinged = doc["pinged"]?.arrayValue ?? []
            #expect(pinged.contains { $0["node"]?.stringValue == h.node && $0["celerity"]?.boolValue == true }, "\(status.output)")
            #expect(pinged.contains { $0["node"]?.stringValue == pyNode && $0["celerity"]?.boolValue == false }, "\(status.output)")
            let table = try await e.cli(["status"])
            #expect(table.output.contains("Ping          2 answered: \(h.node), \(pyNode) (no Celerity heartbeat)") || table.output.contains("Ping          2 answered: \(pyNode) (no Celerity heartbeat), \(h.node)"), "\(table.output)")

            // The requester cleaned up its reply queue binding (kombu's table holds no member of ours).
            let r = try h.redisClient()
            let members = try await r.call("SMEMBERS", "_kombu.binding.reply.celery.pidbox").array ?? []
            #expect(members.isEmpty, "left behind: \(members)")
            await e.py.stop(grace: 10)
            #expect(await h.stop() == 0)
        }

        @Test func eventsDumpAndRevokeWithBothWorkers() async throws {
            let e = try await Self.start()
            let (h, pyNode) = (e.h, e.pyNode)

            // enable_events: both agree.
            let enable = try await e.json(["control", "enable_events"])
            #expect(enable.status == 0 && enable.doc?[h.node]?["ok"] != nil && enable.doc?[pyNode]?["ok"] != nil, "\(enable.output)")

            // events --dump: heartbeats of both (asked for at start), then the task events of a
            // task sent to each; Ctrl-C ends it with 0.
            let dump = try ChildProcess(name: "events-dump", executable: Paths.celerity, arguments: ["events", "--dump", "--broker", h.broker])
            func events() -> [JSONValue] {
                dump.output.split(separator: "\n").compactMap { $0.hasPrefix("{") ? try? JSONValue(parsing: String($0)) : nil }
            }
            func has(_ type: String, _ host: String, id: String? = nil) -> Bool {
                events().contains { $0["type"]?.stringValue == type && $0["hostname"]?.stringValue == host && (id == nil || $0["uuid"]?.stringValue == id) }
            }
            let beats = try await eventually(seconds: 15) { has("worker-heartbeat", h.node) && has("worker-heartbeat", pyNode) }
            #expect(beats, "\(dump.output.suffix(3000))")
            let cID = try await e.cli(["call", "o.add", "1", "2", "--no-wait", "--manifest", h.manifestPath]).output.trimmingCharacters(in: .whitespacesAndNewlines)
            let pyID = try await e.cli(["call", "pyapp.add", "3", "4", "--queue", e.pyQueue, "--no-wait"]).output.trimmingCharacters(in: .whitespacesAndNewlines)
            let tasks = try await eventually(seconds: 15) { has("task-succeeded", h.node, id: cID) && has("task-succeeded", pyNode, id: pyID) }
            #expect(tasks, "ids \(cID) \(pyID):\n\(dump.output.suffix(3000))")
            #expect(has("task-received", pyNode, id: pyID) && has("task-started", h.node, id: cID), "\(dump.output.suffix(3000))")
            dump.signal(SIGINT)
            #expect(await dump.wait(seconds: 10) == 0, "\(dump.output.suffix(500))")
            let eventBindings = try await h.redisClient().call("SMEMBERS", "_kombu.binding.celeryev").array?.compactMap(\.string) ?? []
            #expect(!eventBindings.contains { $0.hasPrefix("#") }, "receiver binding left: \(eventBindings)")

            let disable = try await e.json(["control", "disable_events"])
            #expect(disable.status == 0 && disable.doc?[h.node]?["ok"] != nil && disable.doc?[pyNode]?["ok"] != nil, "\(disable.output)")

            // revoke of a task the Python worker holds (eta in 4 s): it obeys the broadcast,
            // stores REVOKED, and never runs it.
            let held = try await e.cli(["call", "pyapp.add", "5", "5", "--queue", e.pyQueue, "--countdown", "4", "--no-wait"])
            let heldID = held.output.trimmingCharacters(in: .whitespacesAndNewlines)
            var scheduled = ""
            let holding = try await eventually(seconds: 10) {
                let s = try await e.json(["inspect", "scheduled", "-d", pyNode])
                scheduled = s.output
                return s.doc?[pyNode]?.arrayValue?.contains { $0["request"]?["id"]?.stringValue == heldID } == true
            }
            #expect(holding, "\(heldID) not scheduled: \(scheduled)")
            let revoke = try await e.cli(["revoke", heldID])
            #expect(revoke.status == 0, "\(revoke.output)")
            let revoked = try await e.json(["inspect", "revoked", "-d", pyNode])
            #expect(revoked.doc?[pyNode]?.arrayValue?.contains(.string(heldID)) == true, "\(revoked.output)")
            let r = try h.redisClient()
            var meta: JSONValue?
            let stored = try await eventually(seconds: 15) {
                meta = try await r.call("GET", Keys.resultMeta(heldID)).bytes.flatMap { try? JSONValue(parsing: $0) }
                return meta?["status"]?.stringValue == "REVOKED"
            }
            #expect(stored, "meta: \(String(describing: meta))\npython:\n\(e.py.output.suffix(2000))")
            try await Task.sleep(for: .seconds(1))
            let after = try await r.call("GET", Keys.resultMeta(heldID)).bytes.flatMap { try? JSONValue(parsing: $0) }
            #expect(after?["status"]?.stringValue == "REVOKED", "ran after all: \(String(describing: after))")
            await e.py.stop(grace: 10)
            #expect(await h.stop() == 0)
        }
    }
}
