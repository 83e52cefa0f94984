import Foundation
import Synchronization

/// What this worker holds of its processing list: every message a fetch brought that is not
/// yet acked, handed back, parked or dead-lettered. The processing list in Redis may hold
/// more: a fetch whose reply was lost (the connection was reset after Redis moved the
/// messages) leaves messages there that no part of the worker knows of. `StrayAudit` finds
/// them by comparing the list with this ledger and hands them back.
///
/// The ledger is a multiset of 64-bit hashes of the raw messages. A collision can only make
/// a stray look held (it is then found at a later audit, once the other message is gone);
/// it can never make a held message look like a stray.
///
/// Order matters on both ends: a message enters the ledger when its fetch's reply is read
/// (before anything runs it) and leaves only after Redis confirmed that it left the
/// processing list. So "in the list but not in the ledger" means a fetch reply in transit or
/// lost; fetch tickets tell the two apart (`StrayAudit`).
final class HeldMessages: Sendable {
    private struct State {
        var counts: [UInt64: Int] = [:]
        var nextTicket = 0
        var outstanding: Set<Int> = []
        mutating func remove(_ k: UInt64) {
            guard let n = counts[k] else { return }
            if n <= 1 { counts.removeValue(forKey: k) } else { counts[k] = n - 1 }
        }
    }
    private let state = Mutex(State())

    /// The ledger's key of a message: its length, its first 32 and last 96 bytes, hashed.
    /// The end of an envelope holds its `properties` with the unique `delivery_tag` (Celery
    /// and Celerity clients alike), so distinct messages almost never share a key; when they
    /// do, a stray only waits for a later audit (above). Hashing all of a ~700-byte envelope
    /// twice per message cost the drain a measurable few per cent.
    static func key(_ raw: [UInt8]) -> UInt64 {
        var h = Hasher()
        h.combine(raw.count)
        raw.withUnsafeBytes { all in
            if all.count <= 128 {
                h.combine(bytes: all)
            } else {
                h.combine(bytes: UnsafeRawBufferPointer(rebasing: all[..<32]))
                h.combine(bytes: UnsafeRawBufferPointer(rebasing: all[(all.count - 96)...]))
            }
        }
        return UInt64(bitPattern: Int64(h.finalize()))
    }

    /// A fetch is about to be sent: its ticket, to pass to `endFetch` whatever happens.
    func beginFetch() -> Int {
        state.withLock { s in
            s.nextTicket += 1
            s.outstanding.insert(s.nextTicket)
            return s.nextTicket
        }
    }

    /// The fetch of `ticket` is over; `fetched` is what its reply brought (empty on error).
    func endFetch(_ ticket: Int, fetched: [[UInt8]]) {
        let keys = fetched.map(Self.key)
        state.withLock { s in
            for k in keys { s.counts[k, default: 0] += 1 }
            s.outstanding.remove(ticket)
        }
    }

    /// The fetches under way now.
    var outstandingFetches: Set<Int> { state.withLock { $0.outstanding } }

    /// Whether any of `tickets` is still under way.
    func anyOutstanding(_ tickets: Set<Int>) -> Bool {
        state.withLock { !$0.outstanding.isDisjoint(with: tickets) }
    }

    /// Redis confirmed these left the processing list (acked, handed back, parked, moved).
    func release(_ raws: [[UInt8]]) {
        let keys = raws.map(Self.key)
        state.withLock { s in for k in keys { s.remove(k) } }
    }

    func release(_ raw: [UInt8]) { release([raw]) }

    /// How many copies of each of `keys` are held.
    func counts(_ keys: some Sequence<UInt64>) -> [UInt64: Int] {
        state.withLock { s in
            var out: [UInt64: Int] = [:]
            for k in keys { out[k] = s.counts[k] ?? 0 }
            return out
        }
    }

    var count: Int { state.withLock { $0.counts.values.reduce(0, +) } }
}

/// How long this worker may take its processing list as its own.
///
/// Another worker moves a message out of this worker's list only when this worker's
/// heartbeat key is gone (the recovery scripts check it in the same step). The key lives
/// `ttl` seconds after each renewal, so from a renewal sent at `t` the list is ours at least
/// until `t + ttl` (less a margin for clock drift). A stall (SIGSTOP, a long pause, a cut
/// from Redis) can outlast that: the lease lapses, other workers may take the list back,
/// and the next renewal starts a new generation. A message fetched in an earlier generation
/// is checked against the list before it starts (`Worker.ownsStill`).
final class Lease: Sendable {
    /// Read on every start (the hot path), so without a lock: a renewal stores the generation,
    /// then the end (release); a reader loads the end, then the generation (acquire). A reader
    /// that sees a new end also sees the new generation, so a message of an older one is never
    /// taken as covered by a lease that lapsed.
    private let generationNow = Atomic<Int>(0)
    /// Nanoseconds since `origin`; 0: never renewed.
    private let validUntilNanos = Atomic<Int64>(0)
    private let origin = ContinuousClock.now
    /// Renewals come from the heartbeat alone; the lock keeps two from interleaving anyway.
    private let writer = Mutex(())
    let margin: Duration

    init(margin: Duration = .seconds(1)) { self.margin = margin }

    private func nanos(_ t: ContinuousClock.Instant) -> Int64 {
        let d = origin.duration(to: t)
        return d.components.seconds * 1_000_000_000 + d.components.attoseconds / 1_000_000_000
    }

    /// A renewal sent at `sentAt` (read before the command left) was confirmed by Redis.
    func renewed(sentAt: ContinuousClock.Instant, ttl: Duration) {
        writer.withLock { _ in
            let until = max(nanos(sentAt + ttl - margin), 1)
            let old = validUntilNanos.load(ordering: .acquiring)
            if old == 0 || nanos(sentAt) >= old { generationNow.add(1, ordering: .releasing) }
            if until > old { validUntilNanos.store(until, ordering: .releasing) }
        }
    }

    /// The generation now, whether or not the lease is valid (read it before a fetch).
    var generation: Int { generationNow.load(ordering: .acquiring) }

    /// The generation if the lease is valid now, else nil.
    func current(now: ContinuousClock.Instant = .now) -> Int? {
        let until = validUntilNanos.load(ordering: .acquiring)
        let g = generationNow.load(ordering: .acquiring)
        return until != 0 && nanos(now) < until ? g : nil
    }

    /// Whether a message fetched in `generation` may start without a check.
    func covers(_ generation: Int) -> Bool { current() == generation }
}
