import Foundation
import Logging
import RedisClient

// Celery's workflows on the worker's side: what a finished task that carries a canvas
// (`embed`: link, link_error, the rest of a chain, a chord's body) sends and writes besides
// its own result. `decide` asks `continuation` for such messages only; `dispose` carries it
// out with `carryOut`. The rules are Celery 5.7's (app/trace.py, backends/base.py and
// redis.py); docs/workflows.md lists them.

/// What a workflow step writes besides (and with) its own result.
struct Continuation: Sendable {
    /// The task's own result (with its `children`), stored with the follow-ups and the ack in
    /// one transaction; or dead-lettered with this reason after a final failure with retries.
    var meta: ResultMeta?
    var deadLetter: String?
    /// Messages to send: the next step of a chain, link callbacks, errbacks.
    var dispatch = Canvas.Dispatch()
    /// Later steps of a failed chain, stored as FAILURE so that waiting on them raises.
    var failedSteps: [(ResultMeta, TaskMessage)] = []
    /// Chord parts that returned: this task (a part of a chord's header), or chord parts among
    /// the failed steps.
    var chordParts: [ChordPart] = []
}

/// One part of a chord's header that returned.
struct ChordPart: Sendable {
    var group: String
    var taskID: String
    var index: Int?
    var rootID: String?
    var state: TaskState
    var result: JSONValue
    var body: Signature
}

extension Worker {
    var canvas: Canvas {
        let tasks = manifest.tasks
        return Canvas { tasks[$0]?.queue ?? "celery" }
    }

    /// What `base` (the decision for a plain task) becomes when the message carries a
    /// workflow. A canvas that cannot be read is logged; the task's own result is still written.
    func continuation(_ o: Outcome, _ base: Disposal) -> Disposal {
        let message = o.message
        let embed: Embed
        do throws(WorkflowError) { embed = try Embed(message.embed) } catch {
            logger.error("task's workflow cannot be read; only its own result is stored", metadata: ["task_id": .string(message.id), "error": .string(error.message)])
            return base
        }
        let root = message.rootID ?? message.id
        var c = Continuation()
        switch (o.result, base) {
        case let (.success(value), .complete(meta)):
            c.meta = meta
            do throws(WorkflowError) {
                // link callbacks, then the next step of the chain (Celery's order); several
                // plain callbacks go as one group.
                let groups = embed.callbacks.filter { $0.subtaskType == "group" }
                let plain = embed.callbacks.filter { $0.subtaskType != "group" }
                for g in groups { try canvas.apply(g, prefix: [value], rest: nil, parentID: message.id, rootID: root, into: &c.dispatch) }
                if plain.count == 1 {
                    try canvas.apply(plain[0], prefix: [value], rest: nil, parentID: message.id, rootID: root, into: &c.dispatch)
                } else if plain.count > 1 {
                    let g = Signature(task: "celery.group", kwargs: [JSONMember("tasks", .array(plain.map(\.json)))], subtaskType: "group")
                    try canvas.apply(g, prefix: [value], rest: nil, parentID: message.id, rootID: root, into: &c.dispatch)
                }
                if let next = embed.chain.last {
                    try canvas.apply(next, prefix: [value], rest: Array(embed.chain.dropLast()), parentID: message.id, rootID: root, into: &c.dispatch)
                }
            } catch {
                logger.error("task's follow-ups cannot be sent; only its own result is stored", metadata: ["task_id": .string(message.id), "error": .string(error.message)])
                c.dispatch = Canvas.Dispatch()
            }
            c.meta?.children = c.dispatch.children
            if let body = embed.chord, let group = message.groupID {
                c.chordParts.append(ChordPart(group: group, taskID: message.id, index: message.groupIndex, rootID: root, state: .success, result: value, body: body))
            }
        case let (.failure(f), .complete(meta)), let (.failure(f), .deadLetter(meta, _)):
            c.meta = meta
            if case let .deadLetter(_, why) = base { c.deadLetter = why }
            failed(f, id: message.id, rootID: root, chain: embed.chain, errbacks: embed.errbacks, into: &c)
            if let body = embed.chord, let group = message.groupID {
                c.chordParts.append(ChordPart(group: group, taskID: message.id, index: message.groupIndex, rootID: root, state: .failure, result: f.json, body: body))
            }
        case let (.revoked(f), .complete(meta)):
            c.meta = meta
            if let body = embed.chord, let group = message.groupID {
                c.chordParts.append(ChordPart(group: group, taskID: message.id, index: message.groupIndex, rootID: root, state: .revoked, result: f.json, body: body))
            }
        default:
            return base
        }
        return .workflow(c)
    }

    /// A failure's consequences (Celery's `_fail_chain` and errbacks): every later step of
    /// its chain is stored as FAILURE with the same exception (a chord part among them
    /// returns as failed; a chord step's body fails too), and each errback is sent with the
    /// failed task's id as its first argument.
    func failed(_ f: TaskFailure, id: String, rootID: String, chain: [Signature], errbacks: [Signature], into c: inout Continuation) {
        var steps = chain
        while !steps.isEmpty {
            let step = steps.removeFirst()
            let stub = canvas.message(step, prefix: [], rest: nil, parentID: id, rootID: rootID)
            if let tid = step.taskID {
                var meta = ResultMeta.failure(tid, f)
                meta.parentID = id
                c.failedSteps.append((meta, stub))
            }
            if let bodyJSON = step.option("chord"), let body = try? Signature(json: bodyJSON), let group = step.option("group_id")?.stringValue, let tid = step.taskID {
                c.chordParts.append(ChordPart(group: group, taskID: tid, index: step.option("group_index")?.intValue, rootID: rootID, state: .failure, result: f.json, body: body))
            }
            if step.subtaskType == "chord", let body = step.kwarg("body").flatMap({ try? Signature(json: $0) }) { steps.append(body) }
        }
        guard !errbacks.isEmpty else { return }
        do throws(WorkflowError) {
            if errbacks.count == 1 {
                try canvas.apply(errbacks[0], prefix: [.string(id)], rest: nil, parentID: id, rootID: rootID, into: &c.dispatch)
            } else {
                let g = Signature(task: "celery.group", kwargs: [JSONMember("tasks", .array(errbacks.map(\.json)))], subtaskType: "group")
                try canvas.apply(g, prefix: [.string(id)], rest: nil, parentID: id, rootID: rootID, into: &c.dispatch)
            }
        } catch {
            logger.error("errbacks cannot be sent", metadata: ["task_id": .string(id), "error": .string(error.message)])
        }
    }

    /// Carries out a continuation: chord sizes, the failed steps, the chord parts (and a
    /// completed chord's body), then the task's own result with its follow-ups and its ack in
    /// one transaction (so a worker killed before it sent them runs the task again, and one
    /// killed after it sent them has acked it).
    func carryOut(_ c: Continuation, _ message: TaskMessage, _ raw: [UInt8], _ log: TaskLog) async {
        for (group, size) in c.dispatch.chordSizes {
            guard await setChordSize(group, size, log) else { return }
        }
        for (meta, stub) in c.failedSteps where !stub.ignoreResult {
            let stored: Void?? = try? await withRedisRetry("store result", policy: .throughGrace) { try await self.results.store(meta, for: stub) }
            guard case .some(.some) = stored else { log.error("results of a failed chain not stored; message left unacked for redelivery"); return }
        }
        for part in c.chordParts {
            guard await returnChordPart(part, log) else { log.error("chord part not recorded; message left unacked for redelivery"); return }
        }
        let pushes = c.dispatch.envelopes
        if let why = c.deadLetter {
            await releaseUnique(message)
            if let meta = c.meta, !message.ignoreResult {
                let stored: Void?? = try? await withRedisRetry("store result", policy: .throughGrace) { try await self.results.store(meta, for: message) }
                guard case .some(.some) = stored else { log.error("result not stored; message left unacked for redelivery"); return }
            }
            let pushed: Void?? = try? await withRedisRetry("send follow-ups", policy: .throughGrace) { try await self.broker.push(pushes) }
            guard case .some(.some) = pushed else { log.error("errbacks not sent; message left unacked for redelivery"); return }
            _ = try? await withRedisRetry("ack", policy: .throughGrace) { try await self.broker.deadLetter(raw, queue: message.queue, reason: why) }
            return
        }
        if await !completer.complete([Completer.Item(raw: raw, store: completionStore(c.meta, message), pushes: pushes, of: message)]) {
            log.error("result not stored; message left unacked for redelivery")
        }
    }

    private func setChordSize(_ group: String, _ size: Int, _ log: TaskLog) async -> Bool {
        guard let chords = results.chords else {
            log.error("a chord needs the Redis result backend (rpc:// has no chords, as in Celery); its parts are not sent")
            return false
        }
        let done: Void?? = try? await withRedisRetry("set chord size", policy: .throughGrace) { try await chords.setChordSize(group, size) }
        return done != nil && done! != nil
    }

    /// Records a chord part; when it completed the chord and this worker won the claim, sends
    /// the body with the parts' results in order, or fails it with Celery's ChordError when a
    /// part failed. False: Redis could not be reached (leave the part's message unacked).
    ///
    /// A part run again after its worker died may find the chord complete and claimed by that
    /// worker, which may have died before it sent the body: it waits until the claim is done
    /// (the body was sent) or lapses (then it claims it and sends the body), with its own
    /// message unacked meanwhile.
    private func returnChordPart(_ p: ChordPart, _ log: TaskLog) async -> Bool {
        guard let chords = results.chords else {
            log.error("a chord part arrived but the result backend has no chords (rpc://); its result cannot be joined")
            return true
        }
        let deadline = ContinuousClock.now + .seconds(3 * RedisResultBackend.claimSeconds)
        var claimed: ChordJoin?, waited = false
        while claimed == nil {
            let returned: ChordPartReturn?? = try? await withRedisRetry("chord part", policy: .throughGrace) {
                try await chords.partReturned(group: p.group, taskID: p.taskID, index: p.index, state: p.state, result: p.result)
            }
            guard case let .some(.some(r)) = returned else { return false }
            switch r {
            case .recorded: return true   // not the last part, or the chord is done
            case let .claimed(j): claimed = j
            case .claimedElsewhere:
                if isStopping { return false }
                guard ContinuousClock.now < deadline else {
                    log.error("chord complete but its claim stayed with another worker; this part is acked without sending the body", metadata: ["group": .string(p.group)])
                    return true
                }
                if !waited { log.warning("chord complete and claimed by another worker: waiting until its body is sent or the claim lapses", metadata: ["group": .string(p.group)]) }
                waited = true
                try? await Task.sleep(for: .milliseconds(500))
            }
        }
        guard let join = claimed else { return true }
        var body = p.body
        let bodyID = body.taskID ?? FastUUID.string()
        body.setOption("task_id", .string(bodyID))
        if let bad = join.parts.first(where: { $0.state == .failure || $0.state == .revoked }) {
            let cause = TaskFailure(json: bad.result, traceback: nil)
            let err = TaskFailure(type: "ChordError", message: "Dependency \(bad.taskID) raised \(cause.type)('\(cause.message)')", module: "celery.exceptions")
            log.warning("chord failed: its body is not run", metadata: ["group": .string(p.group), "error": .string(err.description)])
            var c = Continuation()
            c.failedSteps.append((ResultMeta.failure(bodyID, err), canvas.message(body, prefix: [], rest: nil, parentID: p.taskID, rootID: p.rootID)))
            failed(err, id: bodyID, rootID: p.rootID ?? bodyID, chain: (try? Signature.list(body.option("chain"))) ?? [],
                   errbacks: (try? Signature.list(body.option("link_error"))) ?? [], into: &c)
            for (meta, stub) in c.failedSteps { _ = try? await withRedisRetry("store result", policy: .throughGrace) { try await self.results.store(meta, for: stub) } }
            let pushes = c.dispatch.envelopes
            _ = try? await withRedisRetry("send errbacks", policy: .throughGrace) { try await self.broker.push(pushes) }
            _ = try? await withRedisRetry("chord size", policy: .throughGrace) { try await chords.dropSize(p.group) }
            return true
        }
        guard (try? await withRedisRetry("chord claim", policy: .throughGrace) { try await chords.extendClaim(join) }) == .some(.some(true)) else {
            log.warning("chord body not sent: the claim to send it was lost", metadata: ["group": .string(p.group)])
            return true
        }
        var d = Canvas.Dispatch()
        do throws(WorkflowError) {
            try canvas.apply(body, prefix: [.array(join.parts.map(\.result))], rest: nil, parentID: p.taskID, rootID: p.rootID, into: &d)
        } catch {
            log.error("chord body cannot be sent", metadata: ["group": .string(p.group), "error": .string(error.message)])
            return true
        }
        for (group, size) in d.chordSizes { guard await setChordSize(group, size, log) else { return false } }
        let pushes = d.envelopes
        if completer.storesOnBroker {
            // One step: the body is sent and the chord marked done, or neither. A worker killed
            // before it leaves the claim to lapse (a re-run part then sends the body); one
            // killed after leaves the chord done (never sent twice).
            let sent: Bool?? = try? await withRedisRetry("send chord body", policy: .throughGrace) { try await chords.sendBody(join, messages: pushes) }
            guard case let .some(.some(ok)) = sent else { return false }
            if !ok { log.warning("chord body not sent here: the claim to send it was lost (or it was sent already)", metadata: ["group": .string(p.group)]) }
            return true
        }
        // The result backend on another Redis: the body, then the chord marked done (two
        // steps: a worker killed between them leaves the claim to lapse, and a part run again
        // then sends the body a second time).
        let pushed: Void?? = try? await withRedisRetry("send chord body", policy: .throughGrace) { try await self.broker.push(pushes) }
        guard case .some(.some) = pushed else { return false }
        _ = try? await withRedisRetry("finish chord", policy: .throughGrace) { try await chords.finish(join) }
        return true
    }
}
