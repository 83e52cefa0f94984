import Foundation
import Synchronization

/// What remote control changes in a running worker (Control/Worker+RuntimeControl.swift):
/// its concurrency (`pool_grow`, `pool_shrink`), the queues it consumes (`add_consumer`,
/// `cancel_consumer`), and per-task time limits (`time_limit`). Rate limits are global
/// (`TaskGate`): `rate_limit` changes them in Redis.
///
/// The hot path reads at most one relaxed atomic of it per message (`hasTaskOverrides`),
/// and only when that is set looks further.
final class RuntimeSettings: Sendable {
    /// Execution slots now (`-c`, then grown or shrunk).
    private let concurrencyNow: Atomic<Int>
    /// Serialises grow and shrink (two requests may be handled at once).
    private let resizing = Mutex(())
    private let consuming: Mutex<[QueueConsumer]>
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
        consuming = Mutex(queues.map(QueueConsumer.init))
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

    /// The queues consumed now, in the order they were added.
    var queues: [String] { consuming.withLock { $0.map(\.name) } }

    var consumers: [QueueConsumer] { consuming.withLock { $0 } }

    func isConsuming(_ queue: String) -> Bool { consuming.withLock { $0.contains { $0.name == queue } } }

    /// A consumer for `queue`, or nil when it is consumed already.
    func addQueue(_ queue: String) -> QueueConsumer? {
        consuming.withLock { list in
            guard !list.contains(where: { $0.name == queue }) else { return nil }
            let c = QueueConsumer(queue)
            list.append(c)
            return c
        }
    }

    /// Stops consuming `queue` (its fetch loops end after their fetch under way); false when
    /// it was not consumed.
    func cancelQueue(_ queue: String) -> Bool {
        let gone = consuming.withLock { list -> QueueConsumer? in
            guard let i = list.firstIndex(where: { $0.name == queue }) else { return nil }
            return list.remove(at: i)
        }
        gone?.cancel()
        return gone != nil
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
