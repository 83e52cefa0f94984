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

    /// Extreme numbers from a control command are clamped, never a trap that kills the worker.
    @Test func extremeValuesAreClampedNotFatal() {
        let s = RuntimeSettings(concurrency: 2, queues: ["a"])
        #expect(s.resize(by: Int.max) == RuntimeSettings.maxConcurrency - 2 && s.concurrency == RuntimeSettings.maxConcurrency)
        #expect(s.resize(by: Int.min + 1) == 1 - RuntimeSettings.maxConcurrency && s.concurrency == 1)
    }

    @Test func limitsAndQueuesChangeAndTheHotPathFlagFollows() {
        let s = RuntimeSettings(concurrency: 2, queues: ["a"])
        let flag = { s.hasTaskOverrides.load(ordering: .relaxed) }
        #expect(!flag())
        s.setTimeLimits("t", .init(hard: 1, soft: nil))
        #expect(flag() && s.timeLimits(for: "t") == .init(hard: 1, soft: nil) && s.overrides("t") && !s.overrides("u"))
        #expect(s.resize(by: 3) == 3 && s.concurrency == 5)
        #expect(s.resize(by: -10) == -4 && s.concurrency == 1)
        guard case let .added(b) = s.addQueue("b") else { Issue.record("b not added"); return }
        guard case .already = s.addQueue("b") else { Issue.record("b added twice"); return }
        #expect(s.queues == ["a", "b"])
        #expect(s.cancelQueue("b") && b.isCancelled && !s.cancelQueue("b") && s.queues == ["a"])
    }

    /// Pausing cancels a consumed queue's consumer and keeps the queue; resuming makes a new
    /// consumer; a queue added while paused gets one only at its resume.
    @Test func pausedQueuesStayConsumedWithoutAConsumerUntilResumed() {
        let s = RuntimeSettings(concurrency: 2, queues: ["a", "b"])
        let a = s.consumers[0]
        var change = s.setPaused(["a", "elsewhere"])
        #expect(change.paused == ["a"] && change.resumed.isEmpty && a.isCancelled)
        #expect(s.queues == ["a", "b"] && s.pausedQueues == ["a"] && s.consumers.map(\.name) == ["b"])
        // The same set again changes nothing.
        change = s.setPaused(["a", "elsewhere"])
        #expect(change.paused.isEmpty && change.resumed.isEmpty)
        // add_consumer of a paused queue: consumed, no consumer yet.
        guard case .addedPaused = s.addQueue("elsewhere") else { Issue.record("elsewhere should be added paused"); return }
        #expect(s.queues == ["a", "b", "elsewhere"] && s.pausedQueues == ["a", "elsewhere"])
        change = s.setPaused([])
        #expect(change.paused.isEmpty && change.resumed.map(\.name) == ["a", "elsewhere"])
        #expect(change.resumed.allSatisfy { !$0.isCancelled } && s.pausedQueues.isEmpty && s.consumers.count == 3)
        // cancel_consumer of a paused queue removes it; resuming it later starts nothing.
        _ = s.setPaused(["b"])
        #expect(s.cancelQueue("b") && s.queues == ["a", "elsewhere"])
        #expect(s.setPaused([]).resumed.isEmpty)
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
