@testable import Celerity
import Foundation
import RedisClient
import Testing

/// The worker's broker side alone against a real Redis (no worker).
struct WorkerBrokerTests {
    /// A sweep of a dead worker's list stops the moment its heartbeat is back: a stalled
    /// worker keeps what it still holds from its renewal on.
    @Test func aSweepMovesNothingOnceTheOwnersHeartbeatIsBack() async throws {
        let f = try BrokerFixture(try await sharedRedis.value, "fenced")
        let (node, queue, r) = (f.node, f.queue, f.redis)
        // The sweep runs as another worker would.
        let broker = WorkerBroker(url: f.broker.url, node: "sweeper@test")
        let m = f.message([1, 1])
        try await r.call("LPUSH", Keys.processing(node), m)
        try await r.call("SET", Keys.heartbeat(node), "{}", "EX", 10)
        let alive = try await broker.redeliverAll(from: Keys.processing(node), maxRedeliveries: 3, ownerHeartbeat: Keys.heartbeat(node))
        #expect(alive.requeued == 0 && alive.dead == 0)
        #expect(try await r.call("LLEN", Keys.processing(node)).int == 1)
        try await r.call("DEL", Keys.heartbeat(node))
        let dead = try await broker.redeliverAll(from: Keys.processing(node), maxRedeliveries: 3, ownerHeartbeat: Keys.heartbeat(node))
        #expect(dead.requeued == 1)
        #expect(try await r.call("LLEN", queue).int == 1)
        try await r.call("DEL", queue)
    }

    /// A dead worker's long list goes back whole and in order (the oldest fetch at the pop
    /// end), its poison pill dead-lettered in passing; the sweep is linear (pipelined moves,
    /// each LREM finding its message at the head), so 3,000 take well under the 10 s lock.
    @Test func aSweepOfALongListMovesEveryMessageInOrder() async throws {
        let f = try BrokerFixture(try await sharedRedis.value, "longsweep")
        let (node, queue, r) = (f.node, f.queue, f.redis)
        let broker = WorkerBroker(url: f.broker.url, node: "sweeper@test")
        let n = 3000
        var messages = (0..<n).map { f.message([.int($0), .int($0)]) }
        messages[1500] = TaskMessage.markRedelivered(messages[1500], count: 3)!   // a fourth delivery: poison
        let ids = try messages.map { try TaskMessage.decode($0).id }
        // As fetches leave them: each LMOVE puts the newest at the head.
        for s in stride(from: 0, to: n, by: 500) { _ = try await r.send(RedisCommand([Array("LPUSH".utf8), Array(Keys.processing(node).utf8)] + messages[s..<s + 500])) }
        let t0 = Date()
        let swept = try await broker.redeliverAll(from: Keys.processing(node), maxRedeliveries: 3, ownerHeartbeat: Keys.heartbeat(node))
        let took = Date().timeIntervalSince(t0)
        #expect(swept.requeued == n - 1 && swept.dead == 1)
        #expect(try await r.call("LLEN", Keys.processing(node)).int == 0)
        // The pop end (right) first: the oldest fetch, then on in fetch order.
        let back = try await r.call("LRANGE", queue, 0, -1).array!.reversed().compactMap(\.bytes)
        #expect(try back.map { try TaskMessage.decode($0).id } == ids.enumerated().filter { $0.offset != 1500 }.map(\.element))
        #expect(back.allSatisfy { TaskMessage.redeliveries(of: $0) == 1 })
        #expect(took < 5, "sweep of \(n) took \(took) s")
        try await r.call("DEL", queue, Keys.deadLetters)
    }
}
