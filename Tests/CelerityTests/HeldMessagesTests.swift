@testable import Celerity
import Foundation
import RedisClient
import Testing

/// The ledger of held messages, the lease and the stray audit, each alone (no worker).
struct HeldMessagesTests {
    @Test func theLeaseLapsesAtItsEndAndARenewalAfterALapseStartsANewGeneration() {
        let lease = Lease(margin: .seconds(1))
        let t0 = ContinuousClock.now
        #expect(lease.current(now: t0) == nil)   // never renewed
        lease.renewed(sentAt: t0, ttl: .seconds(10))
        let g1 = lease.generation
        #expect(lease.current(now: t0 + .seconds(8)) == g1)
        #expect(lease.current(now: t0 + .seconds(9)) == nil)   // ttl less the margin
        // Renewed in time: the same generation, a later end.
        lease.renewed(sentAt: t0 + .seconds(5), ttl: .seconds(10))
        #expect(lease.generation == g1)
        #expect(lease.current(now: t0 + .seconds(13)) == g1)
        // Renewed after a lapse: a new generation; messages fetched before it must be checked.
        lease.renewed(sentAt: t0 + .seconds(30), ttl: .seconds(10))
        #expect(lease.generation == g1 + 1)
        #expect(lease.current(now: t0 + .seconds(31)) == g1 + 1)
    }

    @Test func theLedgerCountsCopiesAndForgetsOnlyWhatItIsTold() {
        let held = HeldMessages()
        let a = Array("message a".utf8), b = Array("message b".utf8)
        let t = held.beginFetch()
        #expect(held.anyOutstanding([t]))
        held.endFetch(t, fetched: [a, a, b])
        #expect(!held.anyOutstanding([t]))
        #expect(held.counts([HeldMessages.key(a), HeldMessages.key(b)]) == [HeldMessages.key(a): 2, HeldMessages.key(b): 1])
        held.release(a)
        held.release([b, b])   // a second release of b is a no-op
        #expect(held.counts([HeldMessages.key(a), HeldMessages.key(b)]) == [HeldMessages.key(a): 1, HeldMessages.key(b): 0])
        #expect(held.count == 1)
    }

    @Test func keysTellApartEnvelopesThatDifferOnlyInTheirDeliveryTag() {
        let body = String(repeating: "x", count: 600)
        let one = Array("{\"body\": \"\(body)\", \"properties\": {\"delivery_tag\": \"\(UUID().uuidString)\"}}".utf8)
        let two = Array("{\"body\": \"\(body)\", \"properties\": {\"delivery_tag\": \"\(UUID().uuidString)\"}}".utf8)
        #expect(HeldMessages.key(one) != HeldMessages.key(two))
        #expect(HeldMessages.key(one) == HeldMessages.key(Array(one)))
    }

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
