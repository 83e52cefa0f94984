import Foundation
import Synchronization

/// What remote control changes in a running worker (Control/Worker+RuntimeControl.swift):
/// its concurrency (`pool_grow`, `pool_shrink`), the queues it consumes (`add_consumer`,
/// `cancel_consumer`; and which of them are paused cluster-wide, `QueuePauses`), and per-task
/// time limits (`time_limit`). Rate limits are global
/// (`TaskGate`): `rate_limit` changes them in Redis.
///
/// The hot path reads at most one relaxed atomic of it per message (`hasTaskOverrides`),
/// and only when that is set looks further.
final class RuntimeSettings: Sendable {
    /// Execution slots now (`-c`, then grown or shrunk).
    private let concurrencyNow: Atomic<Int>
    /// Serialises grow and shrink (two requests may be handled at once).
    private let resizing = Mutex(())
    private let consuming: Mutex<QueueState>
    /// Set while any task has a time-limit override.
    let hasTaskOverrides = Atomic<Bool>(false)
    private let overrides = Mutex(Overrides())

    struct TimeLimits: Sendable, Equatable {
        var hard: Double?
        var soft: Double?
    }
    private struct Overrides {
        var timeLimits: [String: TimeLimits] = [:]
        var isEmpty: Bool { timeLimits.isEmpty }
    }

    init(concurrency: Int, queues: [String]) {
        concurrencyNow = Atomic(concurrency)
        consuming = Mutex(QueueState(list: queues.map { Consumed(name: $0, consumer: QueueConsumer($0)) }))
    }

    // MARK: - Concurrency

    var concurrency: Int { concurrencyNow.load(ordering: .relaxed) }
    /// The most `pool_grow` reaches (a huge n must not overflow the counts).
    static let maxConcurrency = 100_000

    /// Changes the concurrency by `delta`, never below 1; returns the change made.
    func resize(by delta: Int) -> Int {
        resizing.withLock { _ in
            let now = concurrencyNow.load(ordering: .relaxed)
            let (sum, overflow) = now.addingReportingOverflow(delta)
            let new = overflow ? (delta > 0 ? Self.maxConcurrency : 1) : min(max(1, sum), Self.maxConcurrency)
            concurrencyNow.store(new, ordering: .relaxed)
            return new - now
        }
    }

    // MARK: - Queues

    /// The queues this worker is asked to consume (`-Q`, then `add_consumer`/`cancel_consumer`),
    /// in the order they were added, each with the consumer whose fetch loops run for it now;
    /// nil while the queue is paused cluster-wide (`celerity:paused`, `QueuePause`). Pausing
    /// cancels the consumer (its fetch loops end as after `cancel_consumer`); resuming gives the
    /// queue a new one. The queue stays in this list either way, so that resume brings it back.
    private struct Consumed {
        var name: String
        var consumer: QueueConsumer?
    }
    private struct QueueState {
        var list: [Consumed]
        /// The paused queues as last read from Redis (all of them, consumed here or not).
        var paused: Set<String> = []
    }

    /// The queues this worker is asked to consume, in the order they were added (paused ones too).
    var queues: [String] { consuming.withLock { $0.list.map(\.name) } }

    /// Those of `queues` that are paused cluster-wide (not fetched from), in the same order.
    var pausedQueues: [String] { consuming.withLock { $0.list.filter { $0.consumer == nil }.map(\.name) } }

    /// The consumers whose fetch loops run now (paused queues have none).
    var consumers: [QueueConsumer] { consuming.withLock { $0.list.compactMap(\.consumer) } }

    func isConsuming(_ queue: String) -> Bool { consuming.withLock { $0.list.contains { $0.name == queue } } }

    enum Added {
        /// Consumed now: start the fetch loops of this consumer.
        case added(QueueConsumer)
        /// Consumed, but paused cluster-wide: its fetch loops start when it is resumed.
        case addedPaused
        /// It was consumed already: nothing changes.
        case already
    }

    /// Adds `queue` to the queues consumed.
    func addQueue(_ queue: String) -> Added {
        consuming.withLock { s in
            guard !s.list.contains(where: { $0.name == queue }) else { return .already }
            if s.paused.contains(queue) {
                s.list.append(Consumed(name: queue, consumer: nil))
                return .addedPaused
            }
            let c = QueueConsumer(queue)
            s.list.append(Consumed(name: queue, consumer: c))
            return .added(c)
        }
    }

    /// Stops consuming `queue` (its fetch loops end after their fetch under way); false when
    /// it was not consumed.
    func cancelQueue(_ queue: String) -> Bool {
        let gone = consuming.withLock { s -> Consumed? in
            guard let i = s.list.firstIndex(where: { $0.name == queue }) else { return nil }
            return s.list.remove(at: i)
        }
        gone?.consumer?.cancel()
        return gone != nil
    }

    /// What `setPaused` changed here.
    struct PauseChange {
        /// Consumed queues that were fetched from and are paused now (their consumers cancelled).
        var paused: [String] = []
        /// Consumed queues that were paused and are not any more: new consumers, whose fetch
        /// loops the caller starts.
        var resumed: [QueueConsumer] = []
    }

    /// The queues paused cluster-wide are now `paused` (the whole set, as read from Redis):
    /// cancels the consumers of the consumed queues among them, and makes new consumers for
    /// the consumed queues no longer among them. Nothing changes for a queue whose state did
    /// not (the usual case: an empty change, no allocation but the set's).
    func setPaused(_ paused: Set<String>) -> PauseChange {
        consuming.withLock { s in
            var change = PauseChange()
            s.paused = paused
            for i in s.list.indices {
                let name = s.list[i].name
                if paused.contains(name) {
                    if let c = s.list[i].consumer {
                        c.cancel()
                        s.list[i].consumer = nil
                        change.paused.append(name)
                    }
                } else if s.list[i].consumer == nil {
                    let c = QueueConsumer(name)
                    s.list[i].consumer = c
                    change.resumed.append(c)
                }
            }
            return change
        }
    }

    // MARK: - Rate and time limits

    /// Celery's `time_limit`: replaces both limits of `task` (nil clears one).
    func setTimeLimits(_ task: String, _ limits: TimeLimits) {
        overrides.withLock { o in
            o.timeLimits[task] = limits
            hasTaskOverrides.store(!o.isEmpty, ordering: .relaxed)
        }
    }

    /// The limits set for `task` at run time (nil: the manifest's apply).
    func timeLimits(for task: String) -> TimeLimits? {
        guard hasTaskOverrides.load(ordering: .relaxed) else { return nil }
        return overrides.withLock { $0.timeLimits[task] }
    }

    var allTimeLimits: [String: TimeLimits] { overrides.withLock { $0.timeLimits } }

    /// Whether `task` cannot take the inline fast path (a changed time limit).
    func overrides(_ task: String) -> Bool {
        overrides.withLock { $0.timeLimits[task] != nil }
    }
}

/// One consumed queue; its fetch loops run until it is cancelled (or the worker stops).
final class QueueConsumer: Sendable {
    let name: String
    private let cancelled = Atomic<Bool>(false)
    init(_ name: String) { self.name = name }
    func cancel() { cancelled.store(true, ordering: .relaxed) }
    var isCancelled: Bool { cancelled.load(ordering: .relaxed) }
}

/// Celery's rate strings (`celery.utils.time.rate`): "10/s", "100/m", "5/h", a plain number
/// (per second); 0 or empty: no limit.
enum RateLimitParser {
    enum Failure: Error, Equatable {
        /// The number part is not a number (Celery: ValueError from `float()`).
        case notANumber(String)
        /// The unit is not s, m or h (Celery: KeyError from its map).
        case unknownUnit(String)
    }

    /// Tasks per second (0: no limit).
    static func perSecond(_ value: JSONValue?) throws(Failure) -> Double {
        switch value {
        case nil, .null?: return 0
        case let .bool(b)?: return b ? 1 : 0
        case let v? where v.doubleValue != nil: return max(v.doubleValue!, 0)
        case let .string(s)?:
            if s.isEmpty { return 0 }
            let parts = s.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
            let ops = String(parts[0]), unit = parts.count > 1 ? String(parts[1]) : "s"
            let divisor: Double
            switch unit {
            case "", "s": divisor = 1
            case "m": divisor = 60
            case "h": divisor = 3600
            default: throw .unknownUnit(unit)
            }
            guard let n = Double(ops.trimmingCharacters(in: .whitespaces)) else { throw .notANumber(ops) }
            return max(n / divisor, 0)
        default:
            throw .notANumber(value.map { $0.serialized() } ?? "")
        }
    }
}
