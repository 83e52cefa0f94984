import Foundation
import Testing
@testable import Celerity
import RedisClient

extension Integration {
    /// The real `celerity-dashboard` binary against a private redis-server (db 5) with a real
    /// `celerity worker` consuming `add`: the JSON API and /metrics against what is in Redis,
    /// the dead-letter, purge, revoke and shutdown actions with their CSRF check, who may use
    /// it (loopback only without credentials, token and basic auth, no broker password in
    /// any page), and the pages in headless Chromium (Tests/Fixtures/browser/dashboard_ui.py).
    @Suite(.timeLimit(.minutes(4)))
    struct DashboardTests {
        /// Metrics: the worker's heartbeat (every 2 s) carries its tallies; the queue gauges
        /// are LLENs; the oldest-message age is 0 when the dashboard first sees a message and
        /// grows from there.
        @Test func apiAndMetricsReflectTheWorkerAndTheQueues() async throws {
            try await DashboardCluster.with { c in
                let client = try c.client()
                for i in 1...5 {
                    #expect(try await client.send(DashboardCluster.addTask, args: [.int(i), 10]).get(timeout: .seconds(20)) == .number("\(i + 10)"))
                }
                await #expect(throws: TaskFailure.self) { try await client.send(DashboardCluster.addTask, args: [1, 2, 3]).get(timeout: .seconds(20)) }

                // /api/overview: the worker alive, consuming add; both queues of the manifest listed.
                let overview = try await c.get("/api/overview")
                #expect(overview.status == 200, "\(overview.text)")
                let s = try Inspector.Snapshot(json: overview.body)
                let w = try #require(s.worker(c.node), "\(overview.text)")
                #expect(w.alive && w.heartbeat?.queues == ["add"], "\(overview.text)")
                #expect(s.queue("add")?.consumers == [c.node])
                #expect(s.queue("idle")?.consumers == [])
                #expect(s.broker.contains("127.0.0.1:\(c.redis.port)/5"))

                // Outcomes by task, from the heartbeat: polled, it is written every 2 s.
                let tasks: (String) -> [String: String] = { ["worker": c.node, "task": DashboardCluster.addTask, "outcome": $0] }
                var m = PromText("")
                let counted = try await eventually(seconds: 10) {
                    m = try await c.metrics()
                    return m.value("celerity_tasks_total", tasks("succeeded")) == 5 && m.value("celerity_tasks_total", tasks("failed")) == 1
                }
                #expect(counted, "\(m.text)\nworker:\n\(c.worker.output.suffix(2000))")
                #expect(m.value("celerity_workers_up") == 1)
                #expect(m.value("celerity_worker_up", ["worker": c.node]) == 1)
                #expect(m.value("celerity_tasks_total", tasks("retried")) == 0)
                #expect(m.value("celerity_tasks_total", tasks("revoked")) == 0)
                let series = ["worker": c.node, "task": DashboardCluster.addTask]
                let count = try #require(m.value("celerity_task_runtime_seconds_count", series), "\(m.text)")
                // The five runs; the call of the wrong arity fails before it runs: not timed.
                #expect(count == 5, "\(m.text)")
                #expect(m.value("celerity_task_runtime_seconds_bucket", series.merging(["le": "+Inf"]) { a, _ in a }) == count)
                #expect(m.value("celerity_task_runtime_seconds_bucket", series.merging(["le": "300.0"]) { a, _ in a }) == count, "\(m.text)")
                #expect((m.value("celerity_task_runtime_seconds_sum", series) ?? -1) > 0)
                let buckets = m.samples.filter { $0.name == "celerity_task_runtime_seconds_bucket" && $0.labels["worker"] == c.node }.map(\.value)
                #expect(buckets.count == TaskTally.bounds.count + 1 && buckets == buckets.sorted(), "cumulative buckets: \(buckets)")

                // Messages waiting on a queue nobody consumes: the gauge is the list's length.
                for i in 0..<3 { _ = try await client.send("idle.add", args: [.int(i), 1]) }
                _ = try await client.send("idle.add", args: [9, 9], options: .init(priority: 9))
                let r = try c.redisClient()
                let main = try await r.call("LLEN", Keys.queue("idle")).int
                let high = try await r.call("LLEN", Keys.queue("idle", priority: 9)).int
                #expect(main == 3 && high == 1)
                m = try await c.metrics()
                #expect(m.value("celerity_queue_messages", ["queue": "idle"]) == 4, "\(m.text)")
                #expect(m.value("celerity_queue_messages_by_priority", ["queue": "idle", "priority": "0"]) == 3)
                #expect(m.value("celerity_queue_messages_by_priority", ["queue": "idle", "priority": "9"]) == 1)
                let addLength = try #require(try await r.call("LLEN", Keys.queue("add")).int)
                #expect(m.value("celerity_queue_messages", ["queue": "add"]) == Double(addLength))
                #expect(m.value("celerity_queue_consumers", ["queue": "add"]) == 1)
                #expect(m.value("celerity_queue_consumers", ["queue": "idle"]) == 0)
                // The age: from when the dashboard first saw the next message, growing.
                let first = try #require(m.value("celerity_queue_oldest_message_age_seconds", ["queue": "idle"]))
                #expect(first >= 0 && first < 5)
                var age = first
                let grew = try await eventually(seconds: 8) {
                    age = try await c.metrics().value("celerity_queue_oldest_message_age_seconds", ["queue": "idle"]) ?? -1
                    return age >= first + 1
                }
                #expect(grew, "age stayed at \(age) (first \(first))")
                #expect(age < 30)
                #expect(m.value("celerity_queue_oldest_message_age_seconds", ["queue": "add"]) == 0 || addLength > 0)
                #expect(m.value("celerity_dead_letters") == 0 && m.value("celerity_delayed_messages") == 0)

                // /healthz: Redis answers.
                let health = try await c.get("/healthz")
                #expect(health.status == 200)
                #expect(try health.json()["ok"] == .bool(true))
            }
        }

        /// A task that waited for a slot shows when it was received, apart from when it
        /// started: six calls of sleep(1) on a worker with two slots and a prefetch of eight;
        /// some are fetched with the first two and wait for a slot.
        @Test func theTimelineShowsWhenATaskWasReceived() async throws {
            try await DashboardCluster.with(extraTasks: "  nap:\n    queue: add\n    builtin: sleep\n") { c in
                let client = try c.client()
                let calls = try await client.sendMany((0..<6).map { _ in client.message("nap", args: [1.0], options: .init(queue: "add")) })
                for call in calls { _ = try await call.get(timeout: .seconds(20)) }
                var waits: [Double] = []
                var seen: [String] = []
                let recorded = try await eventually(seconds: 10) {
                    waits = []
                    seen = []
                    for call in calls {
                        let detail = try await c.get("/api/tasks/\(call.id)").json()
                        guard let r = detail["timeline"]?.arrayValue?.first, let received = r["received"]?.doubleValue,
                              let at = r["at"]?.doubleValue, let rt = r["runtime"]?.doubleValue else { return false }
                        seen.append(r.serialized())
                        waits.append(at - rt - received)
                    }
                    return true
                }
                #expect(recorded, "\(waits) \(seen)")
                #expect(waits.count == 6 && waits.allSatisfy { $0 >= 0 && $0 < 15 } && (waits.max() ?? 0) >= 0.5, "\(waits) \(seen)")
                let page = try await c.get("/tasks/\(calls[5].id)")
                #expect(page.text.contains("<th>Received</th><th>Started</th><th>Finished</th>"), "\(page.text.suffix(2000))")
            }
        }

        /// Dead letters made by the worker (poison pills recovered from a dead worker's list,
        /// unreadable messages): listed, retried back onto their queues (and answered when a
        /// worker consumes the queue), deleted by id and by filter; never without the CSRF token.
        /// The task history the worker keeps (celerity:history): the tasks API and page find
        /// a task by id, name, state and worker; a task's timeline; the per-minute totals;
        /// a queue paused and resumed from the dashboard.
        @Test func historyThroughputAndPauseAreServed() async throws {
            try await DashboardCluster.with { c in
                let client = try c.client()
                var ids: [String] = []
                for i in 1...4 {
                    let call = try await client.send(DashboardCluster.addTask, args: [.int(i), 100])
                    #expect(try await call.get(timeout: .seconds(20)) == .number("\(i + 100)"))
                    ids.append(call.id)
                }
                let failing = try await client.send(DashboardCluster.addTask, args: [1, 2, 3])
                await #expect(throws: TaskFailure.self) { try await failing.get(timeout: .seconds(20)) }

                // The records are written by the worker's event flusher within ~100 ms.
                var found = JSONValue.null
                let listed = try await eventually(seconds: 10) {
                    found = try await c.get("/api/tasks?task=tasks.add&limit=50").json()
                    return (found["tasks"]?.arrayValue?.count ?? 0) == 5
                }
                #expect(listed, "\(found.serialized())")
                let records = found["tasks"]?.arrayValue ?? []
                // Newest first: the failure, then the last success.
                #expect(records.first?["id"]?.stringValue == failing.id)
                #expect(records.first?["state"]?.stringValue == "FAILURE")
                #expect(records.first?["exception"]?.stringValue?.contains("TypeError") == true, "\(records.first?.serialized() ?? "")")
                #expect(records.dropFirst().compactMap { $0["id"]?.stringValue } == ids.reversed())
                #expect(records[1]["args"]?.stringValue == "[4, 100]", "\(records[1].serialized())")
                #expect(records[1]["worker"]?.stringValue == c.node && records[1]["queue"]?.stringValue == "add")
                #expect((records[1]["runtime"]?.doubleValue ?? -1) >= 0)

                let failures = try await c.get("/api/tasks?state=failure").json()["tasks"]?.arrayValue ?? []
                #expect(failures.compactMap { $0["id"]?.stringValue } == [failing.id])
                let one = try await c.get("/api/tasks?id=\(ids[1].suffix(12))").json()["tasks"]?.arrayValue ?? []
                #expect(one.compactMap { $0["id"]?.stringValue } == [ids[1]])
                #expect(try await c.get("/api/tasks?worker=nobody").json()["tasks"]?.arrayValue?.isEmpty == true)
                #expect(try await c.get("/api/tasks?minutes=-1").status == 400)

                // A task's page: its timeline from the history, its value from the result backend.
                let page = try await c.get("/tasks/\(ids[0])")
                #expect(page.status == 200 && page.text.contains("id=timeline") && page.text.contains("[1, 100]"), "\(page.text.suffix(3000))")
                #expect(page.text.contains("<pre id=result>101</pre>"), "\(page.text.suffix(3000))")
                let detail = try await c.get("/api/tasks/\(ids[0])").json()
                #expect(detail["state"]?.stringValue == "SUCCESS" && detail["timeline"]?.arrayValue?.count == 1, "\(detail.serialized())")
                let list = try await c.get("/tasks?state=FAILURE")
                #expect(list.text.contains("data-task=\"\(failing.id)\"") && !list.text.contains("data-task=\"\(ids[0])\""))

                // Per-minute totals: written by the worker's 10 s summary.
                var minutes: [JSONValue] = []
                let totalled = try await eventually(seconds: 15) {
                    minutes = try await c.get("/api/throughput?minutes=5").json()["minutes"]?.arrayValue ?? []
                    return minutes.reduce(0) { $0 + ($1["processed"]?.intValue ?? 0) } == 5
                }
                #expect(totalled && minutes.count == 5, "\(JSONValue.array(minutes).serialized())")
                #expect(minutes.reduce(0) { $0 + ($1["failed"]?.intValue ?? 0) } == 1)
                #expect(try await c.get("/").text.contains("id=\"throughput\""))

                // Rates: out from the workers' per-queue counts between two reads, in = out + depth change.
                let metricsDone = try await eventually(seconds: 10) {
                    try await c.metrics().value("celerity_queue_tasks_finished_total", ["worker": c.node, "queue": "add"]) == 5
                }
                #expect(metricsDone)
                _ = try await c.get("/api/overview")
                for i in 0..<20 { _ = try await client.send(DashboardCluster.addTask, args: [.int(i), 1]) }
                var rated: Inspector.QueueInfo?
                let moving = try await eventually(seconds: 10) {
                    try await Task.sleep(for: .seconds(2.2))
                    rated = try Inspector.Snapshot(json: try await c.get("/api/overview").body).queue("add")
                    return (rated?.rateOut ?? 0) > 0
                }
                #expect(moving && (rated?.rateIn ?? -1) >= 0, "\(String(describing: rated))")
                #expect(try await c.get("/").text.contains("<th>Out /s</th>"))

                // Pause from the dashboard: the worker stops fetching from add; resume: it answers.
                #expect(try await c.post("/api/queues/add/pause", "", csrf: nil).status == 403)
                #expect(try await c.post("/api/queues/add/pause", "").status == 200)
                #expect(try await c.redisClient().call("SISMEMBER", "celerity:paused", "add").int == 1)
                let overview = try await c.get("/")
                #expect(overview.text.contains("<tr data-queue=\"add\" data-paused>"), "\(overview.text)")
                let metrics = try await c.metrics()
                #expect(metrics.value("celerity_queue_paused", ["queue": "add"]) == 1)
                try await Task.sleep(for: .seconds(2))
                let held = try await client.send(DashboardCluster.addTask, args: [7, 7])
                await #expect(throws: (any Error).self) { try await held.get(timeout: .seconds(2)) }
                #expect(try await c.redisClient().call("LLEN", "add").int == 1)
                #expect(try await c.post("/api/queues/add/resume", "").status == 200)
                #expect(try await held.get(timeout: .seconds(20)) == .number("14"))
                #expect(try await c.get("/api/schedules").json() == .array([]))
            }
        }

        /// A persistent plugin's processes in /metrics: running, and restarted after one is killed.
        @Test func pluginProcessesAndRestartsAreMetrics() async throws {
            let tasks = """
              plugins.py_add:
                queue: plugins
                plugin: [python3, \(Paths.root)/plugins/py_tasks.py]
                mode: persistent
            """
            try await DashboardCluster.with(extraTasks: tasks, queues: "add,plugins") { c in
                let client = try c.client()
                #expect(try await client.send("plugins.py_add", args: [2, 3]).get(timeout: .seconds(30)) == .number("5"))
                let labels = ["worker": c.node, "plugin": "python3 \(Paths.root)/plugins/py_tasks.py"]
                var m = PromText("")
                let up = try await eventually(seconds: 10) {
                    m = try await c.metrics()
                    return m.value("celerity_plugin_processes", labels) == 1
                }
                #expect(up, "\(m.text)")
                #expect(m.value("celerity_plugin_restarts_total", labels) == 0 && m.value("celerity_plugin_available", labels) == 1)

                // Kill the plugin's process: the worker starts another, and the metric counts it.
                let (status, pids) = try await ChildProcess.run("/usr/bin/pgrep", ["-P", String(c.worker.pid), "-f", "plugins/py_tasks.py"])
                let pid = try #require(pids.split(separator: "\n").compactMap { Int32($0) }.first, "pgrep: \(status) \(pids)")
                kill(pid, SIGKILL)
                let restarted = try await eventually(seconds: 15) {
                    m = try await c.metrics()
                    return m.value("celerity_plugin_restarts_total", labels) == 1 && m.value("celerity_plugin_processes", labels) == 1
                }
                #expect(restarted, "\(m.text)")
                #expect(try await client.send("plugins.py_add", args: [4, 4]).get(timeout: .seconds(30)) == .number("8"))
            }
        }

        @Test func deadLettersAreRetriedAndDeletedOnlyWithTheCSRFToken() async throws {
            try await DashboardCluster.with { c in
                let r = try c.redisClient()
                let onAdd = try await c.poisonPill(DashboardCluster.addTask, [20, 22])
                let onIdle = try await c.poisonPill("idle.add", [1, 2])
                try await r.call("LPUSH", Keys.queue("add"), "this is not json")
                try await r.call("LPUSH", Keys.queue("add"), #"{"no": "headers"}"#)
                var dead: [JSONValue] = []
                let all = try await eventually(seconds: 15) {
                    dead = try await c.get("/api/dead").json()["entries"]?.arrayValue ?? []
                    return dead.count == 4
                }
                #expect(all, "\(dead)\nworker:\n\(c.worker.output.suffix(2000))")
                let entry: (String) throws -> String = { task in
                    try #require(dead.first { $0["task_id"]?.stringValue == task }?["id"]?.stringValue, "no dead letter of \(task): \(dead)")
                }
                let addEntry = try entry(onAdd.id), idleEntry = try entry(onIdle.id)
                #expect(dead.first { $0["task_id"]?.stringValue == onIdle.id }?["queue"] == .string("idle"))
                #expect(dead.first { $0["task_id"]?.stringValue == onAdd.id }?["reason"]?.stringValue?.contains("poison pill") == true, "\(dead)")
                let filtered = try await c.get("/api/dead?queue=idle").json()
                #expect(filtered["matched"] == .int(1) && filtered["entries"]?.arrayValue?.first?["id"] == .string(idleEntry))

                // No token, a wrong one: 403, and nothing moves.
                let ids = #"{"ids":["\#(idleEntry)"]}"#
                let none = try await c.post("/api/dead/retry", ids, csrf: nil)
                #expect(none.status == 403 && none.text.contains("X-CSRF-Token"), "\(none.status) \(none.text)")
                #expect(try await c.post("/api/dead/retry", ids, csrf: "0123").status == 403)
                #expect(try await c.post("/api/dead/delete", ids, csrf: nil).status == 403)
                #expect(try await r.call("LLEN", Keys.deadLetters).int == 4)
                #expect(try await r.call("LLEN", Keys.queue("idle")).int == 0)

                // With it: back on its queue (no consumer there: it waits), its redeliveries reset.
                let retried = try await c.post("/api/dead/retry", ids)
                #expect(retried.status == 200, "\(retried.text)")
                #expect(try retried.json()["retried"] == .int(1), "\(retried.text)")
                #expect(try await r.call("LLEN", Keys.deadLetters).int == 3)
                #expect(try await r.call("LLEN", Keys.queue("idle")).int == 1)
                let back = try TaskMessage.decode(try #require(try await r.call("LINDEX", Keys.queue("idle"), 0).bytes))
                #expect(back.id == onIdle.id && back.task == "idle.add")
                #expect(try await c.post("/api/dead/retry", ids).json()["retried"] == .int(0))     // gone already

                // On a consumed queue, by task id: the worker answers it.
                let byTask = try await c.post("/api/dead/retry", #"{"ids":["\#(onAdd.id)"]}"#)
                #expect(try byTask.json()["retried"] == .int(1), "\(byTask.text)")
                #expect(try await AsyncResult(id: onAdd.id, client: c.client()).get(timeout: .seconds(15)) == .number("42"))
                #expect(try await c.get("/api/tasks/\(onAdd.id)").json()["state"] == .string("SUCCESS"))
                dead = try await c.get("/api/dead").json()["entries"]?.arrayValue ?? []
                #expect(dead.count == 2 && !dead.contains { $0["id"]?.stringValue == addEntry }, "\(dead)")

                // Delete: one by id, the other by the page's filter (text in the reason).
                let unreadable = try #require(dead.first { $0["reason"]?.stringValue?.contains("not JSON") == true }?["id"]?.stringValue, "\(dead)")
                let deleted = try await c.post("/api/dead/delete", #"{"ids":["\#(unreadable)"]}"#)
                #expect(deleted.status == 200, "\(deleted.text)")
                #expect(try deleted.json()["deleted"] == .int(1), "\(deleted.text)")
                #expect(try await r.call("LLEN", Keys.deadLetters).int == 1)
                let byFilter = try await c.post("/api/dead/delete", #"{"queue":"add","q":"headers"}"#)
                #expect(try byFilter.json()["deleted"] == .int(1), "\(byFilter.text)")
                #expect(try await r.call("LLEN", Keys.deadLetters).int == 0)
                #expect(try await r.call("LLEN", Keys.queue("idle")).int == 1)        // deleting moved nothing
                // A body that is not what it should be: 400.
                #expect(try await c.post("/api/dead/retry", #"{"ids":[]}"#).status == 400)
                #expect(try await c.post("/api/dead/retry", "not json").status == 400)
            }
        }

        /// Purge (every priority list), revoke of a delayed call (with and without terminate),
        /// and a warm shutdown of the worker: each a POST with the token.
        @Test func purgeRevokeAndShutdownActOnTheCluster() async throws {
            try await DashboardCluster.with { c in
                let r = try c.redisClient()
                let client = try c.client()
                for i in 0..<3 { _ = try await client.send("idle.add", args: [.int(i), 1]) }
                _ = try await client.send("idle.add", args: [1, 1], options: .init(priority: 9))
                #expect(try await c.post("/api/queues/idle/purge", "", csrf: nil).status == 403)
                #expect(try await r.call("LLEN", Keys.queue("idle")).int == 3)
                let purged = try await c.post("/api/queues/idle/purge", "")
                #expect(purged.status == 200, "\(purged.text)")
                #expect(try purged.json()["purged"] == .int(4), "\(purged.text)")
                for key in Keys.priorityQueues("idle") { #expect(try await r.call("LLEN", key).int == 0, "\(key)") }
                #expect(try await c.post("/api/queues/idle/purge", "").json()["purged"] == .int(0))

                // A call due in a minute: listed as delayed; revoked, it is in celerity:revoked.
                let later = try await client.send(DashboardCluster.addTask, args: [1, 1], options: .init(countdown: 60))
                let stopped = try await client.send(DashboardCluster.addTask, args: [2, 2], options: .init(countdown: 60))
                let delayed = try await c.get("/api/delayed").json()
                #expect(delayed["count"] == .int(2), "\(delayed)")
                #expect(Set(delayed["entries"]?.arrayValue?.compactMap { $0["id"]?.stringValue } ?? []) == [later.id, stopped.id])
                #expect(delayed["entries"]?.arrayValue?.first?["queue"] == .string("add"))
                #expect(try await c.post("/api/tasks/\(later.id)/revoke", "{}", csrf: nil).status == 403)
                #expect(try await r.call("ZSCORE", Keys.revoked, later.id) == .null)
                let revoked = try await c.post("/api/tasks/\(later.id)/revoke", #"{"terminate":false}"#)
                #expect(revoked.status == 200, "\(revoked.text)")
                #expect(try revoked.json()["revoked"] == .string(later.id), "\(revoked.text)")
                let until = try #require(try await r.call("ZSCORE", Keys.revoked, later.id).string.flatMap(Double.init))
                #expect(until > Date().timeIntervalSince1970 + 3600)
                #expect(try await r.call("ZSCORE", Keys.revokedTerminate, later.id) == .null)
                #expect(try await c.post("/api/tasks/\(stopped.id)/revoke", #"{"terminate":true}"#).status == 200)
                #expect(try await r.call("ZSCORE", Keys.revokedTerminate, stopped.id).string != nil)
                #expect(try await c.get("/api/tasks/\(later.id)").json()["revoked"] == .bool(true))
                #expect(try await c.get("/api/tasks/\(c.node)-not-a-task").json()["revoked"] == .bool(false))
                #expect(try await c.metrics().value("celerity_revoked_tasks") == 2)

                // Shutdown: not without the token; with it, the worker stops cleanly within 10 s.
                #expect(try await c.post("/api/workers/\(c.node)/shutdown", "", csrf: nil).status == 403)
                try await Task.sleep(for: .milliseconds(500))
                #expect(c.worker.isRunning)
                let shutdown = try await c.post("/api/workers/\(c.node)/shutdown", "")
                #expect(shutdown.text.contains(c.node), "\(shutdown.text)")
                // Celery's `shutdown` has no reply: the dashboard checks the worker's heartbeat
                // and sends it without waiting.
                #expect(shutdown.status == 200, "\(shutdown.status) \(shutdown.text)")
                let status = await c.worker.wait(seconds: 10)
                #expect(status == 0, "worker: \(status.map(String.init) ?? "still running")\n\(c.worker.output.suffix(2000))")
                #expect(c.worker.output.contains("shutdown requested"))
            }
        }

        /// Loopback only without credentials; with a token, every request but /healthz needs it
        /// (bearer, or as the password of basic auth); with a user and password, basic auth.
        /// The broker's password is in no page, JSON or metric, nor in an error page.
        @Test func accessNeedsCredentialsAndNoPageShowsTheBrokerPassword() async throws {
            let password = "hunter2-\(UUID().uuidString.prefix(8))"
            let redis = try await RedisServer.start(extra: ["--requirepass", password])
            let broker = "redis://:\(password)@127.0.0.1:\(redis.port)/\(DashboardCluster.db)"
            let dir = try DashboardCluster.writeManifest()
            var started: [DashboardProcess] = []
            do {
                // Bound beyond loopback, without credentials: refuses to start (exit 2), naming them;
                // so does `celerity dashboard`, which runs it.
                for (exe, pre) in [(Paths.dashboard, [String]()), (Paths.celerity, ["dashboard"])] {
                    let p = try ChildProcess(name: "dashboard-open", executable: exe,
                                             arguments: pre + ["--host", "0.0.0.0", "--port", String(RedisServer.freePort()), "--broker", broker],
                                             environment: DashboardProcess.noCredentials)
                    let status = await p.wait(seconds: 15)
                    if status == nil { await p.stop() }
                    #expect(status == 2, "\(exe): \(status.map(String.init) ?? "still running"): \(p.output)")
                    #expect(p.output.contains("CELERITY_DASHBOARD_TOKEN") && p.output.contains("0.0.0.0"), "\(p.output)")
                    #expect(!p.output.contains(password))
                }
                let half = try await ChildProcess.run(Paths.dashboard, ["--port", String(RedisServer.freePort()), "--broker", broker],
                                                      environment: DashboardProcess.noCredentials.merging(["CELERITY_DASHBOARD_USER": "admin"]) { _, b in b })
                #expect(half.status == 2 && half.output.contains("CELERITY_DASHBOARD_PASSWORD"), "\(half.output)")

                // Something on the pages: a waiting message, a dead letter.
                let r = try Redis(broker, label: "test")
                let client = try CelerityClient(broker: broker, resultBackend: broker, manifest: try Manifest.load(path: dir + "/tasks.yaml"))
                _ = try await client.send("idle.add", args: [1, 2])
                let m = client.message("idle.add", args: [3, 4])
                try await r.call("LPUSH", Keys.deadLetters, JSONValue.object([
                    JSONMember("id", .string("e-\(m.id)")), JSONMember("queue", .string("idle")), JSONMember("reason", .string("made by hand")),
                    JSONMember("worker", .string("w@test")),
                    JSONMember("at", .string(CeleryDate.format(Date()))), JSONMember("message", .string(String(decoding: m.encode(), as: UTF8.self))),
                ]).serialized())

                let d = try await DashboardProcess.start(broker: broker, manifest: dir + "/tasks.yaml", environment: ["CELERITY_DASHBOARD_TOKEN": "s3cret"])
                started.append(d)
                for path in ["/", "/dead", "/api/overview", "/metrics", "/api/csrf"] {
                    let anonymous = try await HTTP.get(d.base + path)
                    #expect(anonymous.status == 401, "\(path): \(anonymous.status)")
                    #expect(anonymous.headers["www-authenticate"]?.hasPrefix("Basic") == true, "\(anonymous.headers)")
                    #expect(try await HTTP.get(d.base + path, headers: ["Authorization": "Bearer wrong"]).status == 401)
                    #expect(try await HTTP.get(d.base + path, headers: ["Authorization": "Bearer s3cret"]).status == 200, "\(path)")
                    #expect(try await HTTP.get(d.base + path, headers: HTTP.basic("anyone", "s3cret")).status == 200, "\(path)")
                    #expect(try await HTTP.get(d.base + path, headers: HTTP.basic("anyone", "s3cre")).status == 401)
                }
                // 401 before 403: without credentials a POST with the token is refused too.
                let csrf = try await HTTP.get(d.base + "/api/csrf", headers: ["Authorization": "Bearer s3cret"]).json()["csrf"]?.stringValue ?? ""
                #expect(!csrf.isEmpty)
                #expect(try await HTTP.request("POST", d.base + "/api/queues/idle/purge", headers: ["X-CSRF-Token": csrf]).status == 401)
                let waiting = try await r.call("LLEN", Keys.queue("idle"))
                #expect(waiting.int == 1, "\(waiting)")
                let health = try await HTTP.get(d.base + "/healthz")
                #expect(health.status == 200, "\(health.text)")

                // Every page and document, read with the token: the broker shown, its password not.
                let auth = ["Authorization": "Bearer s3cret"]
                for path in ["/", "/dead", "/delayed", "/tasks/\(m.id)", "/api/overview", "/api/dead", "/api/delayed", "/api/tasks/\(m.id)", "/metrics"] {
                    let page = try await HTTP.get(d.base + path, headers: auth)
                    #expect(page.status == 200, "\(path): \(page.text.prefix(500))")
                    #expect(!page.text.contains(password), "\(path) shows the broker password")
                }
                let overview = try await HTTP.get(d.base + "/", headers: auth).text
                #expect(overview.contains("127.0.0.1:\(redis.port)/\(DashboardCluster.db)") && overview.contains("data-queue=\"idle\""))
                #expect(try await HTTP.get(d.base + "/dead", headers: auth).text.contains("data-dead=\"e-\(m.id)\""))
                #expect(try await HTTP.get(d.base + "/api/overview", headers: auth).text.contains("127.0.0.1:\(redis.port)"))
                #expect(!d.child.output.contains(password), "the dashboard's log shows the password: \(d.child.output)")

                // A user and password; the broker's password wrong: the error page, without it.
                let wrong = "wrong-\(password)"
                let e = try await DashboardProcess.start(broker: "redis://:\(wrong)@127.0.0.1:\(redis.port)/\(DashboardCluster.db)", manifest: dir + "/tasks.yaml",
                                                         environment: ["CELERITY_DASHBOARD_USER": "admin", "CELERITY_DASHBOARD_PASSWORD": "pa55"], healthy: false)
                started.append(e)
                #expect(try await HTTP.get(e.base + "/").status == 401)
                #expect(try await HTTP.get(e.base + "/", headers: HTTP.basic("admin", "nope")).status == 401)
                #expect(try await HTTP.get(e.base + "/", headers: HTTP.basic("root", "pa55")).status == 401)
                for path in ["/", "/dead", "/api/overview", "/metrics", "/healthz"] {
                    let page = try await HTTP.get(e.base + path, headers: HTTP.basic("admin", "pa55"))
                    #expect(page.status == 503, "\(path): \(page.status) \(page.text.prefix(300))")
                    #expect(!page.text.contains(wrong), "\(path) shows the broker password: \(page.text.prefix(500))")
                }
                #expect(!e.child.output.contains(wrong), "the dashboard's log shows the password")
            } catch {
                for d in started { await d.child.stop() }
                await redis.stop()
                throw error
            }
            for d in started { #expect(await d.child.stop() == 0, "\(d.child.output.suffix(1000))") }
            await redis.stop()
        }

        static let chromium = ProcessInfo.processInfo.environment["CHROMIUM_BIN"] ?? "/usr/bin/chromium"

        /// In headless Chromium: the overview shows the worker online and both queues; a dead
        /// letter's Retry button puts it back, its row goes, and the worker answers it.
        @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: chromium),
                       "Chromium is not installed (apt-get install chromium chromium-driver, or scripts/install-deps.sh)"))
        func theBrowserShowsTheWorkerAndRetriesADeadLetter() async throws {
            try await DashboardCluster.with { c in
                let m = try await c.poisonPill(DashboardCluster.addTask, [40, 2])
                var entry: String?
                let dead = try await eventually(seconds: 15) {
                    entry = try await c.get("/api/dead").json()["entries"]?.arrayValue?.first { $0["task_id"]?.stringValue == m.id }?["id"]?.stringValue
                    return entry != nil
                }
                #expect(dead, "no dead letter\nworker:\n\(c.worker.output.suffix(2000))")
                let id = try #require(entry)

                let overview = try await c.browser(["check-overview", "--worker", c.node, "--queue", "add", "--queue", "idle"])
                #expect(overview["worker"]?["state"] == .string("online"))
                #expect(overview["worker"]?["queues"] == .string("add"))
                #expect(overview["cards"]?["workers up"] == .int(1))
                #expect(overview["cards"]?["dead letters"] == .int(1))
                #expect(Set(overview["queues"]?.arrayValue?.compactMap { $0["name"]?.stringValue } ?? []) == ["add", "idle"])

                let retried = try await c.browser(["retry-dead", "--id", id])
                #expect(retried["gone"] == .bool(true) && retried["rows_after"]?.arrayValue?.isEmpty == true, "\(retried)")
                #expect(retried["toast"]?.stringValue?.contains("1 put back") == true, "\(retried)")
                #expect(try await AsyncResult(id: m.id, client: c.client()).get(timeout: .seconds(15)) == .number("42"))
                #expect(try await c.redisClient().call("LLEN", Keys.deadLetters).int == 0)
            }
        }
    }
}

// MARK: - Support

/// A `celerity-dashboard` process on a free loopback port, answering.
final class DashboardProcess: Sendable {
    let child: ChildProcess
    let port: Int
    var base: String { "http://127.0.0.1:\(port)" }

    /// The credentials' variables emptied (the dashboard takes empty as unset), so that the
    /// test process's environment cannot decide.
    static let noCredentials = ["CELERITY_DASHBOARD_TOKEN": "", "CELERITY_DASHBOARD_USER": "", "CELERITY_DASHBOARD_PASSWORD": ""]

    private init(child: ChildProcess, port: Int) {
        self.child = child
        self.port = port
    }

    /// Starts it and waits until /healthz answers 200 (or, `healthy` false, answers at all).
    static func start(broker: String, manifest: String?, environment: [String: String] = [:], extra: [String] = [], healthy: Bool = true) async throws -> DashboardProcess {
        let port = RedisServer.freePort()
        let child = try ChildProcess(name: "dashboard-\(port)", executable: Paths.dashboard,
                                     arguments: ["--port", String(port), "--broker", broker] + (manifest.map { ["--manifest", $0] } ?? []) + extra,
                                     environment: noCredentials.merging(environment) { _, b in b })
        let d = DashboardProcess(child: child, port: port)
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline && child.isRunning {
            if let r = try? await HTTP.get(d.base + "/healthz"), r.status == 200 || !healthy { return d }
            try await Task.sleep(for: .milliseconds(100))
        }
        await child.stop()
        throw TestFailure("celerity-dashboard on port \(port) did not answer /healthz: \(child.output.suffix(2000))")
    }
}

/// A private redis-server (db 5 of it), a manifest with queues `add` (the tutorial's
/// `add_module.tasks.add`) and `idle` (nobody consumes it), a `celerity worker -Q add` and a
/// dashboard (no credentials, loopback).
final class DashboardCluster: Sendable {
    static let db = 5
    static let addTask = "add_module.tasks.add"
    let redis: RedisServer
    let broker: String
    let manifest: String
    let node: String
    let worker: ChildProcess
    let dashboard: DashboardProcess
    let csrf: String

    private init(redis: RedisServer, broker: String, manifest: String, node: String, worker: ChildProcess, dashboard: DashboardProcess, csrf: String) {
        self.redis = redis
        self.broker = broker
        self.manifest = manifest
        self.node = node
        self.worker = worker
        self.dashboard = dashboard
        self.csrf = csrf
    }

    /// Writes the manifest in a new directory; returns the directory.
    static func writeManifest(extra: String = "") throws -> String {
        let dir = NSTemporaryDirectory() + "celerity-dashboard-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try """
        tasks:
          \(addTask):
            queue: add
            builtin: add
          idle.add:
            queue: idle
            builtin: add
        \(extra)
        """.write(toFile: dir + "/tasks.yaml", atomically: true, encoding: .utf8)
        return dir
    }

    /// Runs `body` with a fresh cluster, then stops it all (the worker, if still running, must
    /// stop cleanly).
    static func with(extraTasks: String = "", queues: String = "add", _ body: (DashboardCluster) async throws -> Void) async throws {
        let redis = try await RedisServer.start()
        let broker = redis.url(db: db)
        let manifest = try writeManifest(extra: extraTasks) + "/tasks.yaml"
        let node = "dash-\(UUID().uuidString.prefix(6).lowercased())@test"
        let worker = try ChildProcess(name: "worker-\(node)", executable: Paths.celerity, arguments: [
            "worker", "-Q", queues, "-n", node, "-c", "2", "-l", "debug", "--manifest", manifest, "--broker", broker, "--result-backend", broker,
        ])
        let c: DashboardCluster
        do {
            let dashboard = try await DashboardProcess.start(broker: broker, manifest: manifest)
            let token = try await HTTP.get(dashboard.base + "/api/csrf").json()["csrf"]?.stringValue ?? ""
            c = DashboardCluster(redis: redis, broker: broker, manifest: manifest, node: node, worker: worker, dashboard: dashboard, csrf: token)
        } catch {
            await worker.stop()
            await redis.stop()
            throw error
        }
        do {
            try await body(c)
        } catch {
            await c.stop()
            throw error
        }
        let running = c.worker.isRunning
        let status = await c.worker.stop(grace: 20)
        #expect(!running || status == 0, "worker: \(status)\n\(c.worker.output.suffix(2000))")
        await c.stop()
    }

    func stop() async {
        await worker.stop(grace: 20)
        let status = await dashboard.child.stop()
        #expect(status == 0, "dashboard: \(status)\n\(dashboard.child.output.suffix(2000))")
        await redis.stop()
    }

    func client() throws -> CelerityClient {
        try CelerityClient(broker: broker, resultBackend: broker, manifest: try Manifest.load(path: manifest))
    }

    func redisClient() throws -> Redis { try Redis(broker, label: "test") }

    func get(_ path: String) async throws -> HTTPReply { try await HTTP.get(dashboard.base + path) }

    /// A POST with a JSON body and this dashboard's CSRF token.
    func post(_ path: String, _ body: String) async throws -> HTTPReply { try await post(path, body, csrf: csrf) }

    /// A POST with a JSON body and this CSRF token (nil: none).
    func post(_ path: String, _ body: String, csrf token: String?) async throws -> HTTPReply {
        var headers = ["Content-Type": "application/json"]
        if let token { headers["X-CSRF-Token"] = token }
        return try await HTTP.request("POST", dashboard.base + path, headers: headers, body: body)
    }

    func metrics() async throws -> PromText {
        let r = try await get("/metrics")
        guard r.status == 200 else { throw TestFailure("/metrics: \(r.status) \(r.text)") }
        return PromText(r.text)
    }

    /// A message of `task` that has been delivered three times already, in the processing
    /// list of a worker that died: the live worker's recovery (every 2 s) dead-letters it as
    /// a poison pill, on the queue it was routed to.
    func poisonPill(_ task: String, _ args: [JSONValue]) async throws -> TaskMessage {
        let m = try client().message(task, args: args)
        let poisoned = try #require(TaskMessage.markRedelivered(m.encode(), count: 3))
        let ghost = "ghost-\(UUID().uuidString.prefix(6))@test"
        let r = try redisClient()
        try await r.call("LPUSH", Keys.processing(ghost), poisoned)
        try await r.call("SADD", Keys.workers, ghost)
        return m
    }

    /// Runs Tests/Fixtures/browser/dashboard_ui.py against this dashboard; its JSON.
    func browser(_ arguments: [String]) async throws -> JSONValue {
        let script = Paths.root + "/Tests/Fixtures/browser/dashboard_ui.py"
        let r = try await ChildProcess.run(Paths.python3, [script, dashboard.base] + arguments, name: "dashboard-ui")
        guard r.status == 0, let start = r.output.firstIndex(of: "{") else {
            throw TestFailure("dashboard_ui.py \(arguments.joined(separator: " ")): exit \(r.status): \(r.output)")
        }
        return try JSONValue(parsing: Array(r.output[start...].utf8))
    }
}

/// Prometheus text, parsed into samples.
struct PromText {
    struct Sample {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    let text: String
    let samples: [Sample]

    init(_ text: String) {
        self.text = text
        var out: [Sample] = []
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            let series = line[..<space]
            guard let brace = series.firstIndex(of: "{") else {
                out.append(Sample(name: String(series), labels: [:], value: value))
                continue
            }
            var labels: [String: String] = [:]
            var rest = series[series.index(after: brace)...].dropLast()      // without the closing brace
            while let eq = rest.firstIndex(of: "=") {
                let key = rest[..<eq].trimmingCharacters(in: CharacterSet(charactersIn: ", "))
                var i = rest.index(eq, offsetBy: 2)                        // past ="
                var v = ""
                while i < rest.endIndex && rest[i] != "\"" {
                    if rest[i] == "\\", rest.index(after: i) < rest.endIndex {
                        i = rest.index(after: i)
                        v.append(rest[i] == "n" ? "\n" : rest[i])
                    } else {
                        v.append(rest[i])
                    }
                    i = rest.index(after: i)
                }
                labels[key] = v
                rest = i < rest.endIndex ? rest[rest.index(after: i)...] : rest[rest.endIndex...]
            }
            out.append(Sample(name: String(series[..<brace]), labels: labels, value: value))
        }
        samples = out
    }

    /// The value of the series with exactly these labels.
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        samples.first { $0.name == name && $0.labels == labels }?.value
    }
}

struct HTTPReply: Sendable {
    var status: Int
    var body: Data
    /// Header names lowercased.
    var headers: [String: String]
    var text: String { String(decoding: body, as: UTF8.self) }
    func json() throws -> JSONValue { try JSONValue(parsing: Array(body)) }
}

/// Plain HTTP/1.1 through curl (no proxy, no cache, no stored credentials). Not URLSession:
/// on Linux its `data(for:)` never returns a 401 that carries a `WWW-Authenticate` challenge
/// (it waits for credentials forever), and the dashboard's 401s carry one.
enum HTTP {
    static let curl = Paths.which("curl")

    static func get(_ url: String, headers: [String: String] = [:]) async throws -> HTTPReply {
        try await request("GET", url, headers: headers)
    }

    static func request(_ method: String, _ url: String, headers: [String: String] = [:], body: String? = nil) async throws -> HTTPReply {
        let dir = NSTemporaryDirectory() + "celerity-http-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var args = ["-sS", "--noproxy", "*", "--globoff", "--path-as-is", "--max-time", "20", "-X", method, "-o", dir + "/body", "-D", dir + "/headers"]
        for (k, v) in headers.sorted(by: { $0.key < $1.key }) { args += ["-H", "\(k): \(v)"] }
        if let body {
            try body.write(toFile: dir + "/request", atomically: false, encoding: .utf8)
            args += ["--data-binary", "@" + dir + "/request"]
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: curl)
        p.arguments = args + [url]
        _ = FileManager.default.createFile(atPath: dir + "/stderr", contents: nil)
        p.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/stderr"))
        p.standardOutput = FileHandle.nullDevice
        p.standardInput = FileHandle.nullDevice
        // Awaited through the termination handler: no thread of the cooperative pool waits.
        let status: Int32 = try await withCheckedThrowingContinuation { c in
            p.terminationHandler = { c.resume(returning: $0.terminationStatus) }
            do { try p.run() } catch { c.resume(throwing: error) }
        }
        guard status == 0 else {
            throw TestFailure("curl \(method) \(url): exit \(status): \((try? String(contentsOfFile: dir + "/stderr", encoding: .utf8)) ?? "")")
        }
        let head = try String(contentsOfFile: dir + "/headers", encoding: .utf8)
        // The last response's head (after any 100 Continue).
        let lines = head.components(separatedBy: "\r\n")
        guard let statusLine = lines.last(where: { $0.hasPrefix("HTTP/") }), let code = Int(statusLine.split(separator: " ")[1]) else {
            throw TestFailure("curl \(method) \(url): no status line in \(head)")
        }
        var fields: [String: String] = [:]
        for line in lines.drop(while: { $0 != statusLine }).dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        let data = FileManager.default.contents(atPath: dir + "/body") ?? Data()
        return HTTPReply(status: code, body: data, headers: fields)
    }

    static func basic(_ user: String, _ password: String) -> [String: String] {
        ["Authorization": "Basic " + Data("\(user):\(password)".utf8).base64EncodedString()]
    }
}
