import Foundation
import Logging
import RedisClient
import Synchronization

// The fetch loops: one or two per queue, each with its own connection; batches handed to
// tasks (docs/architecture.md, steps 1-2).

extension Worker {
    /// `room`: a room of the queue's own (`prefetch` is then its own), or nil for the shared
    /// room, whose size follows `pool_grow`/`pool_shrink`. The loop ends at a stop or when
    /// its queue is cancelled (`cancel_consumer`, or paused: `QueuePauses`); what it fetched
    /// still runs and is acked.
    func fetchLoop(_ consumer: QueueConsumer, prefetch: Slots, room ownRoomSize: Int?, batchesInFlight: Int, slots: Slots) async {
        let queue = consumer.name
        let ownRoom = ownRoomSize != nil
        let fetcher = broker.makeFetcher(queue)
        var backoff = Backoff(first: 0.1, max: 5)
        let pluginQueue = isPersistentPluginQueue(queue)
        var lastGot = 1   // what the last fetch brought: the next one asks for up to twice that
        await withDiscardingTaskGroup { running in
            // `-c 1`: one task works the fetched messages one by one, in the order fetched,
            // while the loop fetches ahead (spawning a task per batch would race them).
            var inOrder: AsyncStream<(generation: Int, batch: [[UInt8]])>.Continuation?
            if config.concurrency == 1 {
                let (stream, feed) = AsyncStream.makeStream(of: (generation: Int, batch: [[UInt8]]).self)
                inOrder = feed
                running.addTask {
                    // Grown by `pool_grow`: messages run side by side (each waits for a slot).
                    await withDiscardingTaskGroup { side in
                        for await (generation, batch) in stream {
                            for raw in batch {
                                if self.runtime.concurrency > 1 {
                                    side.addTask { await self.work([raw], queue: queue, generation: generation, prefetch: prefetch, slots: slots, inFetchLoop: false) }
                                } else {
                                    await self.work([raw], queue: queue, generation: generation, prefetch: prefetch, slots: slots, inFetchLoop: false)
                                }
                            }
                        }
                    }
                }
            }
            defer { inOrder?.finish() }
            var pausedFor: String?
            while !isStopping && !consumer.isCancelled && !Task.isCancelled {
                // A handler of this queue in a crash loop: pause the queue instead of burning its tasks.
                if let why = poolsByQueue[queue]?.lazy.compactMap(\.unavailability).first {
                    if pausedFor == nil { logger.error("queue paused: a plugin handler of it is unavailable", metadata: ["queue": .string(queue), "reason": .string(why)]) }
                    pausedFor = why
                    try? await Task.sleep(for: .milliseconds(500))
                    continue
                }
                if pausedFor != nil {
                    logger.info("queue resumed", metadata: ["queue": .string(queue)])
                    pausedFor = nil
                }
                // Fetch in batches of a part of the prefetch room, so that a busy worker pays one
                // round trip per many messages and has several batches under way at once (one
                // being fetched, others being run or stored). A queue with a room of its own
                // waits until a whole batch is free; fetch loops that share a room take what is
                // free (waiting while holding part of a shared room could deadlock them).
                let most = max(1, (ownRoomSize ?? sharedRoom) / batchesInFlight)
                var n = await prefetch.acquire(upTo: most)
                if ownRoom { while n < most && !isStopping { n += await prefetch.acquire(upTo: most - n) } }
                if isStopping || consumer.isCancelled { prefetch.release(n); break }
                let messages: [[UInt8]]
                // Read before the fetch: a lapse of the lease after this point makes the
                // messages of this fetch be checked against the list before they start.
                let generation = lease.generation
                do {
                    var got = try await broker.fetch(queue, using: fetcher, max: n, expect: lastGot * 2, block: nil)
                    if got.isEmpty {
                        // Nothing waiting: block for one message holding no slot of the room, then
                        // take a slot for it at once, even past the room (a worker may hold one
                        // message more than its room per fetch loop; the debt is paid back
                        // before other loops fetch again). Idle loops that sat on the room while
                        // they waited starved the busy queue of a multi-queue worker.
                        prefetch.release(n)
                        n = 0
                        if ownRoom && completer.storesOnBroker {
                            // A queue of tiny built-ins: the message that ends the wait is run and
                            // its result stored and acked right where it arrives.
                            // One that arrives after the queue was cancelled or paused is handed back below.
                            let handled = try await broker.waitForOne(queue, using: fetcher, block: config.fetchBlockSeconds) { raw, session in
                                consumer.isCancelled ? .other(raw) : self.runAndStore(raw, queue: queue, generation: generation, session)
                            }
                            switch handled {
                            case nil:
                                got = []
                            case let .stored(outcome, disposal, on)?:
                                recordInline(outcome, disposal, events: on)
                                continue
                            case let .unstored(item, outcome, disposal, on)?:
                                // The write failed (Redis away): the completer retries it.
                                defer { recordInline(outcome, disposal, events: on) }
                                if await !completer.complete([item]) {
                                    logger.error("result not stored; message left unacked for redelivery")
                                }
                                continue
                            case let .failed(raw, outcome, quick, spec, on)?:
                                prefetch.take()
                                running.addTask { await self.settleQuickFailure(raw, outcome, quick, spec: spec, queue: queue, prefetch: prefetch, events: on) }
                                continue
                            case let .other(raw)?:
                                got = [raw]
                            }
                        } else if pluginQueue && inOrder == nil {
                            // A queue of persistent plugins: the message that ends the wait goes
                            // to its plugin right where it arrives.
                            let arrival = try await broker.waitForOne(queue, using: fetcher, block: config.fetchBlockSeconds) { raw, _ in
                                consumer.isCancelled ? .other(raw) : self.startOnArrival(raw, queue: queue, generation: generation, slots: slots)
                            }
                            switch arrival {
                            case nil:
                                got = []
                            case let .started(l, plugin, call)?:
                                prefetch.take()
                                running.addTask {
                                    await self.runAndSettle(l, slots: slots) { try await plugin.finish(call) }
                                    prefetch.release()
                                }
                                continue
                            case let .other(raw)?:
                                got = [raw]
                            }
                        } else {
                            got = try await broker.waitForOne(queue, using: fetcher, block: config.fetchBlockSeconds)
                        }
                        if !got.isEmpty { prefetch.take(); n = 1 }
                    }
                    messages = got
                    lastGot = max(messages.count, 1)
                    backoff.reset()
                } catch {
                    prefetch.release(n)
                    // Its reply may have been lost after Redis moved messages: look for strays.
                    strays.request()
                    let delay = backoff.next()
                    logger.error("fetch from queue failed; retrying", metadata: ["queue": .string(queue), "error": .string("\(error)"), "retry_in_s": .stringConvertible(delay)])
                    try? await Task.sleep(for: .milliseconds(Int(delay * 1000)))
                    continue
                }
                if messages.count < n { prefetch.release(n - messages.count) }
                if isStopping || consumer.isCancelled {
                    // Fetched while a stop was requested or the queue cancelled or paused (a
                    // blocking fetch was under way): give them back.
                    await handBack(messages, queue: queue, prefetch: prefetch)
                    break
                }
                // The batch is worked on in a task of its own, so the next fetch overlaps it;
                // a lone message of a queue of tiny built-ins (a quiet queue: the other fetch
                // loop is waiting for the next one) is run here, one hand-off less on its way.
                let fetched = messages
                if let inOrder {
                    if case .terminated = inOrder.yield((generation, fetched)) {
                        // The worker is going away (its consumer was cancelled): hand them back.
                        await handBack(fetched, queue: queue, prefetch: prefetch)
                        break
                    }
                } else if ownRoom && fetched.count == 1 {
                    await work(fetched, queue: queue, generation: generation, prefetch: prefetch, slots: slots, inFetchLoop: true)
                } else {
                    running.addTask { await self.work(fetched, queue: queue, generation: generation, prefetch: prefetch, slots: slots, inFetchLoop: false) }
                }
            }
        }
        await fetcher.close()
    }

    /// Puts fetched messages that will not run here back on their lists, and frees their room.
    func handBack(_ messages: [[UInt8]], queue: String, prefetch: Slots) async {
        for raw in messages {
            let key = WorkerBroker.listKey(of: raw) ?? queue
            _ = try? await withRedisRetry("requeue") { try await self.broker.requeue(raw, listKey: key) }
        }
        prefetch.release(messages.count)
    }

    /// Works on one fetched batch. Tiny built-ins (add) run right here and their results go to
    /// the completer as one group: no task, no thread hop, no wake-up per message. Everything
    /// else gets a task of its own.
    /// `inFetchLoop`: called by the fetch loop itself, which must not wait here for an
    /// execution slot (so everything but tiny built-ins gets a task of its own).
    func work(_ messages: [[UInt8]], queue: String, generation: Int, prefetch: Slots, slots: Slots, inFetchLoop: Bool) async {
        await withDiscardingTaskGroup { running in
            var quick: [Completer.Item] = []
            var decided: [(Outcome, Disposal)] = []
            decided.reserveCapacity(messages.count)
            // Messages under a rate limit or a cap: the batch asks the gate in one round trip.
            var gated: [(raw: [UInt8], message: TaskMessage)] = []
            let on = events.wantsOutcomes   // once per batch: task events or the history
            // When the batch came (the history's "received"), for what does not run at once.
            let receivedAt = events.history > 0 ? EventDispatcher.now() : nil
            for raw in messages {
                switch quickRun(raw, queue: queue, generation: generation) {
                case let .done(item, outcome, disposal):
                    quick.append(item)
                    decided.append((outcome, disposal))
                case let .settle(outcome, quick, spec):
                    running.addTask { await self.settleQuickFailure(raw, outcome, quick, spec: spec, queue: queue, prefetch: prefetch, events: on) }
                case let .slow(decoded?) where messages.count > 1 && gate.isGated(decoded.task) && triage(decoded).runs:
                    gated.append((raw, decoded))
                case let .slow(decoded) where messages.count == 1 && !inFetchLoop:
                    // A lone message (a quiet queue): run it in this task, one hand-off less.
                    await process(raw, queue: queue, generation: generation, slots: slots, decoded: decoded, receivedAt: receivedAt)
                    prefetch.release()
                case let .slow(decoded):
                    running.addTask {
                        await self.process(raw, queue: queue, generation: generation, slots: slots, decoded: decoded, receivedAt: receivedAt)
                        prefetch.release()
                    }
                }
            }
            if !gated.isEmpty {
                let requests = gated.map { TaskGate.Request(raw: $0.raw, task: $0.message.task, id: $0.message.id,
                                                            listKey: Keys.queue(queue, priority: $0.message.priority)) }
                // An error: each asks again on its own (and handles the error there).
                let verdicts = (try? await withRedisRetry("rate limit / concurrency cap") { try await self.gate.admit(requests) }) ?? nil
                for (i, (raw, message)) in gated.enumerated() {
                    let verdict = verdicts?[i]
                    if verdict == .go && gate.policies[message.task]?.cap == nil {
                        // Its turn is now and it holds no place: a tiny built-in runs here, in the batch.
                        switch quickRun(raw, queue: queue, generation: generation, admitted: true) {
                        case let .done(item, outcome, disposal):
                            quick.append(item)
                            decided.append((outcome, disposal))
                            continue
                        case let .settle(outcome, failed, spec):
                            running.addTask { await self.settleQuickFailure(raw, outcome, failed, spec: spec, queue: queue, prefetch: prefetch, events: on) }
                            continue
                        case .slow:
                            break
                        }
                    }
                    running.addTask {
                        await self.process(raw, queue: queue, generation: generation, slots: slots, decoded: message, admitted: verdict, receivedAt: receivedAt)
                        prefetch.release()
                    }
                }
            }
            if !quick.isEmpty {
                defer { recordInline(decided, events: on) }
                if await !completer.complete(quick) {
                    logger.error("results not stored; messages left unacked for redelivery", metadata: ["count": .stringConvertible(quick.count)])
                }
                prefetch.release(quick.count)
            }
        }
    }
}
