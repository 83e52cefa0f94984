import Celerity
import Foundation
import RedisClient
import Testing

extension Integration {
    /// The Inspector watching a real worker, and `celerity status` as a user runs it.
    @Suite(.timeLimit(.minutes(2)))
    struct StatusTests {
        /// Polls the Inspector (this test's queue only) until `ok` holds, for up to `seconds`.
        static func until(_ inspector: Inspector, queue: String, seconds: Double = 10,
                          _ ok: (Inspector.Snapshot) -> Bool) async throws -> Inspector.Snapshot {
            let deadline = Date().addingTimeInterval(seconds)
            var s = try await inspector.snapshot(queues: [queue])
            while !ok(s) && Date() < deadline {
                try await Task.sleep(for: .milliseconds(100))
                s = try await inspector.snapshot(queues: [queue])
            }
            return s
        }

        @Test func aRunningWorkerIsAliveWithItsQueueAndItsTaskInFlight() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: """
              s.sleep:
                queue: {q}
                builtin: sleep
            """, concurrency: 2)
            let inspector = try Inspector(broker: h.broker, manifest: try Manifest.load(path: h.manifestPath))
            // Alive, consuming its queue, nothing held.
            let idle = try await StatusTests.until(inspector, queue: h.queue) { $0.worker(h.node)?.alive == true }
            let w0 = try #require(idle.worker(h.node))
            #expect(w0.heartbeat?.queues == [h.queue])
            #expect(w0.heartbeat?.concurrency == 2)
            #expect(w0.heartbeat?.pid == Int(h.worker.pid))
            #expect(w0.inFlight == 0)
            #expect((w0.sinceBeat ?? 99) < 5)
            #expect(idle.queue(h.queue)?.consumers == [h.node])
            #expect(idle.queue(h.queue)?.sources == ["option"])

            // A 4 s sleep: in its processing list, and running by the next heartbeat.
            let handle = try await h.client().send("s.sleep", args: [4])
            let busy = try await StatusTests.until(inspector, queue: h.queue) {
                $0.worker(h.node)?.inFlight == 1 && $0.worker(h.node)?.heartbeat?.active == 1
            }
            let w1 = try #require(busy.worker(h.node))
            #expect(w1.inFlight == 1)
            #expect(w1.heartbeat?.active == 1)
            #expect(busy.queue(h.queue)?.depth == 0)

            // Done: nothing held, one processed.
            #expect(try await handle.get(timeout: .seconds(15)) == 4)
            let done = try await StatusTests.until(inspector, queue: h.queue) { $0.worker(h.node)?.heartbeat?.processed == 1 }
            #expect(done.worker(h.node)?.inFlight == 0)
            #expect(done.worker(h.node)?.heartbeat?.active == 0)
            #expect(done.worker(h.node)?.heartbeat?.processed == 1)

            // Stopped: its heartbeat is deleted, so it is no longer alive (or already forgotten).
            #expect(await h.stop() == 0)
            let gone = try await inspector.snapshot(queues: [h.queue])
            #expect(gone.worker(h.node)?.alive != true)
            #expect(gone.queue(h.queue)?.consumers == [])
        }

        @Test func statusPrintsJSONAndATableAndExitsWithTheDocumentedCodes() async throws {
            let server = try await RedisServer.start()
            let redis = try Redis(server.url, label: "status-cli")
            let dir = NSTemporaryDirectory() + "celerity-status-\(UUID().uuidString.prefix(6))"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let manifest = dir + "/tasks.yaml"
            try "tasks:\n  t.a: {queue: work, builtin: add}\nworkers:\n  g: {queues: [work, other]}\n".write(toFile: manifest, atomically: true, encoding: .utf8)
            let now = Date().timeIntervalSince1970
            var cmds: [RedisCommand] = []
            for p in [0, 0, 0, 4, 9] { cmds.append(RedisCommand("LPUSH", Keys.queue("work", priority: p), TaskMessage(task: "t.a", queue: "work", priority: p).encode())) }
            let beat = JSONValue.object([
                JSONMember("node", "w1@h"), JSONMember("pid", 7), JSONMember("host", "h"), JSONMember("queues", ["work"]),
                JSONMember("concurrency", 4), JSONMember("active", 2), JSONMember("processed", 90),
                JSONMember("started", .string(CeleryDate.format(Date()))), JSONMember("at", .string(CeleryDate.format(Date()))),
            ])
            cmds += [RedisCommand("SET", Keys.heartbeat("w1@h"), beat.serializedBytes(), "EX", 30), RedisCommand("SADD", Keys.workers, "w1@h", "gone@h"),
                     RedisCommand("LPUSH", Keys.processing("w1@h"), "a", "b"), RedisCommand("LPUSH", Keys.processing("gone@h"), "c"),
                     RedisCommand("ZADD", Keys.delayed, now + 600, Array("work".utf8) + [0] + Array("m".utf8)),
                     RedisCommand("LPUSH", Keys.deadLetters, Array(#"{"id":"e1","queue":"work","reason":"poison pill","worker":"x","at":"2026-01-01T00:00:00+00:00","message":"{}"}"#.utf8)),
                     RedisCommand("ZADD", Keys.revoked, now + 600, "r1")]
            for r in try await redis.pipeline(cmds) { try r.throwingError() }
            let common = ["--manifest", manifest, "--broker", server.url]

            let json = try await ChildProcess.run(Paths.celerity, ["status", "--json"] + common)
            #expect(json.status == 0, "\(json.output)")
            let s = try Inspector.Snapshot(json: Data(json.output.utf8))
            #expect(s.queues.map(\.name) == ["work", "other"])
            #expect(s.queue("work")?.depth == 5)
            #expect(s.queue("work")?.lists.map(\.depth) == [3, 1, 0, 1])
            #expect(s.queue("work")?.consumers == ["w1@h"])
            #expect(s.worker("w1@h")?.alive == true && s.worker("w1@h")?.inFlight == 2)
            #expect(s.worker("gone@h")?.alive == false && s.worker("gone@h")?.inFlight == 1)
            #expect(s.delayed.count == 1 && s.delayed.nextQueue == "work")
            #expect(s.deadLetters.count == 1 && s.deadLetters.byQueue == [.init(queue: "work", count: 1)])
            #expect(s.revoked.live == 1)

            let table = try await ChildProcess.run(Paths.celerity, ["status"] + common)
            #expect(table.status == 0, "\(table.output)")
            let lines = table.output.split(separator: "\n").map(String.init)
            func row(_ first: String) -> [String]? { lines.first { $0.hasPrefix(first + " ") }?.split(separator: " ").map(String.init) }
            #expect(row("work")?.prefix(7) == ["work", "5", "3", "1", "0", "1", "1"], "\(table.output)")
            #expect(row("other")?.prefix(7) == ["other", "0", "0", "0", "0", "0", "0"], "\(table.output)")
            // w1@h: the BEAT column (a duration) left out.
            #expect(row("w1@h").map { [$0[0], $0[1]] + Array($0[3...]) } == ["w1@h", "alive", "2", "2", "4", "90", "work"], "\(table.output)")
            #expect(row("gone@h") == ["gone@h", "dead", "-", "-", "1", "-", "-", "awaiting", "recovery"], "\(table.output)")
            #expect(lines.contains { $0.hasPrefix("Delayed") && $0.contains("1, next due in 9m (work)") }, "\(table.output)")
            #expect(lines.contains { $0.hasPrefix("Dead letters") && $0.contains("1 (work 1)") }, "\(table.output)")
            #expect(lines.contains { $0.hasPrefix("Revoked") && $0.hasSuffix(" 1") }, "\(table.output)")
            #expect(lines.allSatisfy { $0.count <= 100 }, "\(table.output)")

            // --queue: only that one.
            let one = try await ChildProcess.run(Paths.celerity, ["status", "--json", "--queue", "other"] + common)
            #expect(try Inspector.Snapshot(json: Data(one.output.utf8)).queues.map(\.name) == ["other"])

            // --watch with --json: one compact document per line, refreshed.
            let watch = try ChildProcess(name: "status-watch", executable: Paths.celerity, arguments: ["status", "--json", "--watch", "0.2"] + common)
            try await Task.sleep(for: .milliseconds(1500))
            await watch.stop(grace: 5)
            let docs = watch.output.split(separator: "\n").filter { $0.hasPrefix("{") }
            #expect(docs.count >= 3, "\(watch.output)")
            for d in docs { #expect(try Inspector.Snapshot(json: Data(d.utf8)).queue("work")?.depth == 5) }

            // 4: Redis unreachable; 2: a bad URL or manifest.
            let down = try await ChildProcess.run(Paths.celerity, ["status", "--broker", "redis://u:topsecret@127.0.0.1:\(RedisServer.freePort())/0"])
            #expect(down.status == 4, "\(down.output)")
            #expect(down.output.contains("cannot read the broker") && !down.output.contains("topsecret"), "\(down.output)")
            #expect(try await ChildProcess.run(Paths.celerity, ["status", "--broker", "http://nope"]).status == 2)
            try "tasks:\n  a.b:\n    queu: q\n".write(toFile: dir + "/bad.yaml", atomically: true, encoding: .utf8)
            #expect(try await ChildProcess.run(Paths.celerity, ["status", "--manifest", dir + "/bad.yaml", "--broker", server.url]).status == 2)
            await server.stop()
        }
    }
}
