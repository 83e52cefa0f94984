@testable import Celerity
import Foundation
import Logging
import RedisClient
import Synchronization
import Testing

/// The node-name claim alone against a real Redis: a heartbeat under the name written by the
/// test, the waiting on a clock of the test's own (no sleeping).
struct NodeClaimTests {
    static let logger = Logger(label: "node-claim-test")

    static func claim(_ f: BrokerFixture, ttl: Int = 10) -> NodeClaim {
        NodeClaim(node: f.node, ttl: ttl, logger: logger, isStopping: { false }, read: { try await f.broker.currentHeartbeat() })
    }

    static func heartbeat(_ f: BrokerFixture, host: String, pid: Int, at: Int = 0) async throws {
        let doc = JSONValue.object([JSONMember("node", .string(f.node)), JSONMember("host", .string(host)), JSONMember("pid", .int(pid)), JSONMember("at", .int(at))])
        try await f.redis.call("SET", Keys.heartbeat(f.node), doc.serializedBytes(), "EX", 60)
    }

    @Test func noHeartbeatIsClaimedAtOnce() async throws {
        let f = try BrokerFixture(try await sharedRedis.value, "claim-none")
        let clock = VirtualClock()
        try await Self.claim(f).claim(clock: clock)
        #expect(clock.elapsed == .zero)
    }

    /// This host, a process that no longer exists: a dead run of this worker, no waiting.
    @Test func aDeadProcessOnThisHostIsClaimedAtOnce() async throws {
        let f = try BrokerFixture(try await sharedRedis.value, "claim-dead")
        let gone = Process()
        gone.executableURL = URL(fileURLWithPath: "/bin/true")
        try gone.run()
        gone.waitUntilExit()   // reaped: its pid names no process
        try await Self.heartbeat(f, host: ProcessInfo.processInfo.hostName, pid: Int(gone.processIdentifier))
        let clock = VirtualClock()
        try await Self.claim(f).claim(clock: clock)
        #expect(clock.elapsed == .zero)
        // The same heartbeat from another host proves nothing: that one is waited for.
        #expect(!NodeClaim.isDeadRunOfThisHost(Array(#"{"host": "elsewhere", "pid": \#(gone.processIdentifier)}"#.utf8)))
        // Nor does a live process on this host.
        #expect(!NodeClaim.isDeadRunOfThisHost(Array(#"{"host": "\#(ProcessInfo.processInfo.hostName)", "pid": 1}"#.utf8)))
        try await f.redis.call("DEL", Keys.heartbeat(f.node))
    }

    /// Another worker renews its heartbeat (every 2 s, as a worker does): refused, with the
    /// advice to pick another name, at its first renewal.
    @Test func aHeartbeatBeingRenewedIsRefusedWithTheAdviceToRename() async throws {
        let f = try BrokerFixture(try await sharedRedis.value, "claim-alive")
        try await Self.heartbeat(f, host: "elsewhere", pid: 4242)
        let clock = VirtualClock()
        clock.onSleep { elapsed in
            if elapsed >= .seconds(2) { try? await Self.heartbeat(f, host: "elsewhere", pid: 4242, at: 2) }
        }
        do {
            try await Self.claim(f).claim(clock: clock)
            Issue.record("claimed the name of a live worker")
        } catch let e as WorkerError {
            #expect(e.message.contains("another worker named '\(f.node)' is alive"))
            #expect(e.message.contains("-n"))
        }
        #expect(clock.elapsed == .seconds(2))
        try await f.redis.call("DEL", Keys.heartbeat(f.node))
    }

    /// A heartbeat that is not renewed for its TTL + 1 s: that worker is dead; claimed then,
    /// not before.
    @Test func aHeartbeatNotRenewedBeforeItsTTLIsClaimedAfterTTLPlusOneSecond() async throws {
        let f = try BrokerFixture(try await sharedRedis.value, "claim-stale")
        try await Self.heartbeat(f, host: "elsewhere", pid: 4242)
        let clock = VirtualClock()
        let reads = Atomic<Int>(0)
        let claim = NodeClaim(node: f.node, ttl: 10, logger: Self.logger, isStopping: { false }) {
            reads.add(1, ordering: .relaxed)
            return try await f.broker.currentHeartbeat()
        }
        try await claim.claim(clock: clock)
        #expect(clock.elapsed == .seconds(11))
        #expect(reads.load(ordering: .relaxed) == 1 + 22)   // the first look, then one every 500 ms
        // Gone meanwhile (it expired): claimed at that look.
        let gone = VirtualClock()
        gone.onSleep { elapsed in
            if elapsed >= .seconds(3) { _ = try? await f.redis.call("DEL", Keys.heartbeat(f.node)) }
        }
        try await Self.heartbeat(f, host: "elsewhere", pid: 4242)
        try await Self.claim(f).claim(clock: gone)
        #expect(gone.elapsed == .seconds(3))
    }
}
