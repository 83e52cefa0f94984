@testable import Celerity
import Foundation
import Logging
import RedisClient
import Synchronization
import Testing

/// The `Recoverer` duty alone against a real Redis: a round at a time (`once`), no worker; rounds
/// repeat only while another test's sweep holds the recovery lock.
struct RecovererTests {
    typealias Fixture = BrokerFixture
    static let logger = Logger(label: "recoverer-test")

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
}
