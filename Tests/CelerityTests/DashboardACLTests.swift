import Celerity
import Foundation
import RedisClient
import Testing

/// The ACL rules docs/security.md gives a reader, read from the file itself so that a test of
/// them cannot drift from what the doc says.
enum SecurityDoc {
    /// The rules of the code block that starts `ACL SETUSER <user> on >PASSWORD`, without that
    /// prefix, lines joined as written.
    static func acl(_ user: String) throws -> String {
        let text = try String(contentsOfFile: Paths.root + "/docs/security.md", encoding: .utf8)
        let head = "ACL SETUSER \(user) on >PASSWORD"
        let lines = text.components(separatedBy: "\n")
        guard let i = lines.firstIndex(where: { $0.hasPrefix(head + " ") }) else {
            throw TestFailure("docs/security.md has no line starting \"\(head)\"")
        }
        var rules = [String(lines[i].dropFirst(head.count))]
        for line in lines[(i + 1)...] {
            if line.hasPrefix("```") { return rules.joined(separator: "\n") }
            rules.append(line)
        }
        throw TestFailure("docs/security.md: the block of \(user) does not end")
    }
}

extension Integration {
    /// The dashboard under the Redis ACL users of docs/security.md ("The dashboard"), with a
    /// worker under the doc's worker user: every page, API document and /metrics, and every
    /// action, as `celerity-dashboard`; the same pages, and a clear 403 for every action that
    /// changes nothing, as the read-only `celerity-dashboard-ro`.
    @Suite(.timeLimit(.minutes(3)))
    struct DashboardACLTests {
        /// A cluster as the doc's users: the admin (the default user) makes the state to look at.
        struct Cluster {
            let s: ACLTests.Setup
            let manifest: String
            let node: String
            let worker: ChildProcess
            let dashboard: DashboardProcess
            let csrf: String
            let client: CelerityClient
            let adminURL: String
            /// The default user, on the broker's database.
            let admin: Redis

            /// `dashboardUser`: the name of the doc's block for the dashboard. `db`: the broker's
            /// database; other than 0, the rules are changed as the doc says (`+select`, and the
            /// database in the channels' names).
            init(dashboardUser: String, db: Int = 0) async throws {
                s = try await ACLTests.Setup()
                adminURL = "redis://:\(ACLTests.Setup.adminPassword)@127.0.0.1:\(s.redis.port)/\(db)"
                func rules(_ user: String) throws -> String {
                    let r = try SecurityDoc.acl(user)
                    return db == 0 ? r : r.replacingOccurrences(of: "&/0.", with: "&/\(db).") + " +select"
                }
                func onDB(_ url: String) -> String { String(url.dropLast(2)) + "/\(db)" }
                admin = try Redis(adminURL, label: "admin-db")
                // A manifest of the queue's task and a schedule (read by /schedules, not fired: no beat).
                manifest = (s.manifest as NSString).deletingLastPathComponent + "/dashboard.yaml"
                try """
                tasks:
                  a.add: {queue: \(s.queue), builtin: add, params: null}
                  idle.add: {queue: \(s.queue)-idle, builtin: add}
                schedules:
                  hourly: {task: a.add, every: 1h, args: [1, 1]}
                """.write(toFile: manifest, atomically: true, encoding: .utf8)
                let workerURL = onDB(try await s.user("celerity-worker", try rules("celerity-worker")))
                let dashboardURL = onDB(try await s.user(dashboardUser, try rules(dashboardUser)))
                node = "w-\(UUID().uuidString.prefix(6))@dash-acl"
                worker = try s.worker(workerURL, backend: workerURL, node: node)
                try await ACLTests.waitReady(worker)
                dashboard = try await DashboardProcess.start(broker: dashboardURL, manifest: manifest)
                csrf = try await HTTP.get(dashboard.base + "/api/csrf").json()["csrf"]?.stringValue ?? ""
                client = try CelerityClient(broker: adminURL, resultBackend: adminURL, manifest: try Manifest.load(path: manifest))
                // Waiting on a queue nobody consumes: the overview notes when it saw the next one (HSET).
                for i in 0..<2 { _ = try await client.send("idle.add", args: [.int(i), 1]) }
            }

            var idle: String { s.queue + "-idle" }

            func get(_ path: String) async throws -> HTTPReply { try await HTTP.get(dashboard.base + path) }

            func post(_ path: String, _ body: String = "{}") async throws -> HTTPReply {
                try await HTTP.request("POST", dashboard.base + path, headers: ["Content-Type": "application/json", "X-CSRF-Token": csrf], body: body)
            }

            /// A delivered-three-times message in a dead worker's processing list: the worker's
            /// recovery dead-letters it (as the worker user).
            func poisonPill(_ args: [JSONValue]) async throws -> TaskMessage {
                let m = client.message("a.add", args: args)
                let ghost = "ghost-\(UUID().uuidString.prefix(6))@dash-acl"
                try await admin.call("LPUSH", Keys.processing(ghost), try #require(TaskMessage.markRedelivered(m.encode(), count: 3)))
                try await admin.call("SADD", Keys.workers, ghost)
                return m
            }

            /// Every page, API document and /metrics answers 200 with no refusal in it; returns
            /// the dead letters' ids by task id.
            func readEverything(task: String) async throws {
                let paths = ["/", "/tasks", "/tasks?state=SUCCESS", "/tasks/\(task)", "/dead", "/delayed", "/schedules",
                             "/api/overview", "/api/tasks", "/api/tasks/\(task)", "/api/throughput", "/api/dead", "/api/delayed",
                             "/api/schedules", "/api/csrf", "/metrics", "/healthz"]
                for path in paths {
                    let r = try await get(path)
                    #expect(r.status == 200, "\(path): \(r.status) \(r.text.prefix(800))")
                    #expect(!r.text.contains("NOPERM") && !r.text.contains("Redis refused"), "\(path): \(r.text.prefix(800))")
                }
                // What they show is what is there (not an empty page that hid a refusal).
                #expect(try await get("/api/tasks/\(task)").json()["state"] == .string("SUCCESS"))
                #expect(try await get("/api/tasks?state=SUCCESS").json()["tasks"]?.arrayValue?.isEmpty == false)
                let schedules = try await get("/api/schedules").json().arrayValue ?? []
                #expect(schedules.count == 1 && schedules.first?["name"] == .string("hourly"), "\(schedules)")
                #expect(try await get("/schedules").text.contains("hourly"))
                let metrics = PromText(try await get("/metrics").text)
                #expect(metrics.value("celerity_worker_up", ["worker": node]) == 1, "\(metrics.text)")
                #expect(metrics.value("celerity_queue_consumers", ["queue": s.queue]) == 1, "\(metrics.text)")
                #expect(metrics.value("celerity_queue_messages", ["queue": idle]) == 2, "\(metrics.text)")
                #expect(try await admin.call("HEXISTS", "celerity:queue-head", idle).int == 1)
            }

            func stop() async {
                if worker.isRunning { await worker.stop(grace: 20) }
                let status = await dashboard.child.stop()
                #expect(status == 0, "dashboard: \(status)\n\(dashboard.child.output.suffix(2000))")
                await s.stop()
            }
        }

        /// ACLTests writes the worker's, client's and operator's rules out; they are the doc's.
        @Test func theRulesOfACLTestsAreTheDocs() throws {
            func words(_ rules: String) -> [String] { rules.split(whereSeparator: \.isWhitespace).map(String.init) }
            for (user, rules) in [("celerity-worker", ACLTests.workerACL), ("celerity-client", ACLTests.clientACL), ("celerity-operator", ACLTests.operatorACL)] {
                #expect(words(try SecurityDoc.acl(user)) == words(rules), "\(user): docs/security.md and ACLTests differ")
            }
        }

        @Test(arguments: [0, 5])
        func theDocsDashboardUserServesEveryPageAndAction(db: Int) async throws {
            let c = try await Cluster(dashboardUser: "celerity-dashboard", db: db)
            do {
                let done = try await c.client.send("a.add", args: [2, 3])
                #expect(try await done.get(timeout: .seconds(20)) == .number("5"))
                let later = try await c.client.send("a.add", args: [1, 1], options: .init(countdown: 300))
                let stopped = try await c.client.send("a.add", args: [2, 2], options: .init(countdown: 300))
                let toRetry = try await c.poisonPill([20, 22])
                let toDelete = try await c.poisonPill([1, 2])
                var dead: [JSONValue] = []
                let both = try await eventually(seconds: 15) {
                    dead = try await c.get("/api/dead").json()["entries"]?.arrayValue ?? []
                    return dead.count == 2
                }
                #expect(both, "\(dead)\n\(c.worker.output.suffix(2000))")
                // The history records are written within ~100 ms of the outcome.
                #expect(try await eventually(seconds: 10) { try await c.get("/api/tasks?id=\(done.id)").json()["tasks"]?.arrayValue?.count == 1 })
                try await c.readEverything(task: done.id)
                #expect(try await c.get("/api/delayed").json()["count"] == .int(2))

                // Dead letters: one retried (the worker answers it), one deleted.
                let retried = try await c.post("/api/dead/retry", #"{"ids":["\#(toRetry.id)"]}"#)
                #expect(retried.status == 200 && (try? retried.json()["retried"]) == .int(1), "\(retried.status) \(retried.text)")
                #expect(try await AsyncResult(id: toRetry.id, client: c.client).get(timeout: .seconds(15)) == .number("42"))
                let deleted = try await c.post("/api/dead/delete", #"{"ids":["\#(toDelete.id)"]}"#)
                #expect(deleted.status == 200 && (try? deleted.json()["deleted"]) == .int(1), "\(deleted.status) \(deleted.text)")
                #expect(try await c.admin.call("LLEN", Keys.deadLetters).int == 0)

                // Revoke, and revoke with terminate.
                let revoked = try await c.post("/api/tasks/\(later.id)/revoke", #"{"terminate":false}"#)
                #expect(revoked.status == 200, "\(revoked.text)")
                #expect(try await c.admin.call("ZSCORE", Keys.revoked, later.id).string != nil)
                let terminated = try await c.post("/api/tasks/\(stopped.id)/revoke", #"{"terminate":true}"#)
                #expect(terminated.status == 200, "\(terminated.text)")
                #expect(try await c.admin.call("ZSCORE", Keys.revokedTerminate, stopped.id).string != nil)

                // Pause: the worker stops fetching; what is sent waits, and a purge takes it.
                let paused = try await c.post("/api/queues/\(c.s.queue)/pause")
                #expect(paused.status == 200 && (try? paused.json()["changed"]) == .bool(true), "\(paused.text)")
                #expect(try await eventually(seconds: 5) {
                    try await c.admin.call("GET", Keys.heartbeat(c.node)).bytes.map { try JSONValue(parsing: $0)["paused"] == [.string(c.s.queue)] } ?? false
                }, "\(c.worker.output.suffix(2000))")
                for i in 0..<3 { _ = try await c.client.send("a.add", args: [.int(i), 1]) }
                _ = try await c.client.send("a.add", args: [9, 9], options: .init(priority: 9))
                let purged = try await c.post("/api/queues/\(c.s.queue)/purge")
                #expect(purged.status == 200 && (try? purged.json()["purged"]) == .int(4), "\(purged.text)")
                let resumed = try await c.post("/api/queues/\(c.s.queue)/resume")
                #expect(resumed.status == 200 && (try? resumed.json()["changed"]) == .bool(true), "\(resumed.text)")
                #expect(try await c.admin.call("SCARD", Keys.paused).int == 0)
                #expect(try await c.client.send("a.add", args: [7, 7]).get(timeout: .seconds(20)) == .number("14"))
                // The idle queue purged: the next overview drops its note (HDEL).
                let idle = try await c.post("/api/queues/\(c.idle)/purge")
                #expect(idle.status == 200 && (try? idle.json()["purged"]) == .int(2), "\(idle.text)")
                #expect(try await c.get("/api/overview").status == 200)
                #expect(try await c.admin.call("HEXISTS", "celerity:queue-head", c.idle).int == 0)

                // Shutdown: the worker stops cleanly.
                let shutdown = try await c.post("/api/workers/\(c.node)/shutdown")
                #expect(shutdown.status == 200, "\(shutdown.status) \(shutdown.text)")
                let status = await c.worker.wait(seconds: 15)
                #expect(status == 0, "worker: \(status.map(String.init) ?? "still running")\n\(c.worker.output.suffix(2000))")

                for r in [retried, deleted, revoked, terminated, paused, purged, resumed, shutdown] {
                    #expect(!r.text.contains("NOPERM"), "\(r.text)")
                }
                #expect(!c.dashboard.child.output.contains("NOPERM"), "\(c.dashboard.child.output)")
                #expect(!c.worker.output.contains("NOPERM"), "\(c.worker.output)")
            } catch {
                await c.stop()
                throw error
            }
            await c.stop()
        }

        @Test func theReadOnlyUserServesThePagesAndRefusesEveryActionClearly() async throws {
            let c = try await Cluster(dashboardUser: "celerity-dashboard-ro")
            do {
                let done = try await c.client.send("a.add", args: [2, 3])
                #expect(try await done.get(timeout: .seconds(20)) == .number("5"))
                let later = try await c.client.send("a.add", args: [1, 1], options: .init(countdown: 300))
                let pill = try await c.poisonPill([20, 22])
                #expect(try await eventually(seconds: 15) { try await c.admin.call("LLEN", Keys.deadLetters).int == 1 }, "\(c.worker.output.suffix(2000))")
                #expect(try await eventually(seconds: 10) { try await c.get("/api/tasks?id=\(done.id)").json()["tasks"]?.arrayValue?.count == 1 })
                try await c.readEverything(task: done.id)

                let q = c.s.queue
                let actions: [(String, String)] = [
                    ("/api/dead/retry", #"{"ids":["\#(pill.id)"]}"#), ("/api/dead/delete", #"{"ids":["\#(pill.id)"]}"#),
                    ("/api/tasks/\(later.id)/revoke", #"{"terminate":false}"#), ("/api/tasks/\(later.id)/revoke", #"{"terminate":true}"#),
                    ("/api/queues/\(q)/purge", "{}"), ("/api/queues/\(q)/pause", "{}"), ("/api/queues/\(q)/resume", "{}"),
                    ("/api/workers/\(c.node)/shutdown", "{}"),
                ]
                for (path, body) in actions {
                    let r = try await c.post(path, body)
                    #expect(r.status == 403, "\(path): \(r.status) \(r.text)")
                    let message = (try? r.json())?["error"]?["message"]?.stringValue ?? ""
                    #expect(message.contains("Redis refused the dashboard's user: NOPERM") && message.contains("docs/security.md"), "\(path): \(r.text)")
                }
                // Nothing changed: the dead letter, no revocation, not paused, the worker running.
                #expect(try await c.admin.call("LLEN", Keys.deadLetters).int == 1)
                #expect(try await c.admin.call("ZSCORE", Keys.revoked, later.id) == .null)
                #expect(try await c.admin.call("SCARD", Keys.paused).int == 0)
                #expect(try await c.admin.call("LLEN", c.idle).int == 2)
                try await Task.sleep(for: .seconds(1))
                #expect(c.worker.isRunning && !c.worker.output.contains("shutdown requested"), "\(c.worker.output.suffix(2000))")
                // The button's message on the page: the refusal, not "[object Object]".
                #expect(try await c.get("/").text.contains("(j.error&&j.error.message)"))
                // The pages still work after the refusals.
                #expect(try await c.get("/dead").status == 200)
            } catch {
                await c.stop()
                throw error
            }
            await c.stop()
        }
    }
}
