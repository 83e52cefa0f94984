/// Exponential backoff: `first`, then doubling up to `max`, until `reset()`.
///
/// Lives in RedisClient (the lower module) so that both the Redis handles and the library
/// (Celerity imports RedisClient) use the same one. Seconds as `Double`, not `Duration`:
/// every user logs the delay in seconds (`retry_in_s`) and `Redis.maxBackoff` is a `Double`.
/// No jitter: none of the loops it replaced had any.
public struct Backoff: Sendable, Equatable {
    /// The first delay, and the one after `reset()`.
    public let first: Double
    /// The cap: doubling stops here.
    public let max: Double
    /// The delay the next `next()` returns.
    public private(set) var current: Double

    public init(first: Double, max: Double) {
        self.first = first
        self.max = max
        self.current = first
    }

    /// The delay to wait now; the following one doubles, up to `max`.
    public mutating func next() -> Double {
        let delay = current
        current = Swift.min(current * 2, max)
        return delay
    }

    /// Back to `first` (after a success).
    public mutating func reset() { current = first }
}
