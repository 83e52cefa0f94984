import Foundation
import Synchronization

/// Results that arrived on the client's subscription, and the calls waiting for them.
///
/// The pub/sub reader thread delivers every ready document here. A waiter takes its result
/// from the stash, or parks until it is delivered or its deadline passes. The stash is a
/// cache, capped (oldest dropped first): a result dropped from it, or published while the
/// subscription was down, is still in its Redis key, and waiters read the key on a miss.
final class ResultWaiters: Sendable {
    private struct Waiter {
        let token: Int
        let continuation: CheckedContinuation<ResultMeta?, Never>
        /// Its time-out; cancelled on delivery, so that it does not hold the waiter until the
        /// deadline.
        let timer: OneShotTimer
    }
    private struct State {
        var stash: [String: ResultMeta] = [:]
        var order: [String] = []
        var orderHead = 0
        var waiters: [String: [Waiter]] = [:]
        var nextToken = 0
        /// Counts stash drops and subscription losses: a handle sent under the same mark needs
        /// no key read on a miss (its result cannot have been missed).
        var mark = 0
    }
    private let state = Mutex(State())
    let capacity: Int

    init(capacity: Int = 200_000) { self.capacity = capacity }

    /// The current mark (see `State.mark`).
    var mark: Int { state.withLock { $0.mark } }

    /// Something may have been missed (subscription lost): read the keys of current waiters.
    func invalidate() -> [String] {
        state.withLock { s in
            s.mark += 1
            return Array(s.waiters.keys)
        }
    }

    /// Hands a ready document to its waiters, or keeps it for a later `take`/`wait`.
    func deliver(_ id: String, _ meta: ResultMeta) {
        let waiting = state.withLock { s -> [Waiter] in
            if let w = s.waiters.removeValue(forKey: id) { return w }
            if s.stash.updateValue(meta, forKey: id) == nil {
                s.order.append(id)
                if s.stash.count > capacity {
                    // Drop the oldest (its key in Redis still has it).
                    while s.orderHead < s.order.count, s.stash.count > capacity {
                        s.stash.removeValue(forKey: s.order[s.orderHead])
                        s.orderHead += 1
                    }
                    s.mark += 1
                }
                if s.orderHead > 4096 && s.orderHead * 2 > s.order.count {
                    s.order.removeFirst(s.orderHead)
                    s.orderHead = 0
                }
            }
            return []
        }
        for w in waiting {
            w.timer.cancel()
            w.continuation.resume(returning: meta)
        }
    }

    /// Takes a stashed result.
    func take(_ id: String) -> ResultMeta? {
        state.withLock { $0.stash.removeValue(forKey: id) }
    }

    /// Waits for `id` until `deadline`; nil on time-out. `registered` runs once the waiter is
    /// in place (e.g. to read the key, delivering what it finds).
    func wait(_ id: String, until deadline: Date, registered: (@Sendable () async -> Void)? = nil) async -> ResultMeta? {
        if let m = take(id) { return m }
        let token = state.withLock { s -> Int in s.nextToken += 1; return s.nextToken }
        return await withCheckedContinuation { (c: CheckedContinuation<ResultMeta?, Never>) in
            let ready = state.withLock { s -> ResultMeta? in
                if let m = s.stash.removeValue(forKey: id) { return m }
                // (A timer that fires at once waits for this lock, so it finds the waiter.)
                let timer = OneShotTimer(after: deadline.timeIntervalSinceNow) { [self] in timeOut(id, token) }
                s.waiters[id, default: []].append(Waiter(token: token, continuation: c, timer: timer))
                return nil
            }
            if let ready { c.resume(returning: ready); return }
            if let registered { Task { await registered() } }
        }
    }

    private func timeOut(_ id: String, _ token: Int) {
        let mine = state.withLock { s -> Waiter? in
            guard var list = s.waiters[id], let i = list.firstIndex(where: { $0.token == token }) else { return nil }
            let w = list.remove(at: i)
            s.waiters[id] = list.isEmpty ? nil : list
            return w
        }
        mine?.continuation.resume(returning: nil)
    }
}
