@testable import Celerity
import Foundation
import RedisClient
import Testing

/// `unique:` in tasks.yaml: the key, the manifest, and the enqueue (no worker needed).
@Suite struct UniqueTaskUnitTests: ManifestTesting {
    @Test func sha256MatchesKnownVectors() {
        #expect(SHA256.hex([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        // Two blocks (56 bytes: the padding does not fit in the first).
        #expect(SHA256.hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        #expect(SHA256.hex([UInt8](repeating: 0x61, count: 1000)) == "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3")
    }

    @Test func keySelectsWhatMakesTwoCallsTheSame() {
        let all = UniqueSpec(ttl: 60)
        let k = all.redisKey(task: "t", args: [1, 2], kwargs: [JSONMember("a", "x")])
        #expect(k.hasPrefix("celerity:unique:t:") && k.count == "celerity:unique:t:".count + 64)
        // The hash is of the canonical JSON `[args, kwargs]`.
        #expect(k == "celerity:unique:t:" + SHA256.hex(Array(#"[[1,2],{"a":"x"}]"#.utf8)))
        #expect(all.redisKey(task: "t", args: [1, 3], kwargs: [JSONMember("a", "x")]) != k)
        #expect(all.redisKey(task: "u", args: [1, 2], kwargs: [JSONMember("a", "x")]) != k)
        let first = UniqueSpec(ttl: 60, key: [.arg(0)])
        #expect(first.redisKey(task: "t", args: [1, 2], kwargs: []) == first.redisKey(task: "t", args: [1, 99], kwargs: [JSONMember("z", 1)]))
        #expect(first.redisKey(task: "t", args: [1, 2], kwargs: []) != first.redisKey(task: "t", args: [2, 2], kwargs: []))
        let named = UniqueSpec(ttl: 60, key: [.kwarg("region"), .arg(3)])
        #expect(named.redisKey(task: "t", args: [], kwargs: [JSONMember("region", "eu")])
                == "celerity:unique:t:" + SHA256.hex(Array(#"["eu",null]"#.utf8)))
    }

    @Test func manifestReadsUnique() throws {
        try withTemporaryDirectory { dir in
            let m = try parse("""
            tasks:
              a: {builtin: add, unique: {ttl: 1h30m, key: [0, region]}}
              b: {builtin: add, unique: {ttl: 45}}
              c: {builtin: add}
            schedules:
              s: {task: a, every: 10s}
            """, in: dir)
            #expect(m.tasks["a"]?.unique == UniqueSpec(ttl: 5400, key: [.arg(0), .kwarg("region")]))
            #expect(m.tasks["b"]?.unique == UniqueSpec(ttl: 45, key: nil))
            #expect(m.tasks["c"]?.unique == nil)
            #expect(m.schedules.first?.unique == m.tasks["a"]?.unique)
            #expect(m.tasks["a"]?.unique?.description == "ttl 1h30m, key [args[0], kwargs.region]")
        }
    }

    @Test(arguments: [
        ("  a: {builtin: add, unique: 1h}\n", "2:29", ["a.unique must be a mapping"]),
        ("  a: {builtin: add, unique: {key: [0]}}\n", "2:29", ["a.unique", "missing the field 'ttl'"]),
        ("  a: {builtin: add, unique: {ttl: 0}}\n", "2:35", ["a.unique.ttl", "at least 1 second"]),
        ("  a: {builtin: add, unique: {ttl: -5}}\n", "2:35", ["a.unique.ttl", "at least 1 second"]),
        ("  a: {builtin: add, unique: {ttl: 1.5}}\n", "2:35", ["a.unique.ttl", "whole number of seconds"]),
        ("  a: {builtin: add, unique: {ttl: soon}}\n", "2:35", ["a.unique.ttl", "not a duration"]),
        ("  a: {builtin: add, unique: {ttl: 1h, until: done}}\n", "2:39", ["unknown key 'until'", "a.unique", "key, ttl"]),
        ("  a: {builtin: add, unique: {ttl: 1h, key: 0}}\n", "2:44", ["a.unique.key must be a list"]),
        ("  a: {builtin: add, unique: {ttl: 1h, key: [0, -1]}}\n", "2:48", ["a.unique.key", "≥ 0", "-1"]),
        ("  a: {builtin: add, unique: {ttl: 1h, key: [true]}}\n", "2:45", ["a.unique.key", "positional index or a kwarg name", "boolean"]),
        ("  a: {builtin: add, unique: {ttl: 1h, key: [[0]]}}\n", "2:45", ["a.unique.key", "positional index or a kwarg name"]),
        ("  a: {builtin: add, unique: {ttl: 1h, key: []}}\n", "2:44", ["a.unique.key must not be empty"]),
        ("  a: {builtin: add, unique: {ttl: 1h, key: [\"\"]}}\n", "2:45", ["kwarg name must not be empty"]),
    ] as [(String, String, [String])])
    func badUniqueSaysWhereAndWhat(entry: String, position: String, words: [String]) throws {
        try withTemporaryDirectory { dir in
            expectError("tasks:\n" + entry, in: dir, at: position, words)
        }
    }
}

extension Integration {
    @Suite struct UniqueTaskTests {
        static func llen(_ h: WorkerHarness) async throws -> Int {
            try await h.redisClient().call("LLEN", h.queue).int ?? -1
        }

        /// 50 senders with a client each, then one client sending 50 at once, of the same
        /// unique call while no worker runs: one message in the queue, one id everywhere.
        @Test func fiftyConcurrentSendersEnqueueOneTask() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: """
              {q}.add: {queue: {q}, builtin: add, unique: {ttl: 1m}}
            """, startWorker: false)
            let clients = try (0..<50).map { _ in try h.client() }
            let ids = try await withThrowingTaskGroup(of: (String, Bool).self) { group in
                for c in clients {
                    group.addTask {
                        let r = try await c.send("\(h.queue).add", args: [1, 2])
                        return (r.id, r.isDuplicate)
                    }
                }
                return try await group.reduce(into: [(String, Bool)]()) { $0.append($1) }
            }
            #expect(ids.count == 50)
            #expect(Set(ids.map(\.0)).count == 1, "ids: \(Set(ids.map(\.0)))")
            #expect(ids.filter { !$0.1 }.count == 1, "exactly one sender enqueued")
            #expect(try await Self.llen(h) == 1)
            let first = ids[0].0
            #expect(try await h.redisClient().call("GET", "celerity:unique:\(h.queue).add:" + SHA256.hex(Array("[[1,2],{}]".utf8))).string == first)

            // One client, 50 concurrent sends (another key): one task.
            let c = clients[0]
            let handles = try await withThrowingTaskGroup(of: AsyncResult.self) { group in
                for _ in 0..<50 { group.addTask { try await c.send("\(h.queue).add", args: [3, 4]) } }
                return try await group.reduce(into: [AsyncResult]()) { $0.append($1) }
            }
            #expect(Set(handles.map(\.id)).count == 1)
            #expect(handles.filter { !$0.isDuplicate }.count == 1)
            // And in one batch: the second of two equal calls is a duplicate of the first.
            let batch = try await c.sendMany([c.message("\(h.queue).add", args: [5, 5]), c.message("\(h.queue).add", args: [5, 5]), c.message("\(h.queue).add", args: [5, 6])])
            #expect(!batch[0].isDuplicate && batch[1].isDuplicate && batch[1].id == batch[0].id && !batch[2].isDuplicate)
            #expect(try await Self.llen(h) == 4)
        }

        /// Different key values are different tasks; `key: [0]` ignores the second argument;
        /// after the ttl a new call enqueues.
        @Test func keyValuesAndTTL() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: """
              {q}.first: {queue: {q}, builtin: add, unique: {ttl: 1s, key: [0]}}
              {q}.plain: {queue: {q}, builtin: add}
            """, startWorker: false)
            let c = try h.client()
            let a = try await c.send("\(h.queue).first", args: [1, 2])
            let b = try await c.send("\(h.queue).first", args: [1, 99])
            let other = try await c.send("\(h.queue).first", args: [2, 2])
            #expect(!a.isDuplicate && b.isDuplicate && b.id == a.id)
            #expect(!other.isDuplicate && other.id != a.id)
            // A task without `unique` is never deduplicated, and its message has no header.
            let p1 = try await c.send("\(h.queue).plain", args: [1, 2])
            let p2 = try await c.send("\(h.queue).plain", args: [1, 2])
            #expect(p1.id != p2.id && !p1.isDuplicate && !p2.isDuplicate)
            #expect(c.message("\(h.queue).plain", args: [1]).uniqueKey == nil)
            #expect(try await Self.llen(h) == 4)
            // The header travels in the message.
            let raw = try await h.redisClient().call("LINDEX", h.queue, -1).bytes ?? []
            #expect(try TaskMessage.decode(raw).uniqueKey?.hasPrefix("celerity:unique:\(h.queue).first:") == true)
            #expect(TaskMessage.decodeForRun(raw)?.uniqueKey == TaskMessage.uniqueRelease(of: raw)?.key)
            // ttl: 1 s, no worker: the key expires, the next call enqueues.
            try await Task.sleep(for: .milliseconds(1300))
            let again = try await c.send("\(h.queue).first", args: [1, 2])
            #expect(!again.isDuplicate && again.id != a.id)
            #expect(try await Self.llen(h) == 5)
        }

        /// With a worker: a duplicate of a running task waits for its result; after SUCCESS (the
        /// usual path and the inline fast path) and after FAILURE the next call is a new task.
        @Test func finishedTasksReleaseTheirKey() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: """
              {q}.sleep: {queue: {q}, builtin: sleep, unique: {ttl: 1h}}
              {q}.echo: {queue: {q}, builtin: echo, unique: {ttl: 1h}}
              {q}.fail: {queue: {q}, builtin: fail, unique: {ttl: 1h}}
            """)
            let c = try h.client()
            let r = try h.redisClient()
            let first = try await c.send("\(h.queue).sleep", args: [1.0])
            try await Task.sleep(for: .milliseconds(200))
            let dup = try await c.send("\(h.queue).sleep", args: [1.0])
            #expect(dup.isDuplicate && dup.id == first.id)
            #expect(try await dup.get(timeout: .seconds(20)) == 1.0)
            let key = c.message("\(h.queue).sleep", args: [1.0]).uniqueKey!
            // Released with the result's store, atomically: gone once the result is seen.
            #expect(try await r.call("EXISTS", key).int == 0)
            let next = try await c.send("\(h.queue).sleep", args: [1.0])
            #expect(!next.isDuplicate && next.id != first.id)
            _ = try await next.get(timeout: .seconds(20))

            // echo is an inline built-in: stored and acked on the fast paths.
            for _ in 0..<3 {
                let e = try await c.send("\(h.queue).echo", args: ["x"])
                #expect(!e.isDuplicate)
                _ = try await e.get(timeout: .seconds(20))
            }
            #expect(try await r.call("EXISTS", c.message("\(h.queue).echo", args: ["x"]).uniqueKey!).int == 0)

            let f1 = try await c.send("\(h.queue).fail", args: ["boom"])
            await #expect(throws: TaskFailure.self) { try await f1.get(timeout: .seconds(20)) }
            let f2 = try await c.send("\(h.queue).fail", args: ["boom"])
            #expect(!f2.isDuplicate && f2.id != f1.id)
            await #expect(throws: TaskFailure.self) { try await f2.get(timeout: .seconds(20)) }
            #expect(try await r.call("EXISTS", c.message("\(h.queue).fail", args: ["boom"]).uniqueKey!).int == 0)

            // Expired before it ran: REVOKED, and the key goes.
            var options = CelerityClient.SendOptions()
            options.expires = Date().addingTimeInterval(-1)
            let x1 = try await c.send("\(h.queue).echo", args: ["late"], options: options)
            await #expect(throws: TaskFailure.self) { try await x1.get(timeout: .seconds(20)) }
            #expect(try await x1.state() == .revoked)
            let x2 = try await c.send("\(h.queue).echo", args: ["late"])
            #expect(!x2.isDuplicate && x2.id != x1.id)
            #expect(try await x2.get(timeout: .seconds(20)) != .null)
            #expect(await h.stop() == 0)
        }

        /// A task retried after a failure keeps its key through the retry wait (the same id, still
        /// queued); when it fails for good (dead-lettered) the key goes.
        @Test func retryKeepsTheKeyDeadLetterReleasesIt() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: """
              {q}.flaky:
                queue: {q}
                plugin: [python3, {root}/Tests/Fixtures/plugins/misbehave.py]
                retries: 1
                retry_backoff: 3
                retry_backoff_max: 3
                unique: {ttl: 1h}
            """)
            let c = try h.client()
            let first = try await c.send("\(h.queue).flaky", args: ["exit3"])
            // Wait until it failed once and waits for its retry.
            #expect(try await eventually(seconds: 15) { try await first.state() == .retry })
            let dup = try await c.send("\(h.queue).flaky", args: ["exit3"])
            #expect(dup.isDuplicate && dup.id == first.id)
            await #expect(throws: TaskFailure.self) { try await first.get(timeout: .seconds(30)) }
            let key = c.message("\(h.queue).flaky", args: ["exit3"]).uniqueKey!
            #expect(try await h.redisClient().call("EXISTS", key).int == 0)
            let next = try await c.send("\(h.queue).flaky", args: ["exit3"])
            #expect(!next.isDuplicate && next.id != first.id)
            #expect(await h.stop() == 0)
        }

        /// `celerity call` of a duplicate says so on stderr and prints the first call's result;
        /// with --no-wait it prints the first call's id.
        @Test func cliCallOfADuplicate() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: """
              {q}.sleep: {queue: {q}, builtin: sleep, unique: {ttl: 1h}}
            """)
            let c = try h.client()
            let first = try await c.send("\(h.queue).sleep", args: [1.5])
            try await Task.sleep(for: .milliseconds(200))
            let common = ["--manifest", h.manifestPath, "--broker", h.broker, "--result-backend", h.resultBackend]
            let noWait = try await ChildProcess.run(Paths.celerity, ["call", "\(h.queue).sleep", "1.5", "--no-wait"] + common)
            #expect(noWait.status == 0, "\(noWait.output)")
            #expect(noWait.output.contains("duplicate of \(first.id): not enqueued"), "\(noWait.output)")
            #expect(noWait.output.split(separator: "\n").contains { $0 == first.id }, "\(noWait.output)")
            let call = try await ChildProcess.run(Paths.celerity, ["call", "\(h.queue).sleep", "1.5", "--timeout", "20"] + common)
            #expect(call.status == 0, "\(call.output)")
            #expect(call.output.contains("duplicate of \(first.id): not enqueued"), "\(call.output)")
            #expect(call.output.split(separator: "\n").contains("1.5"), "\(call.output)")
            #expect(try await Self.llen(h) == 0)
            #expect(await h.stop() == 0)
        }

        /// `celerity check` shows the policy.
        @Test func checkShowsUnique() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: """
              {q}.add: {queue: {q}, builtin: add, unique: {ttl: 10m, key: [0, region]}}
            """, startWorker: false)
            let r = try await ChildProcess.run(Paths.celerity, ["check", h.manifestPath])
            #expect(r.status == 0, "\(r.output)")
            #expect(r.output.contains("unique (ttl 10m, key [args[0], kwargs.region])"), "\(r.output)")
        }

        /// Beat: a tick whose unique task is still queued is skipped (logged), not sent twice.
        @Test func beatSkipsATickWhoseTaskIsStillQueued() async throws {
            let server = try await RedisServer.start()
            let f = try BeatFixture(server: server, schedules: "")
            try """
            tasks:
              add: {builtin: add, queue: \(f.queue), unique: {ttl: 1h}}
            schedules:
              ping: {task: add, every: 1s, args: [1, 1]}

            """.write(toFile: f.manifest, atomically: true, encoding: .utf8)
            let beat = try f.beat("u1")
            try await Task.sleep(for: .milliseconds(3500))
            #expect(await beat.stop() == 0)
            let messages = try await BeatMessage.read(f.queue, on: f.redis())
            #expect(messages.count == 1, "\(messages.map(\.tick))")
            #expect(beat.output.contains("skipped: add \(messages.first?.id ?? "?") with the same unique key is still queued or running"), "\(beat.output.suffix(2000))")
            // Only the sent tick counts (the limit counts sends).
            #expect(try await f.redis().call("HGET", BeatStore.countKey, "ping").int == 1)
            await server.stop()
        }
    }
}
