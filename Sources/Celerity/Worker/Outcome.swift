import Foundation
import Logging
import RedisClient

/// What became of one message: the one value that every route produces (inline built-ins,
/// tasks, one-shot plugins, persistent plugins answered on their reader thread, and the
/// triage before a run).
struct Outcome: Sendable {
    /// Calls `body` with each outcome and disposal of `batch` read in place. `for (o, d) in
    /// batch`, `batch[i].0` and even `pointer.pointee.1` copy the whole tuple (~1 KB, a retain
    /// and a release of each of the outcome's ~18 references): ~3% of the worker's CPU with
    /// task events on, by perf. Elements are at their tuple's offsets (struct layout).
    @inline(__always)
    static func forEachInPlace(_ batch: [(Outcome, Disposal)], _ body: (UnsafePointer<Outcome>, UnsafePointer<Disposal>) -> Void) {
        batch.withUnsafeBufferPointer { batch in
            guard let base = batch.baseAddress else { return }
            for i in batch.indices {
                let t = UnsafeRawPointer(base + i)
                body(t.assumingMemoryBound(to: Outcome.self), (t + disposalOffset).assumingMemoryBound(to: Disposal.self))
            }
        }
    }

    private static let disposalOffset = MemoryLayout<(Outcome, Disposal)>.offset(of: \(Outcome, Disposal).1)!

    enum Result: Sendable {
        /// The handler returned a value.
        case success(JSONValue)
        /// The handler failed (the failure is already cut to size: `TaskFailure.capped`).
        case failure(TaskFailure)
        /// REVOKED: revoked before it ran, terminated while running, or expired.
        case revoked(TaskFailure)
        /// No handler for its task name here.
        case notRegistered
        /// Its handler could not take it now (a plugin paused or shutting down): back to the
        /// head of its queue unchanged.
        case handBack
        /// Its body will not be decoded here (`ProtocolError.refused`): the client is told
        /// why, then the message goes to the dead letters for `reason`.
        case refused(TaskFailure, reason: String)
    }
    let result: Result
    let message: TaskMessage
    /// The task's manifest entry (nil for an unknown task).
    let spec: TaskSpec?
    /// How long its handler ran (nil: it did not run, or ran inline where it was fetched
    /// while task events were off).
    var runtime: Duration? = nil
}

/// What the worker writes for an outcome: decided in one place, `Worker.decide`.
enum Disposal: Sendable {
    /// Store `meta` (nil: nothing to store) and ack, in the batched pipeline (`Completer`).
    case complete(ResultMeta?)
    /// Store RETRY and park the next attempt in the delayed set.
    case retry(TaskFailure)
    /// Store `meta` one by one, then move the message to the dead letters.
    case deadLetter(ResultMeta?, reason: String)
    /// Put the message back at the head of its queue.
    case handBack
    /// A workflow step: its own result (stored or dead-lettered) with what it sends and
    /// writes besides (Workflow/Worker+Workflow.swift). Never taken by the fast paths.
    case workflow(Continuation)

    var isRetry: Bool { if case .retry = self { return true } else { return false } }
}

extension Worker {
    /// The one decision of what is written for an outcome. Pure, so the fast paths call it on
    /// whatever thread they run (the fetcher's, a plugin's reader thread) and take their own
    /// quick write only when it says `.complete`.
    func decide(_ o: Outcome) -> Disposal {
        let base = decidePlain(o)
        return Embed.isPlain(o.message.embed) ? base : continuation(o, base)
    }

    /// The decision for a task that is not part of a workflow.
    private func decidePlain(_ o: Outcome) -> Disposal {
        let id = o.message.id
        let storesResults = o.spec?.storeResult ?? true
        switch o.result {
        case let .success(value):
            return .complete(storesResults ? ResultMeta.success(id, value).about(o.message) : nil)
        case .handBack:
            return .handBack
        case let .revoked(f):
            return .complete(ResultMeta.failure(id, f, state: .revoked).about(o.message))
        case .notRegistered:
            return .complete(.failure(id, .notRegistered(o.message.task)))
        case let .refused(f, why):
            return .deadLetter(storesResults ? .failure(id, f) : nil, reason: why)
        case let .failure(f):
            let meta = ResultMeta.failure(id, f).about(o.message)
            guard let spec = o.spec else { return .complete(meta) }
            if f.retryable && o.message.retries < spec.retries { return .retry(f) }
            // A task with retries that failed for good goes to the dead letters; so does one
            // whose result is not stored only in the log (docs/reliability.md, weak spot).
            guard storesResults else { return .complete(nil) }
            guard spec.retries > 0 else { return .complete(meta) }
            let why = "failed after \(o.message.retries) retr\(o.message.retries == 1 ? "y" : "ies"): \(f.description)"
            return .deadLetter(meta, reason: why)
        }
    }

    /// Carries out the decision for `outcome` (the usual path; the fast paths write
    /// `.complete` themselves), then records it. Never acks what was not stored.
    func dispose(_ outcome: Outcome, _ raw: [UInt8], queue: String, _ log: TaskLog) async {
        let message = outcome.message
        let disposal = decide(outcome)
        defer { record(outcome, disposal) }
        if case let .failure(f) = outcome.result {
            if case .retry = disposal {} else {   // a retry says so itself
                log.warning("task failed", metadata: Self.runtimeMetadata(outcome.runtime).merging(["error": .string(f.description)]) { a, _ in a })
            }
        }
        switch disposal {
        case let .complete(meta):
            if await !completer.complete(raw, store: completionStore(meta, message), of: message) {
                log.error("result not stored; message left unacked for redelivery")
            }
        case let .retry(failure):
            guard let spec = outcome.spec else { return }
            await retry(message, raw, spec: spec, failure: failure, log)
        case let .deadLetter(meta, why):
            // A unique task's key goes before its result is visible (and again, idempotent,
            // with the move to the dead letters).
            await releaseUnique(message)
            if let meta, !message.ignoreResult {
                let stored: Void?? = try? await withRedisRetry("store result", policy: .throughGrace) { try await self.results.store(meta, for: message) }
                guard case .some(.some) = stored else {
                    log.error("result not stored; message left unacked for redelivery")
                    return
                }
            }
            _ = try? await withRedisRetry("ack", policy: .throughGrace) { try await self.broker.deadLetter(raw, queue: message.queue, reason: why) }
        case .handBack:
            await requeue(raw, queue: queue, message: message, log)
        case let .workflow(c):
            await carryOut(c, message, raw, log)
        }
    }

    /// Deletes a unique task's key if it still holds this task's id (rare paths: dead letters).
    func releaseUnique(_ message: TaskMessage) async {
        guard let key = message.uniqueKey else { return }
        _ = try? await withRedisRetry("release unique key", policy: .throughGrace) {
            try await self.broker.releaseUnique(key, id: message.id)
        }
    }

    /// Where every outcome ends, exactly once, whatever route carried it (`dispose`, or a fast
    /// path after its own write of `.complete`), on whatever thread that route runs: the
    /// worker's counters and the outcome's task event (queued on `events`, which publishes
    /// it); metrics and the like hang here. Cheap and non-blocking: it runs on the fetcher's
    /// and the plugins' reader threads too.
    func record(_ outcome: Outcome, _ disposal: Disposal) {
        stats.withLock { Self.tally(outcome, disposal, into: &$0) }
        if events.wantsOutcomes { events.finished(outcome, retried: disposal.isRetry, announce: false) }
    }

    /// `record` for a tiny built-in run where it was fetched: its `task-received` and
    /// `task-started` go with its outcome's event. `events`: the switch, read once by the
    /// route that ran it (one atomic load per message, or per batch).
    func recordInline(_ outcome: Outcome, _ disposal: Disposal, events on: Bool) {
        stats.withLock { Self.tally(outcome, disposal, into: &$0) }
        if on { events.finished(outcome, retried: disposal.isRetry, announce: true) }
    }

    /// `recordInline` for a batch of inline successes written together: one lock for the batch.
    func recordInline(_ batch: [(Outcome, Disposal)], events on: Bool) {
        stats.withLock { s in
            Outcome.forEachInPlace(batch) { o, d in Self.tally(o.pointee.result, o.pointee.message.task, o.pointee.message.queue, o.pointee.runtime, d.pointee, into: &s) }
        }
        if on { events.finished(announcing: batch) }
    }

    private static func tally(_ outcome: Outcome, _ disposal: Disposal, into s: inout Stats) {
        tally(outcome.result, outcome.message.task, outcome.message.queue, outcome.runtime, disposal, into: &s)
    }

    private static func tally(_ result: Outcome.Result, _ task: String, _ queue: String, _ runtime: Duration?, _ disposal: Disposal, into s: inout Stats) {
        switch result {
        case .success, .failure, .revoked: s.perQueue[queue, default: 0] += 1
        case .notRegistered, .handBack, .refused: break
        }
        switch result {
        case .success:
            s.processed += 1
            s.perTask[task, default: TaskTally()].add(.succeeded, runtime)
        case .failure:
            s.processed += 1
            s.failed += 1
            if case .retry = disposal {
                s.retried += 1
                s.perTask[task, default: TaskTally()].add(.retried, runtime)
            } else {
                s.perTask[task, default: TaskTally()].add(.failed, runtime)
            }
        case .revoked:
            s.revoked += 1
            s.perTask[task, default: TaskTally()].add(.revoked, runtime)
        case .notRegistered, .handBack, .refused: break
        }
    }

    static func runtimeMetadata(_ runtime: Duration?) -> Logger.Metadata {
        guard let runtime else { return [:] }
        return ["runtime_ms": .string(ms(runtime))]
    }

    /// How the completer writes `meta` for `message` (nil: nothing to store, just ack): what
    /// the result backend says, unless the message asked for no result.
    func completionStore(_ meta: ResultMeta?, _ message: TaskMessage) -> ResultWrite? {
        guard let meta, !message.ignoreResult else { return nil }
        return results.write(meta, for: message)
    }
}
