@testable import Celerity
import Foundation
import Logging
import RedisClient
import Synchronization
import Testing

/// The `DelayedForwarder` duty alone against a real Redis: one round (`once`), no worker, no sleeping.
struct DelayedForwarderTests {
    typealias Fixture = BrokerFixture
    static let logger = Logger(label: "delayedforwarder-test")

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
}
