/// Counts free execution slots (the worker's concurrency) and lets fetch loops wait for one.
actor Slots {
    private var free: Int
    private var waiters: [CheckedContinuation<Void, Never>] = []

    init(_ count: Int) { free = count }

    /// Waits for at least one free slot, then takes up to `max` of them; returns how many.
    func acquire(upTo max: Int) async -> Int {
        while free == 0 {
            await withCheckedContinuation { waiters.append($0) }
        }
        let n = Swift.min(free, max)
        free -= n
        return n
    }

    func release(_ n: Int = 1) {
        free += n
        let wake = waiters
        waiters.removeAll()
        for w in wake { w.resume() }
    }
}
