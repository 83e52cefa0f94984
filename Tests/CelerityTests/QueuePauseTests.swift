import Celerity
import Foundation
import RedisClient
import Testing

extension Integration {
    /// Pausing a queue cluster-wide (`QueuePause`, `celerity queue`): real workers on Redis
    /// db 3 (its own `celerity:paused`) stop fetching within about a second, let what they
    /// fetched finish, a worker started meanwhile does not fetch either, and resume runs every
    /// waiting message exactly once.
    @Suite(.timeLimit(.minutes(3)))
    struct QueuePauseTests {
        /// `{q}`: only tiny built-ins (the light path, run where a blocking fetch lands);
        /// `{q}_slow`: sleeps (the usual path).
        static let tasks = """
          p.add:
            queue: {q}
            builtin: add
          p.sleep:
            queue: {q}_slow
            builtin: sleep
        """

        static func heartbeat(_ r: Redis, _ node: String) async throws -> JSONValue? {
            try await r.call("GET", Keys.heartbeat(node)).bytes.map { try JSONValue(parsing: $0) }
        }

        static func cli(_ args: [String], broker: String) async throws -> (status: Int32, output: String) {
            try await ChildProcess.run(Paths.celerity, args + ["--broker", broker], name: "queue-cli")
        }

        @Test func pausedQueuesAreNotFetchedByAnyWorkerAndResumeRunsEveryMessageOnce() async throws {
            let redis = try await sharedRedis.value
            let admin = try Redis(redis.url(db: 3), label: "pause-test")
            try await admin.call("DEL", Keys.paused)
            let args = ["-Q", "{q},{q}_slow"]
            let h1 = try WorkerHarness(redis: redis, tasks: Self.tasks, concurrency: 2, db: 3, extraArgs: args)
            let h2 = try WorkerHarness(redis: redis, tasks: Self.tasks, concurrency: 2, db: 3, extraArgs: args, node: h1.prefix + "-b@test", reusingQueueOf: h1)
            let q = h1.queue, slow = h1.queue + "_slow"
            let logs = { [h1, h2].map { $0.worker.output.suffix(3000) }.joined(separator: "\n----\n") }
            for h in [h1, h2] {
                #expect(try await eventually(seconds: 15) { try await Self.heartbeat(admin, h.node)?["queues"] == [.string(q), .string(slow)] }, "\(logs())")
            }
            let client = try h1.client()
            // Four sleeps, fetched (and running) before the pause: they finish.
            var before: [AsyncResult] = []
            for _ in 0..<4 { before.append(try await client.send("p.sleep", args: [1.5])) }
            #expect(try await eventually(seconds: 5) { try await admin.call("LLEN", slow).int == 0 })

            let pauses = try QueuePause(broker: h1.broker)
            #expect(try await pauses.pause(q))
            #expect(try await pauses.pause(slow))
            #expect(try await !pauses.pause(q), "paused already")
            #expect(try await pauses.paused() == [q, slow].sorted())
            // Within 1.5 s no worker fetches from either: 20 adds and 2 sleeps stay queued.
            try await Task.sleep(for: .milliseconds(1500))
            var adds: [(AsyncResult, Int)] = []
            for i in 0..<20 { adds.append((try await client.send("p.add", args: [.int(i), 1000]), i + 1000)) }
            var after: [AsyncResult] = []
            for _ in 0..<2 { after.append(try await client.send("p.sleep", args: [0.2])) }
            try await Task.sleep(for: .seconds(2))
            #expect(try await admin.call("LLEN", q).int == 20, "\(logs())")
            #expect(try await admin.call("LLEN", slow).int == 2, "\(logs())")
            for b in before { #expect(try await b.get(timeout: .seconds(10)) == .double(1.5)) }
            for h in [h1, h2] {
                #expect(try await eventually(seconds: 5) { try await Self.heartbeat(admin, h.node)?["paused"] == [.string(q), .string(slow)] }, "\(logs())")
                #expect(h.worker.output.contains("queue paused"), "\(h.worker.output.suffix(2000))")
                #expect(try await admin.call("LLEN", Keys.processing(h.node)).int == 0)
            }
            // Still listed by active_queues: the workers are still asked to consume them.
            let active = try await Self.cli(["inspect", "active_queues", "-d", h1.node, "--json"], broker: h1.broker)
            #expect(active.status == 0 && active.output.contains(slow), "\(active.output)")

            // A worker started while they are paused does not fetch from them.
            let h3 = try WorkerHarness(redis: redis, tasks: Self.tasks, concurrency: 2, db: 3, extraArgs: args, node: h1.prefix + "-c@test", reusingQueueOf: h1)
            #expect(try await eventually(seconds: 15) { try await Self.heartbeat(admin, h3.node)?["paused"] == [.string(q), .string(slow)] }, "\(h3.worker.output.suffix(3000))")
            try await Task.sleep(for: .milliseconds(1500))
            #expect(try await admin.call("LLEN", q).int == 20, "\(h3.worker.output.suffix(3000))")
            #expect(try await admin.call("LLEN", slow).int == 2)

            // What the CLI, the Inspector and `celerity status` say.
            let listed = try await Self.cli(["queue", "paused"], broker: h1.broker)
            #expect(listed.status == 0 && listed.output.split(separator: "\n").map(String.init) == [q, slow].sorted(), "\(listed.output)")
            let snapshot = try await Inspector(broker: h1.broker).snapshot(queues: [q, slow, "not-paused"])
            #expect(snapshot.queue(q)?.paused == true && snapshot.queue(slow)?.paused == true && snapshot.queue("not-paused")?.paused == false)
            #expect(snapshot.queue(q)?.consumers.count == 3 && snapshot.queue(q)?.depth == 20)
            #expect(snapshot.worker(h3.node)?.heartbeat?.paused == [q, slow])
            let status = try await Self.cli(["status", "--queue", q, "--ping-timeout", "0"], broker: h1.broker)
            #expect(status.status == 0 && status.output.contains("(paused)"), "\(status.output)")
            let json = try await Self.cli(["status", "--queue", q, "--ping-timeout", "0", "--json"], broker: h1.broker)
            #expect(json.status == 0 && json.output.contains("\"paused\" : true"), "\(json.output)")

            // Resume: every waiting message runs, once.
            let resumed = try await Self.cli(["queue", "resume", q, slow], broker: h1.broker)
            #expect(resumed.status == 0 && resumed.output.contains("resumed \(q)\n") && resumed.output.contains("resumed \(slow)"), "\(resumed.output)")
            for (a, sum) in adds { #expect(try await a.get(timeout: .seconds(15)) == .int(sum), "\(logs())") }
            for a in after { #expect(try await a.get(timeout: .seconds(15)) == .double(0.2)) }
            #expect(try await admin.call("LLEN", q).int == 0)
            #expect(try await admin.call("LLEN", slow).int == 0)
            let harnesses = [h1, h2, h3]
            func processed() async throws -> Int {
                var n = 0
                for h in harnesses { n += try await Self.heartbeat(admin, h.node)?["processed"]?.intValue ?? 0 }
                return n
            }
            #expect(try await eventually(seconds: 8) { try await processed() == 26 }, "\(logs())")
            try await Task.sleep(for: .milliseconds(2500))
            #expect(try await processed() == 26, "a message ran twice")
            for h in harnesses {
                #expect(try await admin.call("LLEN", Keys.processing(h.node)).int == 0)
                #expect(h.worker.output.contains("queue resumed"), "\(h.worker.output.suffix(2000))")
            }
            #expect(try await pauses.paused().isEmpty)
            for h in harnesses { #expect(await h.stop() == 0) }
        }

        @Test func queueCommandsPrintWhatChangedAndExitWithTheDocumentedCodes() async throws {
            let redis = try await sharedRedis.value
            let broker = redis.url(db: 3)
            let name = "cli-" + UUID().uuidString.prefix(8).lowercased()
            let first = try await Self.cli(["queue", "pause", name], broker: broker)
            #expect(first.status == 0 && first.output == "paused \(name)\n", "\(first.output)")
            let again = try await Self.cli(["queue", "pause", name], broker: broker)
            #expect(again.status == 0 && again.output == "\(name) was paused already\n", "\(again.output)")
            let listed = try await Self.cli(["queue", "paused"], broker: broker)
            #expect(listed.status == 0 && listed.output.split(separator: "\n").contains(Substring(name)), "\(listed.output)")
            let resumed = try await Self.cli(["queue", "resume", name], broker: broker)
            #expect(resumed.status == 0 && resumed.output == "resumed \(name)\n", "\(resumed.output)")
            let notPaused = try await Self.cli(["queue", "resume", name], broker: broker)
            #expect(notPaused.status == 0 && notPaused.output == "\(name) was not paused\n", "\(notPaused.output)")
            #expect(try await !QueuePause(broker: broker).paused().contains(name))
            // Usage 64, bad URL 2, Redis away 4.
            #expect(try await Self.cli(["queue", "pause", ""], broker: broker).status == 64)
            #expect(try await Self.cli(["queue", "pause"], broker: broker).status == 64)
            #expect(try await Self.cli(["queue", "paused"], broker: "http://nowhere").status == 2)
            let away = try await Self.cli(["queue", "pause", name], broker: "redis://127.0.0.1:1/3")
            #expect(away.status == 4 && away.output.contains("cannot pause queue \(name)"), "\(away.output)")
            // Help names the three commands.
            let help = try await ChildProcess.run(Paths.celerity, ["queue", "--help"])
            #expect(help.output.contains("pause") && help.output.contains("resume") && help.output.contains("paused"), "\(help.output)")
        }
    }
}
