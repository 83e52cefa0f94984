import Foundation
import Logging
import RedisClient
import Synchronization

/// Hands back the messages of this worker's processing list that the worker does not hold.
///
/// A fetch moves messages into the processing list in Redis; if the connection is reset
/// before the reply comes back (a proxy, a load balancer, Redis's `timeout`, `CLIENT KILL`),
/// those messages sit in the list of a live worker that never heard of them: nobody runs
/// them and no dead-worker sweep touches them. Every `every` seconds, and soon after a fetch
/// failed, this duty reads the list (LRANGE) and compares it with the ledger of held
/// messages (`HeldMessages`). A message in the list but not in the ledger is either a stray
/// or a fetch reply still on its way; so it waits until every fetch that was under way when
/// the list was read has ended (its messages are then in the ledger), looks again, and hands
/// back what is still not held, to the pop end of its queue (the conditional requeue script:
/// nothing moves that has left the list meanwhile). A stray was never started: no
/// redelivery is counted.
final class StrayAudit: Sendable {
    let broker: WorkerBroker
    let logger: Logger
    let every: Duration
    private let requested = Atomic<Bool>(false)

    init(broker: WorkerBroker, logger: Logger, every: Duration = .seconds(5)) {
        self.broker = broker
        self.logger = logger
        self.every = every
    }

    /// Asks for an audit soon (a fetch failed: its reply may have been lost).
    func request() { requested.store(true, ordering: .relaxed) }

    /// The duty: audits every `every`, or within 250 ms of a request, until cancelled.
    func run(clock: some Clock<Duration> = ContinuousClock(), isStopping: @escaping @Sendable () -> Bool) async {
        var last = clock.now
        while !Task.isCancelled {
            do { try await clock.sleep(for: .milliseconds(250)) } catch { return }
            guard !isStopping() else { continue }
            let asked = requested.load(ordering: .relaxed)
            guard asked || last.duration(to: clock.now) >= every else { continue }
            requested.store(false, ordering: .relaxed)
            do {
                let n = try await auditOnce(isStopping: isStopping)
                if n > 0 {
                    logger.warning("handed back messages stranded in this worker's processing list (a fetch reply was lost)",
                                   metadata: ["count": .stringConvertible(n)])
                }
                last = clock.now
            } catch {
                requested.store(asked, ordering: .relaxed)   // try again at the next tick if it was asked for
                logger.debug("stray audit failed: \(error)")
            }
        }
    }

    /// One audit; returns how many messages were handed back.
    func auditOnce(isStopping: @Sendable () -> Bool = { false }) async throws -> Int {
        let list = try await broker.control.call("LRANGE", broker.processingKey, 0, -1).array?.compactMap(\.bytes) ?? []
        // Read after the reply: every fetch whose messages can be in `list` and not yet in the
        // ledger began before this point.
        let underWay = broker.held.outstandingFetches
        var byKey: [UInt64: [[UInt8]]] = [:]
        for raw in list { byKey[HeldMessages.key(raw), default: []].append(raw) }
        func notHeld() -> [[UInt8]] {
            let held = broker.held.counts(byKey.keys)
            return byKey.flatMap { k, raws in raws.prefix(max(0, raws.count - (held[k] ?? 0))) }
        }
        guard !notHeld().isEmpty else { return 0 }
        // A blocking fetch ends within its block time (or its connection's error).
        var waited = Duration.zero
        while broker.held.anyOutstanding(underWay) {
            if isStopping() || waited > .seconds(60) { return 0 }
            try await Task.sleep(for: .milliseconds(20))
            waited += .milliseconds(20)
        }
        var handedBack = 0
        for raw in notHeld() {
            if let key = WorkerBroker.listKey(of: raw) {
                if try await broker.control.evalScript(WorkerBroker.requeueScript, keys: [broker.processingKey, key], args: [raw]).int == 1 {
                    handedBack += 1
                }
            } else if try await broker.deadLetter(raw, from: broker.processingKey, queue: "", reason: "unreadable message stranded in \(broker.processingKey) (no routing key)") {
                handedBack += 1
            }
        }
        return handedBack
    }
}
