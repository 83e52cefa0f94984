@testable import Celerity
import Foundation
import Logging
import RedisClient
import Synchronization
import Testing

/// The worker's background duties, each alone against a real Redis: one round (`once`), no
/// worker, no sleeping.
struct DutiesTests {
    typealias Fixture = BrokerFixture
    static let logger = Logger(label: "duties-test")

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

    @Test func theDelayedForwarderMovesOnlyDueMessagesAndNothingWhileStopping() async throws {
        let f = try Fixture(try await sharedRedis.value, "delayed")
        let due = f.message([1, 1]), later = f.message([2, 2])
        let now = Date().timeIntervalSince1970
        try await f.redis.call("ZADD", Keys.delayed, now - 1, Array(f.queue.utf8) + [0] + due, now + 3600, Array(f.queue.utf8) + [0] + later)
        let stopping = Atomic<Bool>(true)
        let forwarder = DelayedForwarder(broker: f.broker, interval: .milliseconds(250), alarm: DutyAlarm(), logger: Self.logger,
                                         isStopping: { stopping.load(ordering: .relaxed) })
        _ = await forwarder.once()
        #expect(try await f.redis.call("LLEN", f.queue).int == 0)
        stopping.store(false, ordering: .relaxed)
        #expect(await forwarder.once() == nil)
        #expect(try await f.redis.call("LRANGE", f.queue, 0, -1).array?.compactMap(\.bytes) == [due])
        #expect(try await f.redis.call("ZSCORE", Keys.delayed, Array(f.queue.utf8) + [0] + later).bytes != nil)
        try await f.redis.call("ZREM", Keys.delayed, Array(f.queue.utf8) + [0] + later)
        try await f.redis.call("DEL", f.queue)
    }

    @Test func theRecovererHandsBackADeadWorkersMessagesAndLeavesALiveOnesAlone() async throws {
        let f = try Fixture(try await sharedRedis.value, "recover")
        let dead = "dead-\(UUID().uuidString.prefix(8))@test", alive = "alive-\(UUID().uuidString.prefix(8))@test"
        let m1 = f.message([1, 1]), m2 = f.message([2, 2])
        try await f.redis.call("SADD", Keys.workers, dead, alive)
        try await f.redis.call("LPUSH", Keys.processing(dead), m1)
        try await f.redis.call("LPUSH", Keys.processing(alive), m2)
        try await f.redis.call("SET", Keys.heartbeat(alive), "{}", "EX", 10)
        let recoverer = Recoverer(broker: f.broker, maxRedeliveries: 3, interval: .seconds(2), alarm: DutyAlarm(), logger: Self.logger, isStopping: { false })
        // Another sweep may hold the lock (a worker of another test): try a few rounds.
        for _ in 0..<50 where try await f.redis.call("LLEN", Keys.processing(dead)).int != 0 {
            _ = await recoverer.once()
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(try await f.redis.call("LLEN", Keys.processing(dead)).int == 0)
        #expect(try await f.redis.call("LLEN", f.queue).int == 1)   // m1, marked redelivered
        #expect(try await f.redis.call("LRANGE", Keys.processing(alive), 0, -1).array?.compactMap(\.bytes) == [m2])
        try await f.redis.call("DEL", f.queue, Keys.processing(alive), Keys.heartbeat(alive))
        try await f.redis.call("SREM", Keys.workers, dead, alive)
    }

    @Test func revocationsAreReadAndTheOnesToTerminateHandedOver() async throws {
        let f = try Fixture(try await sharedRedis.value, "revoke")
        let plain = UUID().uuidString.lowercased(), kill = UUID().uuidString.lowercased(), old = UUID().uuidString.lowercased()
        let later = Date().timeIntervalSince1970 + 3600
        try await f.redis.call("ZADD", Keys.revoked, later, plain, later, kill, 1, old)
        try await f.redis.call("ZADD", Keys.revokedTerminate, later, kill)
        let revocations = Revocations(broker: f.broker, alarm: DutyAlarm(), logger: Self.logger)
        let terminated = Mutex<Set<String>>([])
        revocations.onTerminate { ids in terminated.withLock { $0.formUnion(ids) } }
        #expect(!revocations.contains(plain))
        _ = await revocations.once()
        #expect(revocations.contains(plain) && revocations.contains(kill))
        #expect(!revocations.contains(old))   // expired: pruned
        #expect(terminated.withLock { $0.contains(kill) && !$0.contains(plain) })
        #expect(try await f.redis.call("ZSCORE", Keys.revoked, old).bytes == nil)
        try await f.redis.call("ZREM", Keys.revoked, plain, kill)
        try await f.redis.call("ZREM", Keys.revokedTerminate, kill)
    }
}
