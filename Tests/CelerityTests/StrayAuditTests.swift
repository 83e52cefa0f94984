@testable import Celerity
import Foundation
import RedisClient
import Testing

/// The stray audit of a worker's processing list, alone against a real Redis (no worker).
struct StrayAuditTests {
    /// A message in the list and not in the ledger is handed back, unless a fetch that was
    /// under way when the list was read brings it: then the audit waits for that fetch.
    @Test func theAuditHandsBackStraysButWaitsForFetchesUnderWay() async throws {
        let f = try BrokerFixture(try await sharedRedis.value, "audit")
        let (node, queue, broker, r) = (f.node, f.queue, f.broker, f.redis)
        let audit = StrayAudit(broker: broker, logger: .init(label: "test"))
        let held = f.message([1, 1]), stray = f.message([2, 2]), inTransit = f.message([3, 3])
        // `held` came with a fetch whose reply was read; `stray` with one whose reply was lost.
        try await r.call("LPUSH", Keys.processing(node), held, stray)
        broker.held.endFetch(broker.held.beginFetch(), fetched: [held])
        #expect(try await audit.auditOnce() == 1)
        #expect(try await r.call("LRANGE", Keys.processing(node), 0, -1).array?.compactMap(\.bytes) == [held])
        #expect(try await r.call("LRANGE", queue, 0, -1).array?.compactMap(\.bytes) == [stray])
        // A fetch under way: Redis moved `inTransit`, its reply arrives 300 ms after the list is read.
        let ticket = broker.held.beginFetch()
        try await r.call("LPUSH", Keys.processing(node), inTransit)
        let late = Task {
            try await Task.sleep(for: .milliseconds(300))
            broker.held.endFetch(ticket, fetched: [inTransit])
        }
        let start = ContinuousClock.now
        #expect(try await audit.auditOnce() == 0)
        #expect(ContinuousClock.now - start >= .milliseconds(250))
        try await late.value
        #expect(try await r.call("LLEN", Keys.processing(node)).int == 2)
        // The same fetch, its reply lost: handed back once the fetch has failed.
        try await r.call("DEL", Keys.processing(node))
        broker.held.release([held, inTransit])   // acked
        let lost = broker.held.beginFetch()
        try await r.call("LPUSH", Keys.processing(node), inTransit)
        Task {
            try await Task.sleep(for: .milliseconds(200))
            broker.held.endFetch(lost, fetched: [])
        }
        #expect(try await audit.auditOnce() == 1)
        #expect(try await r.call("LLEN", Keys.processing(node)).int == 0)
        try await r.call("DEL", queue)
    }
}
