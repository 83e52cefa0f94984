@testable import Celerity
import Foundation
import Logging
import RedisClient
import Synchronization
import Testing

/// The `Heartbeat` duty alone against a real Redis: one round (`once`), no worker, no sleeping.
struct HeartbeatTests {
    typealias Fixture = BrokerFixture
    static let logger = Logger(label: "heartbeat-test")

    @Test func aHeartbeatWritesItsDocumentWithItsTTLAndRenewsTheLease() async throws {
        let f = try Fixture(try await sharedRedis.value, "hb")
        let lease = Lease()
        let hb = Heartbeat(broker: f.broker, lease: lease, ttl: 10, interval: .seconds(2), alarm: DutyAlarm(), logger: Self.logger) {
            .object([JSONMember("node", .string(f.node))])
        }
        #expect(lease.current() == nil)
        #expect(await hb.once() == nil)
        #expect(lease.current() != nil)
        let doc = try await f.redis.call("GET", Keys.heartbeat(f.node)).bytes.map { try JSONValue(parsing: $0) }
        #expect(doc?["node"]?.stringValue == f.node)
        let ttl = try await f.redis.call("TTL", Keys.heartbeat(f.node)).int ?? 0
        #expect(ttl > 8 && ttl <= 10)
        #expect(try await f.redis.call("SISMEMBER", Keys.workers, f.node).int == 1)
        try await f.redis.call("DEL", Keys.heartbeat(f.node))
        try await f.redis.call("SREM", Keys.workers, f.node)
    }
}
