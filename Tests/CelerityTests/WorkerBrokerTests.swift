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
}
