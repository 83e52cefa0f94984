import Foundation
import Testing
@testable import Celerity

/// The state behind the run-time remote-control commands (Worker/RuntimeSettings.swift).
@Suite struct RuntimeSettingsTests {
    @Test func celeryRateStringsAreTasksPerSecond() throws {
        #expect(try RateLimitParser.perSecond(.string("10/s")) == 10)
        #expect(try RateLimitParser.perSecond(.string("30/m")) == 0.5)
        #expect(try RateLimitParser.perSecond(.string("36/h")) == 0.01)
        #expect(try RateLimitParser.perSecond(.string("4")) == 4)
        #expect(try RateLimitParser.perSecond(.int(7)) == 7)
        #expect(try RateLimitParser.perSecond(.null) == 0)
        #expect(try RateLimitParser.perSecond(.string("")) == 0)
        #expect(throws: RateLimitParser.Failure.notANumber("ten")) { try RateLimitParser.perSecond(.string("ten/s")) }
        #expect(throws: RateLimitParser.Failure.unknownUnit("d")) { try RateLimitParser.perSecond(.string("1/d")) }
    }

    /// Capacity 1, as Celery's buckets: the first start at once, then one per interval.
    @Test func aBucketSpacesStartsByItsInterval() {
        let b = TokenBucket(perSecond: 2)
        let now = ContinuousClock.now
        #expect(b.reserve(now: now) == now)
        #expect(b.reserve(now: now) == now + .milliseconds(500))
        #expect(b.reserve(now: now) == now + .seconds(1))
        // Idle long enough: at once again (no burst saved up).
        let later = now + .seconds(10)
        #expect(b.reserve(now: later) == later)
        #expect(b.reserve(now: later) == later + .milliseconds(500))
    }

    /// Extreme numbers from a control command are clamped, never a trap that kills the worker.
    @Test func extremeValuesAreClampedNotFatal() {
        let s = RuntimeSettings(concurrency: 2, queues: ["a"])
        #expect(s.resize(by: Int.max) == RuntimeSettings.maxConcurrency - 2 && s.concurrency == RuntimeSettings.maxConcurrency)
        #expect(s.resize(by: Int.min + 1) == 1 - RuntimeSettings.maxConcurrency && s.concurrency == 1)
        let slow = TokenBucket(perSecond: 1e-300)
        let now = ContinuousClock.now
        #expect(slow.reserve(now: now) == now)
        #expect(slow.reserve(now: now) > now + .seconds(86_400 * 364))
    }

    @Test func limitsAndQueuesChangeAndTheHotPathFlagFollows() {
        let s = RuntimeSettings(concurrency: 2, queues: ["a"])
        let flag = { s.hasTaskOverrides.load(ordering: .relaxed) }
        #expect(!flag())
        s.setRateLimit("t", perSecond: 1)
        let old = s.bucket(for: "t")
        #expect(old != nil && flag())
        s.setRateLimit("t", perSecond: 0)
        #expect(old!.isRetired && s.bucket(for: "t") == nil && !flag())
        s.setTimeLimits("t", .init(hard: 1, soft: nil))
        #expect(s.timeLimits(for: "t") == .init(hard: 1, soft: nil) && s.overrides("t") && !s.overrides("u"))
        #expect(s.resize(by: 3) == 3 && s.concurrency == 5)
        #expect(s.resize(by: -10) == -4 && s.concurrency == 1)
        let b = s.addQueue("b")
        #expect(b != nil && s.addQueue("b") == nil && s.queues == ["a", "b"])
        #expect(s.cancelQueue("b") && b!.isCancelled && !s.cancelQueue("b") && s.queues == ["a"])
    }

    @Test func shrinkingSlotsIsADebtPaidBackBeforeAnyoneGetsOne() async {
        let slots = Slots(2)
        #expect(await slots.acquire(upTo: 2) == 2)
        slots.shrink(1)
        slots.release()
        #expect(!slots.tryAcquire())   // the first release paid the debt
        slots.release()
        #expect(slots.tryAcquire())
    }
}
