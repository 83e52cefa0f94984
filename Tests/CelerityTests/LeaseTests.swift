@testable import Celerity
import Testing

/// The lease a heartbeat renews, alone: times are given, nothing sleeps.
struct LeaseTests {
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
}
