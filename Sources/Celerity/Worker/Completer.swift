import Foundation
import Logging
import RedisClient
import Synchronization

/// Stores results and acks messages in batches: the worker's hot path.
///
/// A finished task hands its result document and raw message here and waits. One flusher
/// task takes everything that has piled up since its last round trip and writes it with a
/// single EVALSHA (`completeScript`): per message, store the result (never over a SUCCESS),
/// publish it, LREM the message from the processing list. So a busy worker pays one round
/// trip per batch instead of two per task, and an idle one adds no latency (a lone task is
/// flushed at once). When the result backend is another Redis than the broker, the same
/// script runs twice: store on the backend, then ack on the broker; a message is never acked
/// before its result is stored.
///
/// The script is idempotent (a stored SUCCESS is kept, LREM of a missing message is a no-op,
/// a repeated PUBLISH is harmless), so a batch whose round trip failed is simply sent again.
final class Completer: Sendable {
    enum Store: Sendable {
        /// Celery's Redis backend: SET (with TTL) + PUBLISH on `celery-task-meta-<id>`.
        case redisKey(String, [UInt8])
        /// Celery's rpc backend: LPUSH the reply envelope to the client's reply list.
        case rpcList(String, [UInt8])
    }
    struct Item: Sendable {
        let raw: [UInt8]
        let store: Store?
    }
    private struct Waiting {
        var items: [Item] = []
        var continuations: [CheckedContinuation<Bool, Never>] = []
        var flusher: CheckedContinuation<Void, Never>?
        var closed = false
    }

    let processingKey: String
    /// Connection to the broker (acks, and stores when the backend is the broker's Redis).
    let broker: Redis
    /// The result backend's own Redis when it is not the broker's.
    let resultRedis: Redis?
    let ttl: Int
    let maxBatch: Int
    private let state = Mutex(Waiting())
    let stop: StopFlag
    let logger: Logger

    init(processingKey: String, broker: Redis, resultRedis: Redis?, ttl: Int, stop: StopFlag, logger: Logger, maxBatch: Int = 500) {
        self.processingKey = processingKey
        self.broker = broker
        self.resultRedis = resultRedis
        self.ttl = ttl
        self.stop = stop
        self.logger = logger
        self.maxBatch = maxBatch
    }

    /// Runs `body`, retrying with backoff while Redis is unreachable, through a stop until its
    /// grace period is over. False: not done (the messages stay in the processing list).
    private func retry(_ body: @Sendable () async throws -> Void) async -> Bool {
        var delay = 0.1
        while true {
            do {
                try await body()
                return true
            } catch let e as RedisError where e.isConnectionProblem {
                logger.error("Redis unavailable while storing results; retrying", metadata: ["error": .string(e.description), "retry_in_s": .stringConvertible(delay)])
                try? await Task.sleep(for: .milliseconds(Int(delay * 1000)))
                delay = min(delay * 2, 5)
                if stop.isRequested && stop.graceExpired { return false }
            } catch {
                logger.error("storing results failed; their messages stay in the processing list: \(error)")
                return false
            }
        }
    }

    /// KEYS[1] processing list, KEYS[1+i] the target key of item i (KEYS[1] when none).
    /// ARGV[1] result TTL seconds (0 = none), ARGV[2] '1' to ack; then per item i:
    /// ARGV[3i] kind ('r' Redis backend, 'q' rpc reply list, 'n' nothing to store),
    /// ARGV[3i+1] document, ARGV[3i+2] raw message (for the ack).
    static let completeScript = RedisScript("""
    local ttl = tonumber(ARGV[1])
    local ack = ARGV[2] == '1'
    local n = (#ARGV - 2) / 3
    for i = 1, n do
      local kind = ARGV[3 * i]
      local key = KEYS[i + 1]
      if kind == 'r' then
        local cur = redis.call('GET', key)
        if not (cur and string.find(cur, '"status"%s*:%s*"SUCCESS"')) then
          if ttl > 0 then
            redis.call('SET', key, ARGV[3 * i + 1], 'EX', ttl)
          else
            redis.call('SET', key, ARGV[3 * i + 1])
          end
          redis.call('PUBLISH', key, ARGV[3 * i + 1])
        end
      elseif kind == 'q' then
        redis.call('LPUSH', key, ARGV[3 * i + 1])
      end
      if ack then redis.call('LREM', KEYS[1], -1, ARGV[3 * i + 2]) end
    end
    return n
    """)

    /// Stores (if `store` is given) and acks `raw`; returns once both are done, false if the
    /// worker stopped before Redis took them (the message then stays in the processing list).
    func complete(_ raw: [UInt8], store: Store?) async -> Bool {
        await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
            let (accepted, wake) = state.withLock { s -> (Bool, CheckedContinuation<Void, Never>?) in
                if s.closed { return (false, nil) }
                s.items.append(Item(raw: raw, store: store))
                s.continuations.append(c)
                defer { s.flusher = nil }
                return (true, s.flusher)
            }
            if !accepted { c.resume(returning: false) }
            wake?.resume()
        }
    }

    /// The flusher: writes batches until `close()` and everything handed in before it is written.
    func run() async {
        while true {
            let batch = state.withLock { s -> ([Item], [CheckedContinuation<Bool, Never>])? in
                if s.items.isEmpty { return nil }
                let n = min(s.items.count, maxBatch)
                let taken = (Array(s.items.prefix(n)), Array(s.continuations.prefix(n)))
                s.items.removeFirst(n)
                s.continuations.removeFirst(n)
                return taken
            }
            if let (items, conts) = batch {
                let ok = await write(items)
                for c in conts { c.resume(returning: ok) }
                continue
            }
            if state.withLock({ $0.closed }) { return }
            // Nothing to write: park until `complete` or `close` wakes us.
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let parked = state.withLock { s -> Bool in
                    if !s.items.isEmpty || s.closed { return false }
                    s.flusher = c
                    return true
                }
                if !parked { c.resume() }
            }
        }
    }

    /// Stops taking work; what was handed in before is still written.
    func close() {
        let wake = state.withLock { s -> CheckedContinuation<Void, Never>? in
            s.closed = true
            defer { s.flusher = nil }
            return s.flusher
        }
        wake?.resume()
    }

    private func write(_ items: [Item]) async -> Bool {
        if let resultRedis {
            // Another Redis holds results: store there first, then ack on the broker.
            let stores = items.filter { $0.store != nil }
            if !stores.isEmpty {
                guard await retry({ _ = try await self.send(stores, on: resultRedis, ack: false) }) else { return false }
            }
            return await retry({ _ = try await self.send(items.map { Item(raw: $0.raw, store: nil) }, on: self.broker, ack: true) })
        }
        return await retry({ _ = try await self.send(items, on: self.broker, ack: true) })
    }

    private func send(_ items: [Item], on redis: Redis, ack: Bool) async throws {
        var keys: [any RedisArgument] = [processingKey]
        var args: [any RedisArgument] = [ttl, ack ? "1" : "0"]
        keys.reserveCapacity(items.count + 1)
        args.reserveCapacity(items.count * 3 + 2)
        for item in items {
            switch item.store {
            case let .redisKey(key, doc)?:
                keys.append(key); args.append("r"); args.append(doc)
            case let .rpcList(key, doc)?:
                keys.append(key); args.append("q"); args.append(doc)
            case nil:
                keys.append(processingKey); args.append("n"); args.append("")
            }
            args.append(ack ? item.raw : [])
        }
        _ = try await redis.evalScript(Completer.completeScript, keys: keys, args: args)
    }
}
