import Foundation

/// What a worker counts of one task: outcomes, and a histogram of runtimes. Kept under the
/// worker's stats lock (one dictionary lookup and a few additions per outcome), published in
/// its heartbeat document (`tasks`), where `celerity dashboard` sums it over the workers for
/// its `/metrics` (O(workers × tasks) per scrape, never O(calls)).
public struct TaskTally: Sendable, Equatable, Codable {
    public enum Kind: Sendable { case succeeded, failed, retried, revoked }

    public var succeeded = 0, failed = 0, retried = 0, revoked = 0
    /// Runs counted in `buckets` / `runtimeSum` (outcomes that have a runtime).
    public var timed = 0
    /// Seconds, summed over the timed runs.
    public var runtimeSum = 0.0
    /// Cumulative counts per upper bound of `bounds` (Prometheus' `le`), without +Inf (`timed`).
    public var buckets = [Int](repeating: 0, count: TaskTally.bounds.count)

    /// Upper bounds of the runtime histogram, in seconds: from a tiny built-in (~10 µs) to a
    /// long plugin run.
    public static let bounds: [Double] = [0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300]

    public init() {}

    /// Celery's `total` for `inspect stats`: tasks run to a success or a failure.
    public var total: Int { succeeded + failed + retried }

    mutating func add(_ kind: Kind, _ runtime: Duration?) {
        switch kind {
        case .succeeded: succeeded += 1
        case .failed: failed += 1
        case .retried: retried += 1
        case .revoked: revoked += 1
        }
        guard let runtime else { return }
        let c = runtime.components
        let seconds = Double(c.seconds) + Double(c.attoseconds) / 1e18
        timed += 1
        runtimeSum += seconds
        // Cumulative: every bound at or above the runtime.
        var i = Self.bounds.count - 1
        while i >= 0 && seconds <= Self.bounds[i] { buckets[i] += 1; i -= 1 }
    }

    /// `{"succeeded", "failed", "retried", "revoked", "timed", "runtime_sum", "buckets"}`.
    var document: JSONValue {
        .object([
            JSONMember("succeeded", .int(succeeded)), JSONMember("failed", .int(failed)),
            JSONMember("retried", .int(retried)), JSONMember("revoked", .int(revoked)),
            JSONMember("timed", .int(timed)), JSONMember("runtime_sum", .number(String(runtimeSum))),
            JSONMember("buckets", .array(buckets.map { .int($0) })),
        ])
    }

    /// The tally that `document` wrote (nil if it is not one).
    public init?(document v: JSONValue) {
        guard let s = v["succeeded"]?.intValue, let f = v["failed"]?.intValue else { return nil }
        succeeded = s
        failed = f
        retried = v["retried"]?.intValue ?? 0
        revoked = v["revoked"]?.intValue ?? 0
        timed = v["timed"]?.intValue ?? 0
        runtimeSum = v["runtime_sum"]?.doubleValue ?? 0
        let b = v["buckets"]?.arrayValue?.compactMap(\.intValue) ?? []
        buckets = b.count == Self.bounds.count ? b : [Int](repeating: 0, count: Self.bounds.count)
    }

    /// Adds another worker's tally of the same task.
    public mutating func merge(_ o: TaskTally) {
        succeeded += o.succeeded; failed += o.failed; retried += o.retried; revoked += o.revoked
        timed += o.timed; runtimeSum += o.runtimeSum
        for i in buckets.indices { buckets[i] += o.buckets[i] }
    }
}
