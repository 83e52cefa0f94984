import Foundation
import Logging
import RedisClient
import Synchronization

// The measured fast paths: inline built-ins run where they were fetched (in a batch, or on
// the fetcher's own thread right after a blocking fetch), and persistent-plugin calls sent
// from the fetcher's thread. They ask `decide` like every other route (Outcome.swift).

extension Worker {
    // MARK: - One message

    /// The usual failure path (retry, dead letter, store) for a tiny built-in that failed
    /// where it was fetched; then its prefetch slot is given back.
    /// `events`: task events were on when it ran (its `task-received` and `task-started` go now).
    func settleQuickFailure(_ raw: [UInt8], _ outcome: Result<JSONValue, any Error>, _ quick: TaskMessage, spec: TaskSpec,
                                    queue: String, prefetch: Slots, events on: Bool) async {
        // The fast read keeps no unknown headers: a retry re-sends the full message.
        let message = (try? TaskMessage.decode(raw)) ?? quick
        if on && events.isEnabled { events.received(message, alsoStarted: true) }
        await settle(outcome, message, raw, spec: spec, queue: queue, TaskLog(base: logger, id: message.id, task: message.task), runtime: nil)
        prefetch.release()
    }

    /// `events`: whether task events were on when it ran (read once, for `recordInline`).
    enum Handled: Sendable {
        /// Ran, stored and acked (not yet recorded).
        case stored(Outcome, Disposal, events: Bool)
        /// Ran; the write failed: still to store and ack.
        case unstored(Completer.Item, Outcome, Disposal, events: Bool)
        /// Ran and failed: the usual failure path (retry, dead letter, store), not run again.
        case failed([UInt8], Result<JSONValue, any Error>, TaskMessage, TaskSpec, events: Bool)
        /// Not a plain call of a tiny built-in: the usual path.
        case other([UInt8])
    }

    /// On a fetcher's thread, right after its blocking fetch: runs a tiny built-in and writes
    /// its result and ack on the same connection (never an ack before the store: one
    /// connection's commands run in order).
    func runAndStore(_ raw: [UInt8], queue: String, generation: Int, _ session: RedisSession) -> Handled {
        let item: Completer.Item, outcome: Outcome, disposal: Disposal
        let on = events.wantsOutcomes
        switch quickRun(raw, queue: queue, generation: generation) {
        case let .done(done, o, d): (item, outcome, disposal) = (done, o, d)
        case let .settle(outcome, message, spec): return .failed(raw, outcome, message, spec, events: on)
        case .slow: return .other(raw)
        }
        do throws(RedisError) {
            try Completer.check(try session.pipelineErrors(completer.commands(for: [item], ack: true)))
            broker.held.release(raw)
            return .stored(outcome, disposal, events: on)
        } catch {
            return .unstored(item, outcome, disposal, events: on)
        }
    }

    enum QuickRun {
        /// Ran successfully here: store and ack (then record the outcome).
        case done(Completer.Item, Outcome, Disposal)
        /// Ran here and failed: the usual failure path (retry, dead letter, store).
        case settle(Result<JSONValue, any Error>, TaskMessage, TaskSpec)
        /// Needs the full path (`process`); with what the fast read found, if anything.
        case slow(TaskMessage?)
    }

    /// Runs a message at once when it is a plain call of an inline built-in (no eta, expiry,
    /// revocation, soft limit, `track_started` (its STARTED is stored on the usual path), stop,
    /// or lapse of the lease since its fetch in the way); anything else is `.slow`.
    /// Its runtime is measured (two monotonic clock reads): task events and the runtime
    /// histogram of the heartbeat (the dashboard's metrics) show it.
    /// `admitted`: the gate let it go already (a rate limit that did not hold it back).
    func quickRun(_ raw: [UInt8], queue: String, generation: Int, admitted: Bool = false) -> QuickRun {
        guard let message = TaskMessage.decodeForRun(raw, reprs: events.isEnabled) else { return .slow(nil) }
        guard !isStopping, message.eta == nil, message.expires == nil,
              message.softTimeLimit == nil || message.softTimeLimit == 0,
              case let table = currentTable, let spec = table.manifest.tasks[message.task], spec.softTimeLimit == nil, !spec.trackStarted,
              // A changed time limit (remote control), a rate limit or a cap: the usual path.
              !runtime.hasTaskOverrides.load(ordering: .relaxed) || !runtime.overrides(message.task),
              admitted || !gate.isGated(message.task),
              let body = table.handlers[message.task]?.inlineBody,
              !revocations.contains(message.id), lease.covers(generation)   // the lease last: it starts right after
        else { return .slow(message) }
        if logger.logLevel <= .debug { logger.debug("task started", metadata: ["task_id": .string(message.id), "task": .string(message.task)]) }
        // Its argument schema: a bad call fails as the body's own TypeError would.
        if let params = spec.params, let problem = params.validate(task: message.task, args: message.args, kwargs: message.kwargs) {
            return .settle(.failure(problem.failure), message, spec)
        }
        let call = taskCall(message, queue: queue)
        let value: JSONValue
        let began = ContinuousClock.now
        do { value = try body(call) } catch { return .settle(.failure(error), message, spec) }
        // The same decision as every other outcome; only its `.complete` is written here.
        var outcome = Outcome(result: .success(value), message: message, spec: spec)
        outcome.runtime = .now - began
        let disposal = decide(outcome)
        // Anything else (a workflow step) is settled, and logged as succeeded, by `settle`.
        guard case let .complete(meta) = disposal else { return .settle(.success(value), message, spec) }
        if logger.logLevel <= .debug { logger.debug("task succeeded", metadata: ["task_id": .string(message.id), "task": .string(message.task), "runtime_ms": "inline"]) }
        return .done(Completer.Item(raw: raw, store: completionStore(meta, message), of: message), outcome, disposal)
    }

    /// A message of a queue of persistent plugins, taken where it arrived (the fetcher's own
    /// thread): sent to a plugin process right there when nothing stands in the way (no eta
    /// or expiry due, not revoked, a free execution slot and a process with room now), with
    /// no hand-off between its arrival and the plugin. `.other`: take the usual path.
    enum Arrival: Sendable {
        case started(Launch, PersistentPlugin, PersistentPlugin.StartedCall)
        case other([UInt8])
    }

    func startOnArrival(_ raw: [UInt8], queue: String, generation: Int, slots: Slots) -> Arrival {
        guard !isStopping, let message = try? TaskMessage.decode(raw), case let .run(spec, handler) = triage(message),
              !spec.trackStarted,   // its STARTED is stored on the usual path, before the call
              !gate.isGated(message.task),   // a rate limit or a cap: the usual path
              let plugin = handler as? PersistentPlugin,
              // A call its schema refuses: the usual path fails it (checked there).
              spec.params?.validate(task: message.task, args: message.args, kwargs: message.kwargs) == nil,
              slots.tryAcquire() else { return .other(raw) }
        guard lease.covers(generation) else {
            slots.release()
            return .other(raw)
        }
        if logger.logLevel <= .debug { logger.debug("task started", metadata: ["task_id": .string(message.id), "task": .string(message.task)]) }
        let (limit, soft) = limits(message, spec)
        let l = launch(message, raw, spec: spec, handler: plugin, queue: queue, TaskLog(base: logger, id: message.id, task: message.task),
                       limit: limit, soft: soft)
        guard let started = plugin.tryStart(l.call) else {
            unlaunch(l)
            slots.release()
            return .other(raw)
        }
        if events.isEnabled { events.received(message, alsoStarted: true) }
        return .started(l, plugin, started)
    }
}
