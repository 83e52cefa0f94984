import Foundation
import Logging

/// At startup: refuses to run beside a live worker of the same name (they would share a
/// processing list).
///
/// No heartbeat under the name: claimed. One written on this host by a process that no longer
/// exists: a dead run of this worker (killed and restarted), claimed at once, without waiting
/// for its heartbeat to expire. Any other: watched every `interval` for the heartbeat's TTL
/// + 1 s; renewed meanwhile (the document changed) means that worker is alive: `WorkerError`,
/// with the advice to pick another name (-n). Not renewed (or gone): that worker is dead, claimed.
///
/// Threads: awaited by the worker's `serve` before anything else runs; owns no thread. Tests
/// call `claim(clock:)` with a clock of their own (no sleeping).
struct NodeClaim: Sendable {
    let node: String
    /// The heartbeat's TTL in seconds.
    let ttl: Int
    let logger: Logger
    let isStopping: @Sendable () -> Bool
    /// The heartbeat under this node's name (`.some(nil)`: none), retried while Redis is away;
    /// nil when the worker was asked to stop meanwhile.
    let read: @Sendable () async throws -> [UInt8]??
    var interval: Duration = .milliseconds(500)

    /// Returns when the name is this worker's (or a stop came meanwhile); throws `WorkerError`
    /// when another live worker has it.
    func claim(clock: some Clock<Duration> = ContinuousClock()) async throws {
        guard let first = try await read(), let seen = first else { return }
        if Self.isDeadRunOfThisHost(seen) { return }
        logger.warning("a heartbeat for this node name exists; waiting to see whether that worker is alive", metadata: ["node": .string(node)])
        let deadline = clock.now.advanced(by: .seconds(ttl + 1))
        while clock.now < deadline && !isStopping() {
            try await clock.sleep(for: interval)
            guard let now = try await read(), let current = now else { return }
            if current != seen {
                throw WorkerError("another worker named '\(node)' is alive (its heartbeat is being renewed); give this one another name with -n")
            }
        }
    }

    /// Whether `heartbeat` names this host and a process id (not this one) that does not exist.
    static func isDeadRunOfThisHost(_ heartbeat: [UInt8]) -> Bool {
        guard let hb = try? JSONValue(parsing: heartbeat), hb["host"]?.stringValue == ProcessInfo.processInfo.hostName,
              let pid = hb["pid"]?.intValue, pid != Int(getpid()) else { return false }
        return kill(pid_t(pid), 0) != 0 && errno == ESRCH
    }
}
