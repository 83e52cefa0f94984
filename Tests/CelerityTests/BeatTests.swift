import Celerity
import Foundation
import RedisClient
import Testing

/// One scheduled message as found in a queue list.
struct BeatMessage: Sendable {
    var entry: String
    var tick: Int?
    var misfire: String?
    var id: String
    var task: String

    static func read(_ queue: String, on r: Redis) async throws -> [BeatMessage] {
        let items = try await r.call("LRANGE", queue, 0, -1).array ?? []
        return try items.map { item in
            guard let bytes = item.bytes else { throw TestFailure("queue \(queue) holds \(item)") }
            let v = try JSONValue(parsing: bytes)
            let h = v["headers"]
            // An ordinary Celery message: it decodes as one.
            let m = try TaskMessage.decode(bytes)
            return BeatMessage(entry: h?["celerity_beat_entry"]?.stringValue ?? "", tick: h?["celerity_beat_tick"]?.intValue,
                               misfire: h?["celerity_beat_misfire"]?.stringValue, id: m.id, task: m.task)
        }
    }
}

/// A manifest and beats of one test, on a redis-server of its own (the beat's state keys are
/// global to a database, and stale entries are removed at start).
final class BeatFixture: Sendable {
    let server: RedisServer
    let dir: String
    let manifest: String
    let queue: String

    init(server: RedisServer, schedules: String) throws {
        self.server = server
        queue = "bq" + UUID().uuidString.prefix(6).lowercased()
        dir = NSTemporaryDirectory() + "celerity-beat-\(queue)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        manifest = dir + "/tasks.yaml"
        try write(schedules)
    }

    func write(_ schedules: String) throws {
        let yaml = "tasks:\n  add: {builtin: add, queue: \(queue)}\nschedules:\n" + schedules.replacingOccurrences(of: "{q}", with: queue)
        try yaml.write(toFile: manifest, atomically: true, encoding: .utf8)
    }

    var broker: String { server.url }
    func redis() throws -> Redis { try Redis(broker, label: "beat-test") }

    func beat(_ name: String, skew: Double = 0) throws -> ChildProcess {
        try ChildProcess(name: "beat-\(name)", executable: Paths.celerity,
                         arguments: ["beat", "-n", name, "-l", "debug", "--manifest", manifest, "--broker", broker],
                         environment: ["CELERITY_BEAT_LOCAL_CLOCK_SKEW": String(skew)])
    }

    func cli(_ args: [String], broker: String? = nil) async throws -> (status: Int32, output: String) {
        try await ChildProcess.run(Paths.celerity, args + ["--manifest", manifest, "--broker", broker ?? self.broker], name: "cli-\(args.prefix(2).joined(separator: "-"))")
    }

    /// Redis TIME in seconds.
    func redisTime() async throws -> Double {
        let t = try await redis().call("TIME").array ?? []
        return Double(t[0].int ?? 0) + Double(t[1].int ?? 0) / 1e6
    }

    /// Waits until Redis's clock is just past a whole second (so phases line up with ticks).
    func alignToSecond(_ fraction: Double = 0.3) async throws {
        let t = try await redisTime()
        var wait = (t.rounded(.down) + 1 + fraction) - t
        if wait > 1 { wait -= 1 }
        try await Task.sleep(for: .milliseconds(Int(wait * 1000)))
    }
}

extension Integration {
    @Suite struct BeatTests {
        /// Three beats with local clocks skewed by −40 s, 0 and +35 s on an `every: 1s` entry;
        /// one is SIGKILLed and restarted, then Redis itself restarts (AOF on): exactly one
        /// message per tick, no gap except across the Redis outage, where `run_once` sends one.
        @Test func threeBeatsSendExactlyOneMessagePerTick() async throws {
            let dataDir = NSTemporaryDirectory() + "celerity-beat-aof-\(UUID().uuidString.prefix(6))"
            try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true)
            let persist = ["--appendonly", "yes", "--appendfsync", "always", "--dir", dataDir]
            let server = try await RedisServer.start(extra: persist)
            let port = server.port
            let f = try BeatFixture(server: server, schedules: "  tick: {task: add, every: 1s, args: [1, 2], misfire: run_once}\n")
            let start = try await f.redisTime()
            var beats = [try f.beat("b1", skew: -40), try f.beat("b2"), try f.beat("b3", skew: 35)]
            try await Task.sleep(for: .seconds(6))
            beats[1].signal(SIGKILL)
            _ = await beats[1].wait()
            try await Task.sleep(for: .seconds(2))
            beats[1] = try f.beat("b2-again")
            try await Task.sleep(for: .seconds(4))
            let before = try await BeatMessage.read(f.queue, on: f.redis())
            // Redis restart: the state and the queue come back from the AOF.
            let downAt = try await f.redisTime()
            await server.stop()
            try await Task.sleep(for: .seconds(2))
            let server2 = try await RedisServer.start(port: port, extra: persist)
            let upAt = try await f.redisTime()   // the same URL: the restarted server
            try await Task.sleep(for: .seconds(8))
            var exits: [Int32] = []
            for b in beats { exits.append(await b.stop(grace: 10)) }
            let end = try await f.redisTime()
            #expect(exits == [0, 0, 0], "beats: \(beats.map { $0.output.suffix(1500) })")

            let messages = try await BeatMessage.read(f.queue, on: f.redis())
            #expect(messages.count >= before.count, "the messages before the restart survived it (AOF)")
            let ticks = messages.compactMap(\.tick).sorted()
            #expect(ticks.count == messages.count && messages.allSatisfy { $0.entry == "tick" && $0.task == "add" })
            #expect(Set(ticks).count == ticks.count, "a tick was sent twice: \(ticks)")
            #expect(Set(messages.map(\.id)).count == messages.count)
            // All ticks on Redis's clock, within the run.
            #expect(ticks.allSatisfy { Double($0) > start - 1 && Double($0) <= end }, "ticks \(ticks) outside \(start)…\(end)")
            // No gap, except one across the Redis outage (covered by one run_once message).
            var gaps: [(Int, Int)] = []
            for (a, b) in zip(ticks, ticks.dropFirst()) where b != a + 1 { gaps.append((a, b)) }
            #expect(gaps.count <= 1, "gaps \(gaps) in \(ticks)")
            for (a, b) in gaps {
                #expect(Double(a) >= downAt - 2 && Double(b) <= upAt + 7, "gap \(a)…\(b) is not the outage \(downAt)…\(upAt)")
                let catchUp = messages.first { $0.tick == b }
                #expect(catchUp?.misfire == "run_once", "the tick after the outage is the one run_once send: \(String(describing: catchUp))")
            }
            // Before the outage: every second from the first tick, and the killed beat changed nothing.
            let early = before.compactMap(\.tick).sorted()
            #expect(early.count >= 10 && early.last! - early.first! == early.count - 1, "before the restart: \(early)")
            #expect(ticks.count >= 17, "ticks: \(ticks)")
            await server2.stop()
        }

        /// The same over several minutes (`CELERITY_BEAT_SOAK_SECONDS`, default 180): three beats
        /// with skewed clocks, one of them SIGKILLed and restarted every 15 s in turn, and Redis
        /// restarted (AOF on) halfway. Every tick of `every: 1s` is sent exactly once: no
        /// duplicate, no gap except across the Redis outage (where `run_once` sends one).
        @Test(.timeLimit(.minutes(10))) func threeBeatsOverSeveralMinutesWithKillsAndARedisRestart() async throws {
            let seconds = Double(ProcessInfo.processInfo.environment["CELERITY_BEAT_SOAK_SECONDS"] ?? "") ?? 180
            let dataDir = NSTemporaryDirectory() + "celerity-beat-soak-\(UUID().uuidString.prefix(6))"
            try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true)
            let persist = ["--appendonly", "yes", "--appendfsync", "always", "--dir", dataDir]
            var server = try await RedisServer.start(extra: persist)
            let port = server.port
            let f = try BeatFixture(server: server, schedules: "  tick: {task: add, every: 1s, args: [1, 2], misfire: run_once}\n")
            let start = try await f.redisTime()
            let skews: [Double] = [-40, 0, 35]
            var beats = try skews.indices.map { try f.beat("s\($0)", skew: skews[$0]) }
            var kills = 0
            var outage: (down: Double, up: Double)?
            let began = Date()
            while Date().timeIntervalSince(began) < seconds {
                try await Task.sleep(for: .seconds(15))
                if outage == nil && Date().timeIntervalSince(began) >= seconds / 2 {
                    let down = try await f.redisTime()
                    await server.stop()
                    try await Task.sleep(for: .seconds(2))
                    server = try await RedisServer.start(port: port, extra: persist)
                    outage = (down, try await f.redisTime())
                    continue
                }
                let i = kills % beats.count
                beats[i].signal(SIGKILL)
                _ = await beats[i].wait()
                beats[i] = try f.beat("s\(i)-\(kills)", skew: skews[i])
                kills += 1
            }
            // The beat restarted last has its signal handlers in place before the stop.
            try await Task.sleep(for: .seconds(3))
            var exits: [Int32] = []
            for b in beats { exits.append(await b.stop(grace: 10)) }
            let end = try await f.redisTime()
            #expect(exits == [0, 0, 0], "beats: \(beats.map { $0.output.suffix(1500) })")
            let messages = try await BeatMessage.read(f.queue, on: f.redis())
            let ticks = messages.compactMap(\.tick).sorted()
            print("beat soak: \(Int(end - start)) s, \(kills) beats killed, Redis restarted once: \(messages.count) messages, \(Set(ticks).count) distinct ticks")
            #expect(Set(ticks).count == ticks.count, "ticks sent twice: \(Dictionary(grouping: ticks, by: { $0 }).filter { $0.value.count > 1 }.keys.sorted())")
            var gaps: [(Int, Int)] = []
            for (a, b) in zip(ticks, ticks.dropFirst()) where b != a + 1 { gaps.append((a, b)) }
            #expect(gaps.count <= 1, "gaps \(gaps)")
            if let (a, b) = gaps.first, let o = outage {
                #expect(Double(a) >= o.down - 2 && Double(b) <= o.up + 7, "gap \(a)…\(b) is not the outage \(o)")
            }
            // Every second of the run has its tick, but for the outage.
            let outageSeconds = outage.map { $0.up - $0.down } ?? 0
            #expect(Double(ticks.count) >= (end - start) - outageSeconds - 8, "\(ticks.count) ticks in \(end - start) s")
            #expect(kills >= 3)
            await server.stop()
        }

        /// All beats stopped for 6 ticks: `skip` sends none of the missed ticks, `run_once` exactly one.
        @Test func misfireAfterDowntimeFollowsThePolicy() async throws {
            let server = try await RedisServer.start()
            let f = try BeatFixture(server: server, schedules: """
                  skipper: {task: add, every: 1s, args: [1, 1], misfire: skip}
                  oncer: {task: add, every: 1s, args: [2, 2], misfire: run_once}

                """)
            try await f.alignToSecond()
            var beat = try f.beat("m1")
            try await Task.sleep(for: .seconds(3))
            #expect(await beat.stop() == 0)
            let stopped = try await f.redisTime()
            try await Task.sleep(for: .seconds(6))
            let restart = try await f.redisTime()
            beat = try f.beat("m2", skew: 20)
            try await Task.sleep(for: .seconds(3))
            #expect(await beat.stop() == 0, "\(beat.output.suffix(2000))")
            let messages = try await BeatMessage.read(f.queue, on: f.redis())
            for name in ["skipper", "oncer"] {
                let mine = messages.filter { $0.entry == name }
                let ticks = mine.compactMap(\.tick).sorted()
                #expect(Set(ticks).count == ticks.count, "\(name): \(ticks)")
                let last = ticks.filter { Double($0) <= stopped }.max() ?? 0
                let missed = mine.filter { t in t.tick.map { $0 > last && Double($0) < restart.rounded(.down) } ?? false }
                #expect(missed.isEmpty, "\(name) sent missed ticks: \(missed.map(\.tick))  (stopped \(stopped), restart \(restart))")
                let after = ticks.filter { Double($0) > stopped }
                #expect(after.count >= 2 && after.count <= 5, "\(name) after the restart: \(after)")
                // No burst: consecutive ticks after the restart.
                #expect(after.last.map { $0 - after.first! == after.count - 1 } ?? false, "\(name): \(after)")
                let marked = mine.filter { $0.misfire != nil }
                if name == "skipper" {
                    #expect(marked.isEmpty)
                    #expect(Double(after.first ?? 0) > restart, "skip: the first send is a regular tick after the restart: \(after)")
                } else {
                    #expect(marked.count == 1 && marked[0].tick == after.first, "run_once: one catch-up send: \(marked.map(\.tick)) / \(after)")
                }
            }
            #expect(beat.output.contains("skipped (misfire: skip)"))
            await server.stop()
        }

        /// Editing an entry's interval restarts it from now (no catch-up, even with run_once); an
        /// entry removed from tasks.yaml stops, and its state is removed.
        @Test func configChangeRestartsWithoutBurstAndRemovedEntryStops() async throws {
            let server = try await RedisServer.start()
            let f = try BeatFixture(server: server, schedules: """
                  a: {task: add, every: 1s, args: [1, 1], misfire: run_once}
                  b: {task: add, every: 1s, args: [3, 3]}

                """)
            var beat = try f.beat("c1")
            try await Task.sleep(for: .seconds(3))
            #expect(await beat.stop() == 0)
            try f.write("  a: {task: add, every: 2s, args: [1, 1], misfire: run_once}\n")
            let list = try await f.cli(["schedule", "list", "--json"])
            #expect(list.status == 0, "\(list.output)")
            let rows = try JSONValue(parsing: Array(list.output.utf8)).arrayValue ?? []
            #expect(rows.count == 1 && rows.first?["state"]?.stringValue == "changed" && rows.first?["count"]?.intValue == 0, "\(list.output)")
            try await Task.sleep(for: .seconds(5))
            let restart = try await f.redisTime()
            let lenBefore = try await f.redis().call("LLEN", f.queue).int ?? 0
            beat = try f.beat("c2")
            try await Task.sleep(for: .seconds(5))
            #expect(await beat.stop() == 0)
            let end = try await f.redisTime()
            let all = try await BeatMessage.read(f.queue, on: f.redis())
            let fresh = Array(all.prefix(all.count - lenBefore))   // LPUSH: newest first
            #expect(!fresh.contains { $0.entry == "b" }, "a removed entry still sent")
            let a = fresh.filter { $0.entry == "a" }.compactMap(\.tick).sorted()
            #expect(fresh.allSatisfy { $0.misfire == nil }, "a changed entry caught up: \(fresh.map(\.tick))")
            #expect(a.allSatisfy { $0 % 2 == 0 && Double($0) > restart && Double($0) <= end }, "a: \(a) (restart \(restart))")
            #expect(a.count >= 2 && a.count <= 3, "a: \(a)")
            #expect(try await f.redis().call("HGET", BeatStore.defKey, "b").isNull)
            #expect(try await f.redis().call("HGET", BeatStore.lastKey, "b").isNull)
            #expect(beat.output.contains("removed the state of schedules no longer in the manifest: b"))
            await server.stop()
        }

        /// `schedule list`/`run` output and exit codes; a Python Celery worker runs the scheduled
        /// messages (ordinary Celery messages), `limit` holds, a manual run is not counted.
        @Test func scheduleCommandsAndAPythonWorkerRunsScheduledMessages() async throws {
            let server = try await RedisServer.start()
            let f = try BeatFixture(server: server, schedules: """
                  pyadd: {task: pyapp.add, queue: pyq, every: 1s, args: [20, 22]}
                  nightly: {task: pyapp.add, queue: pyq, cron: "0 3 * * *", timezone: Europe/Paris, args: [0, 0]}
                  limited: {task: pyapp.add, queue: pyq, every: 1s, args: [1, 1], limit: 2}

                """)
            let fresh = try await f.cli(["schedule", "list"])
            #expect(fresh.status == 0, "\(fresh.output)")
            let lines = fresh.output.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
            #expect(lines.first == ["NAME", "TASK", "QUEUE", "SCHEDULE", "LAST", "NEXT", "COUNT"], "\(fresh.output)")
            // No beat yet: no last fire, the next one within a second, count 0 (of 2 for limited).
            #expect(lines.dropFirst().first?.prefix(5) == ["pyadd", "pyapp.add", "pyq", "every", "1s"] && lines.dropFirst().first?[5] == "-" && lines.dropFirst().first?.last == "0", "\(fresh.output)")
            #expect(lines.last?.first == "limited" && lines.last?.last == "0/2", "\(fresh.output)")
            let unknown = try await f.cli(["schedule", "run", "nope"])
            #expect(unknown.status == 2 && unknown.output.contains("no schedule named 'nope'") && unknown.output.contains("pyadd, nightly, limited"), "\(unknown.output)")
            let down = try await f.cli(["schedule", "list"], broker: "redis://127.0.0.1:\(RedisServer.freePort())/0")
            #expect(down.status == 4, "\(down.output)")
            let noBeat = try await ChildProcess.run(Paths.celerity, ["beat", "--manifest", f.manifest, "--broker", "redis://127.0.0.1:\(RedisServer.freePort())/0"])
            #expect(noBeat.status == 4 && noBeat.output.contains("cannot reach"), "\(noBeat.output)")

            let manual = try await f.cli(["schedule", "run", "pyadd"])
            #expect(manual.status == 0, "\(manual.output)")
            let manualID = manual.output.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(manualID.count == 36)

            let py = try ChildProcess(name: "py-beat-worker", executable: Paths.python3,
                                      arguments: ["-m", "celery", "-A", "py_worker_app", "worker", "-Q", "pyq", "--pool", "solo", "-c", "1",
                                                  "-n", "pybeat@%h", "--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "info"],
                                      environment: ["CELERITY_BROKER_URL": f.broker, "CELERITY_RESULT_BACKEND": f.broker],
                                      directory: Paths.root + "/interop")
            let beat = try f.beat("s1")
            try await Task.sleep(for: .seconds(4))
            #expect(await beat.stop() == 0)
            let list = try await f.cli(["schedule", "list", "--json"])
            #expect(list.status == 0)
            let rows = try JSONValue(parsing: Array(list.output.utf8)).arrayValue ?? []
            let pyadd = rows.first { $0["name"]?.stringValue == "pyadd" }, limited = rows.first { $0["name"]?.stringValue == "limited" }
            let count = pyadd?["count"]?.intValue ?? 0
            #expect(count >= 3 && count <= 5 && pyadd?["last"]?.stringValue != nil && pyadd?["last_manual_run"]?.stringValue != nil, "\(list.output)")
            #expect(limited?["count"]?.intValue == 2 && limited?["next"] == .null && limited?["last"]?.stringValue != nil, "\(list.output)")
            // Started, never sent: no last fire; the next one is 03:00 in Paris.
            let nightly = rows.first { $0["name"]?.stringValue == "nightly" }
            #expect(nightly?["last"] == .null && nightly?["state"]?.stringValue == "ok" && nightly?["count"]?.intValue == 0, "\(list.output)")
            #expect(["T02:00:00Z", "T01:00:00Z"].contains { nightly?["next"]?.stringValue?.hasSuffix($0) == true }, "\(list.output)")
            let table = try await f.cli(["schedule", "list"])
            #expect(table.output.contains("limited") && table.output.contains("2/2"), "\(table.output)")

            // The Python worker runs every one: the manual run and each tick.
            let r = try f.redis()
            let deadline = Date().addingTimeInterval(30)
            var succeeded = 0
            while Date() < deadline {
                let keys = try await r.call("KEYS", "celery-task-meta-*").array?.compactMap(\.string) ?? []
                succeeded = 0
                for k in keys {
                    if let doc = try await r.call("GET", k).bytes, let v = try? JSONValue(parsing: doc), v["status"]?.stringValue == "SUCCESS" { succeeded += 1 }
                }
                if succeeded >= count + 2 + 1 { break }
                try await Task.sleep(for: .milliseconds(200))
            }
            #expect(succeeded == count + 2 + 1, "results: \(succeeded), expected \(count) ticks + 2 limited + 1 manual\n\(py.output.suffix(3000))")
            let meta = try await r.call("GET", "celery-task-meta-" + manualID).bytes.flatMap { try? JSONValue(parsing: $0) }
            #expect(meta?["result"]?.intValue == 42, "\(String(describing: meta))")
            await py.stop(grace: 10)
            await server.stop()
        }

        /// `celerity worker -B` sends the schedules and runs them.
        @Test func workerDashBRunsABeat() async throws {
            let server = try await RedisServer.start()
            let f = try BeatFixture(server: server, schedules: "  w: {task: add, every: 1s, args: [5, 6]}\n")
            let worker = try ChildProcess(name: "worker-B", executable: Paths.celerity,
                                          arguments: ["worker", "-B", "-Q", f.queue, "-n", "wb@test", "-c", "1", "--manifest", f.manifest, "--broker", f.broker])
            try await Task.sleep(for: .seconds(4))
            #expect(await worker.stop() == 0, "\(worker.output.suffix(2000))")
            let r = try f.redis()
            let keys = try await r.call("KEYS", "celery-task-meta-*").array?.compactMap(\.string) ?? []
            var elevens = 0
            for k in keys {
                if let doc = try await r.call("GET", k).bytes, let v = try? JSONValue(parsing: doc), v["result"]?.intValue == 11 { elevens += 1 }
            }
            let count = try await r.call("HGET", BeatStore.countKey, "w").int ?? -1
            // Each one sent ran, or still waits in the queue (sent as the worker stopped).
            let waiting = try await r.call("LLEN", f.queue).int ?? 0
            #expect(count >= 3 && elevens + waiting == count && waiting <= 1, "sent \(count), ran \(elevens), waiting \(waiting)\n\(worker.output.suffix(2000))")
            await server.stop()
        }
        /// `celerity up` starts one beat beside its workers when the manifest has `schedules:`.
        @Test func upStartsABeat() async throws {
            let server = try await RedisServer.start()
            let f = try BeatFixture(server: server, schedules: "  u: {task: add, every: 1s, args: [5, 6]}\n")
            try (try String(contentsOfFile: f.manifest, encoding: .utf8) + "workers:\n  g: {queues: [\(f.queue)], concurrency: 1}\nbroker: \(f.broker)\n")
                .write(toFile: f.manifest, atomically: true, encoding: .utf8)
            let up = try ChildProcess(name: "up-beat", executable: Paths.celerity, arguments: ["up", "--manifest", f.manifest, "-l", "info"])
            try await Task.sleep(for: .seconds(5))
            #expect(await up.stop(grace: 20) == 0, "\(up.output.suffix(2000))")
            #expect(up.output.contains("[beat]") && up.output.contains("schedule u: sent add"), "\(up.output.suffix(2000))")
            let r = try f.redis()
            let count = try await r.call("HGET", BeatStore.countKey, "u").int ?? -1
            let keys = try await r.call("KEYS", "celery-task-meta-*").array?.compactMap(\.string) ?? []
            let waiting = try await r.call("LLEN", f.queue).int ?? 0
            #expect(count >= 2 && keys.count + waiting == count && waiting <= 1, "sent \(count), results \(keys.count), waiting \(waiting)\n\(up.output.suffix(2000))")
            await server.stop()
        }
    }
}
