@testable import Celerity
import Foundation
import Logging
import RedisClient
import Synchronization
import Testing

/// The stop watchdog alone against a real Redis: messages in a processing list, in-flight
/// entries with a task that would run for a minute, the time on a clock of the test's own.
struct StopWatchdogTests {
    static let logger = Logger(label: "stop-watchdog-test")

    /// A worker's side of the watchdog, without a worker.
    final class Rig: Sendable {
        let f: BrokerFixture
        let clock = VirtualClock()
        let stop: StopFlag
        let cold = Atomic<Bool>(false)
        let entries: Mutex<[InFlight]>

        init(_ name: String, grace: Double, messages: Int) async throws {
            f = try BrokerFixture(try await sharedRedis.value, name)
            let clock = clock
            stop = StopFlag(grace: grace, now: { clock.date })
            var list: [InFlight] = []
            for i in 0..<messages {
                let raw = f.message([.int(i), .int(i)])
                try await f.redis.call("LPUSH", f.broker.processingKey, raw)
                let entry = InFlight(raw: raw, taskID: "t\(i)", listKey: f.queue)
                entry.task.withLock { $0 = Task { try? await Task.sleep(for: .seconds(60)); return nil } }
                list.append(entry)
            }
            entries = Mutex(list)
        }

        var watchdog: StopWatchdog {
            StopWatchdog(broker: f.broker, stop: stop, isCold: { self.cold.load(ordering: .relaxed) },
                         inFlight: { self.entries.withLock { $0 } }, pools: { [] }, logger: StopWatchdogTests.logger)
        }
        var all: [InFlight] { entries.withLock { $0 } }
        func queued() async throws -> Int { try await f.redis.call("LLEN", f.queue).int ?? -1 }
        func processing() async throws -> Int { try await f.redis.call("LLEN", f.broker.processingKey).int ?? -1 }
        func cleanUp() async throws {
            for e in all { e.task.withLock { $0 }?.cancel() }
            try await f.redis.call("DEL", f.queue, f.broker.processingKey)
        }
    }

    @Test func aWarmStopHandsBackWhatStillRunsAtGraceExpiryAndNotBefore() async throws {
        let r = try await Rig("warm", grace: 5, messages: 2)
        // No stop requested: nothing to do.
        #expect(await r.watchdog.once(cancelled: false) == false)
        r.stop.request()
        #expect(await r.watchdog.once(cancelled: false) == false)
        r.clock.advance(by: .milliseconds(4900))
        #expect(await r.watchdog.once(cancelled: false) == false)
        #expect(try await r.queued() == 0)
        #expect(try await r.processing() == 2)
        #expect(r.all.allSatisfy { $0.fate.withLock { $0 } == .running && $0.task.withLock { $0 }?.isCancelled == false })
        // One is being settled when the grace runs out: too late to hand it back.
        r.all[1].fate.withLock { $0 = .settling }
        r.clock.advance(by: .milliseconds(200))
        #expect(await r.watchdog.once(cancelled: false) == true)
        #expect(try await r.queued() == 1)
        #expect(try await r.f.redis.call("LRANGE", r.f.queue, 0, -1).array?.compactMap(\.bytes) == [r.all[0].raw])
        #expect(try await r.f.redis.call("LRANGE", r.f.broker.processingKey, 0, -1).array?.compactMap(\.bytes) == [r.all[1].raw])
        #expect(r.all[0].fate.withLock { $0 } == .abandoned)
        #expect(r.all[0].task.withLock { $0 }?.isCancelled == true)
        #expect(r.all[1].fate.withLock { $0 } == .settling)
        #expect(r.all[1].task.withLock { $0 }?.isCancelled == false)
        try await r.cleanUp()
    }

    @Test func aWarmStopWithNothingLeftInFlightHandsNothingBack() async throws {
        let r = try await Rig("empty", grace: 5, messages: 1)
        r.stop.request()
        #expect(await r.watchdog.once(cancelled: false) == false)
        // The task finished (its entry is gone) well within the grace period.
        let gone = r.entries.withLock { e in defer { e.removeAll() }; return e[0] }
        #expect(await r.watchdog.once(cancelled: false) == true)
        #expect(try await r.queued() == 0)
        #expect(gone.fate.withLock { $0 } == .running)
        try await r.f.redis.call("DEL", r.f.broker.processingKey)
        gone.task.withLock { $0 }?.cancel()
    }

    @Test func aColdStopOrACancellationHandsBackAtOnce() async throws {
        let cold = try await Rig("cold", grace: 30, messages: 1)
        cold.stop.request()
        #expect(await cold.watchdog.once(cancelled: false) == false)
        cold.cold.store(true, ordering: .relaxed)
        #expect(await cold.watchdog.once(cancelled: false) == true)
        #expect(try await cold.queued() == 1)
        #expect(cold.all[0].fate.withLock { $0 } == .abandoned)
        try await cold.cleanUp()

        // Cancelled without a stop request: the whole worker is going away; the stop is
        // requested and it is cold.
        let cancelled = try await Rig("cancelled", grace: 30, messages: 1)
        #expect(await cancelled.watchdog.once(cancelled: true) == true)
        #expect(cancelled.stop.isRequested)
        #expect(try await cancelled.queued() == 1)
        #expect(try await cancelled.processing() == 0)
        #expect(cancelled.all[0].task.withLock { $0 }?.isCancelled == true)
        try await cancelled.cleanUp()
    }

    /// The loop: every 100 ms on the test's clock, a hand-back at 3 s and not a look before.
    @Test func theLoopHandsBackWhenTheGraceRunsOut() async throws {
        let r = try await Rig("loop", grace: 3, messages: 1)
        r.stop.request()
        let early = Mutex<[Duration]>([])
        let processingKey = r.f.broker.processingKey, redis = r.f.redis
        r.clock.onSleep { elapsed in
            // Each look before the grace ran out left the message where it was.
            if elapsed < .seconds(3), (try? await redis.call("LLEN", processingKey).int) != 1 { early.withLock { $0.append(elapsed) } }
        }
        await r.watchdog.run(clock: r.clock)
        #expect(early.withLock { $0 }.isEmpty)
        #expect(r.clock.elapsed >= .seconds(3) && r.clock.elapsed <= .milliseconds(3100))
        #expect(try await r.queued() == 1)
        #expect(r.all[0].fate.withLock { $0 } == .abandoned)
        try await r.cleanUp()
    }
}
