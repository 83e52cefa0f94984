@testable import Celerity
import Foundation
import Logging
import RedisClient
import Synchronization
import Testing

/// The `Revocations` duty alone against a real Redis: one round (`once`), no worker, no sleeping.
struct RevocationsTests {
    typealias Fixture = BrokerFixture
    static let logger = Logger(label: "revocations-test")

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
