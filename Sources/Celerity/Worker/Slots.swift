import Synchronization

/// A counting semaphore for tasks (execution slots, prefetch room).
///
/// Not an actor: taking a free slot must not cost an executor hop on the hot path (tens of
/// thousands of times a second), so the count sits behind a mutex and only a caller that
/// finds none free suspends. A released slot goes straight to the longest waiter.
final class Slots: Sendable {
    private struct State {
        var free: Int
        var waiters: [CheckedContinuation<Void, Never>] = []
        var head = 0
    }
    private let state: Mutex<State>

    init(_ count: Int) { state = Mutex(State(free: count)) }

    /// Waits for at least one free slot, then takes up to `max` of them; returns how many.
    func acquire(upTo max: Int = 1) async -> Int {
        let got = state.withLock { s -> Int in
            guard s.free > 0 else { return 0 }
            let n = Swift.min(s.free, max)
            s.free -= n
            return n
        }
        if got > 0 { return got }
        // Parked; `release` hands this waiter exactly one slot.
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let parked = state.withLock { s -> Bool in
                if s.free > 0 { s.free -= 1; return false }
                s.waiters.append(c)
                return true
            }
            if !parked { c.resume() }
        }
        guard max > 1 else { return 1 }
        let more = state.withLock { s -> Int in
            // `take` may have left the count below zero meanwhile: then nothing more.
            let n = Swift.max(0, Swift.min(s.free, max - 1))
            s.free -= n
            return n
        }
        return 1 + more
    }

    /// Takes one free slot if there is one (never waits).
    func tryAcquire() -> Bool {
        state.withLock { s in
            guard s.free > 0 else { return false }
            s.free -= 1
            return true
        }
    }

    /// Takes one slot now, free or not (the count may go below zero: a debt that the next
    /// releases pay back before anyone waiting gets a slot). For a message already fetched,
    /// which must not queue behind loops that only want to look for more.
    func take() {
        state.withLock { $0.free -= 1 }
    }

    /// Takes `n` slots away for good, free or not (`pool_shrink`): a debt, as `take`.
    func shrink(_ n: Int) {
        state.withLock { $0.free -= n }
    }

    func release(_ n: Int = 1) {
        var wake: [CheckedContinuation<Void, Never>] = []
        state.withLock { s in
            var left = n
            if s.free < 0 {
                let paid = Swift.min(left, -s.free)
                s.free += paid
                left -= paid
            }
            while left > 0 && s.head < s.waiters.count {
                wake.append(s.waiters[s.head])
                s.head += 1
                left -= 1
            }
            if s.head == s.waiters.count { s.waiters.removeAll(keepingCapacity: true); s.head = 0 }
            s.free += left
        }
        for w in wake { w.resume() }
    }
}
