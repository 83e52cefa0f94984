import Celerity
import Foundation
import RedisClient
import Testing

/// The Inspector against a Redis of its own, holding crafted state: every number it reports.
@Suite(.timeLimit(.minutes(1)))
struct InspectorTests {
    /// A fixed "now", whole in microseconds, so dates survive the JSON round trip exactly.
    static let now = Date(timeIntervalSince1970: 1_900_000_000.5)

    static func message(_ task: String, queue: String, priority: Int = 0, eta: Date? = nil) -> (id: String, raw: [UInt8]) {
        let m = TaskMessage(task: task, args: [1, 2], queue: queue, priority: priority, eta: eta)
        return (m.id, m.encode())
    }

    static func entry(queue: String, reason: String, at: Date) -> [UInt8] {
        JSONValue.object([
            JSONMember("id", .string(UUID().uuidString.lowercased())), JSONMember("queue", .string(queue)),
            JSONMember("reason", .string(reason)), JSONMember("worker", "w@h"), JSONMember("at", .string(CeleryDate.format(at))),
            JSONMember("message", "{}"),
        ]).serializedBytes()
    }

    @Test func reportsEveryNumberOfACraftedBroker() async throws {
        let server = try await RedisServer.start()
        let redis = try Redis(server.url, label: "crafted")
        let now = InspectorTests.now
        let t = now.timeIntervalSince1970

        // Queue qa: 2 on the main list, 1 on priority 3 (with an eta), 3 on priority 9.
        // The main list's pop end (right) is the first pushed, marked redelivered twice.
        let first = InspectorTests.message("t.a", queue: "qa")
        let second = InspectorTests.message("t.a", queue: "qa")
        let eta = Date(timeIntervalSince1970: t + 30)
        let p3 = InspectorTests.message("t.later", queue: "qa", priority: 4, eta: eta)
        var cmds = [RedisCommand("LPUSH", "qa", TaskMessage.markRedelivered(first.raw, count: 2)!),
                    RedisCommand("LPUSH", "qa", second.raw),
                    RedisCommand("LPUSH", Keys.queue("qa", priority: 4), p3.raw)]
        for _ in 0..<3 { cmds.append(RedisCommand("LPUSH", Keys.queue("qa", priority: 9), InspectorTests.message("t.a", queue: "qa", priority: 9).raw)) }
        // Queue qc (only a live worker names it): one unreadable message.
        cmds.append(RedisCommand("LPUSH", "qc", "not a message"))
        // A live worker, beat 1.5 s ago, holding 2; a dead one (known, no heartbeat) holding 3.
        let beat = JSONValue.object([
            JSONMember("node", "n1@h"), JSONMember("pid", 4242), JSONMember("host", "h"), JSONMember("queues", ["qa", "qc"]),
            JSONMember("concurrency", 4), JSONMember("active", 1), JSONMember("processed", 17),
            JSONMember("started", .string(CeleryDate.format(Date(timeIntervalSince1970: t - 100)))),
            JSONMember("at", .string(CeleryDate.format(Date(timeIntervalSince1970: t - 1.5)))),
        ])
        cmds += [RedisCommand("SET", Keys.heartbeat("n1@h"), beat.serializedBytes(), "EX", 10), RedisCommand("SADD", Keys.workers, "n1@h", "n2@h")]
        for i in 0..<2 { cmds.append(RedisCommand("LPUSH", Keys.processing("n1@h"), "held-\(i)")) }
        for i in 0..<3 { cmds.append(RedisCommand("LPUSH", Keys.processing("n2@h"), "stranded-\(i)")) }
        // Delayed: one overdue (the next due, for qa's priority-3 list), one in an hour.
        cmds.append(RedisCommand("ZADD", Keys.delayed, t - 5, Array(Keys.queue("qa", priority: 3).utf8) + [0] + p3.raw))
        cmds.append(RedisCommand("ZADD", Keys.delayed, t + 3600, Array("qb".utf8) + [0] + second.raw))
        // Dead letters, newest last pushed: 2 of qa, 1 of a queue with a quote (not matched by
        // the script's pattern, decoded instead), 1 that is not JSON at all.
        cmds.append(RedisCommand("LPUSH", Keys.deadLetters, "garbage"))
        cmds.append(RedisCommand("LPUSH", Keys.deadLetters, InspectorTests.entry(queue: "q\"x", reason: "odd", at: Date(timeIntervalSince1970: t - 60))))
        cmds.append(RedisCommand("LPUSH", Keys.deadLetters, InspectorTests.entry(queue: "qa", reason: "old", at: Date(timeIntervalSince1970: t - 50))))
        cmds.append(RedisCommand("LPUSH", Keys.deadLetters, InspectorTests.entry(queue: "qa", reason: "poison pill", at: Date(timeIntervalSince1970: t - 10))))
        // Revoked: 2 live, 1 expired; terminate: 1 live.
        cmds += [RedisCommand("ZADD", Keys.revoked, t + 100, "r1", t + 200, "r2", t - 1, "r3"), RedisCommand("ZADD", Keys.revokedTerminate, t + 100, "r1")]
        for r in try await redis.pipeline(cmds) { try r.throwingError() }

        let manifest = try Manifest.parse("""
        tasks:
          t.a: {queue: qa, builtin: add}
        workers:
          g: {queues: [qa, qb]}
        """, baseDirectory: NSTemporaryDirectory())
        let s = try await Inspector(broker: server.url, manifest: manifest).snapshot(now: now)

        #expect(s.at == now)
        #expect(s.broker == "redis://127.0.0.1:\(server.port)/0")
        #expect(s.queues.map(\.name) == ["qa", "qb", "qc"])
        let qa = try #require(s.queue("qa"))
        #expect(qa.depth == 6)
        #expect(qa.lists.map(\.priority) == [0, 3, 6, 9])
        #expect(qa.lists.map(\.depth) == [2, 1, 0, 3])
        #expect(qa.lists.map(\.key) == Keys.priorityQueues("qa"))
        #expect(qa.sources == ["manifest", "worker"])
        #expect(qa.consumers == ["n1@h"])
        #expect(qa.oldestAge == nil)
        #expect(qa.next?.id == first.id)
        #expect(qa.next?.task == "t.a")
        #expect(qa.next?.redeliveries == 2)
        #expect(qa.lists[1].next?.id == p3.id)
        #expect(qa.lists[1].next?.eta == eta)
        #expect(qa.lists[1].next?.bytes == p3.raw.count)
        #expect(qa.lists[2].next == nil)
        let qb = try #require(s.queue("qb"))
        #expect(qb.depth == 0 && qb.consumers.isEmpty && qb.sources == ["manifest"] && qb.next == nil)
        let qc = try #require(s.queue("qc"))
        #expect(qc.depth == 1 && qc.sources == ["worker"])
        #expect(qc.next == Inspector.MessageInfo(id: nil, task: nil, eta: nil, retries: 0, redeliveries: 0, bytes: 13))

        #expect(s.workers.map(\.node) == ["n1@h", "n2@h"])
        let n1 = try #require(s.worker("n1@h"))
        #expect(n1.alive && n1.inFlight == 2 && n1.sinceBeat == 1.5)
        #expect((n1.expiresIn ?? 0) > 8 && (n1.expiresIn ?? 99) <= 10)
        #expect(n1.heartbeat == Inspector.Heartbeat(node: "n1@h", pid: 4242, host: "h", queues: ["qa", "qc"], concurrency: 4, active: 1, processed: 17,
                                                    started: Date(timeIntervalSince1970: t - 100), at: Date(timeIntervalSince1970: t - 1.5)))
        let n2 = try #require(s.worker("n2@h"))
        #expect(!n2.alive && n2.inFlight == 3 && n2.heartbeat == nil && n2.sinceBeat == nil && n2.expiresIn == nil)

        #expect(s.delayed == Inspector.DelayedInfo(count: 2, overdue: 1, nextDue: Date(timeIntervalSince1970: t - 5), nextQueue: "qa"))
        #expect(s.deadLetters.count == 4)
        #expect(s.deadLetters.byQueue == [.init(queue: "qa", count: 2), .init(queue: "", count: 1), .init(queue: "q\"x", count: 1)])
        #expect(s.deadLetters.newestAt == Date(timeIntervalSince1970: t - 10))
        #expect(s.deadLetters.newestReason == "poison pill")
        #expect(s.revoked == Inspector.RevokedInfo(count: 3, live: 2, terminate: 1, terminateLive: 1))

        // --queue: only those, in that order, even one nobody named.
        let only = try await Inspector(broker: server.url, manifest: manifest).snapshot(queues: ["qc", "zz"], now: now)
        #expect(only.queues.map(\.name) == ["qc", "zz"])
        #expect(only.queues.map(\.sources) == [["option"], ["option"]])
        #expect(only.queue("zz")?.depth == 0)

        // Without the per-queue count of dead letters: nil, the rest as before.
        var cheap = try Inspector(broker: server.url, manifest: manifest)
        cheap.countDeadLettersByQueue = false
        let c = try await cheap.snapshot(now: now)
        #expect(c.deadLetters.byQueue == nil && c.deadLetters.count == 4 && c.revoked == s.revoked && c.queues == s.queues)

        // The JSON document: snake_case, dates as Celery writes them, oldest_age an explicit
        // null, and it reads back to the same snapshot.
        let json = try s.json()
        let text = String(decoding: json, as: UTF8.self)
        #expect(text.contains("\"in_flight\" : 2"))
        #expect(text.contains("\"oldest_age\" : null"))
        #expect(text.contains("\"next_due\" : \"\(CeleryDate.format(Date(timeIntervalSince1970: t - 5)))\""))
        #expect(try Inspector.Snapshot(json: json) == s)

        // Nothing was written: the same keys, the same lengths.
        #expect(try await redis.call("DBSIZE").int == 12)
        #expect(try await redis.call("LLEN", Keys.processing("n2@h")).int == 3)
        await server.stop()
    }

    /// An empty broker: no queues without a manifest, no workers, all zero.
    @Test func anEmptyBrokerReportsZeros() async throws {
        let server = try await RedisServer.start()
        let s = try await Inspector(broker: server.url).snapshot()
        #expect(s.queues.isEmpty && s.workers.isEmpty)
        #expect(s.delayed == Inspector.DelayedInfo(count: 0, overdue: 0, nextDue: nil, nextQueue: nil))
        #expect(s.deadLetters == Inspector.DeadLetterInfo(count: 0, byQueue: [], newestAt: nil, newestReason: nil))
        #expect(s.revoked == Inspector.RevokedInfo(count: 0, live: 0, terminate: 0, terminateLive: 0))
        await server.stop()
    }

    @Test func anUnreachableBrokerThrowsAConnectionError() async throws {
        let inspector = try Inspector(broker: "redis://127.0.0.1:\(RedisServer.freePort())/0")
        await #expect(throws: RedisError.self) { try await inspector.snapshot() }
    }
}
