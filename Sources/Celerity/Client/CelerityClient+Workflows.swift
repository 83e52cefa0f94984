import Foundation

// Workflows from Swift: Celery's canvas (chain, group, chord) built as the signatures a
// Python client sends, so Celerity workers and Python Celery workers alike carry them on.
//
//     let c = try CelerityClient(broker: "redis://localhost:6379/0", manifest: manifest)
//     let add = "add_module.tasks.add"
//     let r = try await c.apply(c.chain([c.signature(add, args: [1, 2]), c.signature(add, args: [3])]))
//     try await r.get()   // 6

extension CelerityClient {
    /// One call in a workflow (Celery's `task.s(...)`; `immutable`: `task.si(...)`, the
    /// previous step's result is not prepended to its args).
    public func signature(_ task: String, args: [JSONValue] = [], kwargs: [JSONMember] = [], options: SendOptions = SendOptions(),
                          immutable: Bool = false) -> Signature {
        var o: [JSONMember] = []
        if let q = options.queue { o.append(JSONMember("queue", .string(q))) }
        if let c = options.countdown { o.append(JSONMember("countdown", .double(c))) }
        if let e = options.eta { o.append(JSONMember("eta", .string(CeleryDate.format(e)))) }
        if let e = options.expires { o.append(JSONMember("expires", .string(CeleryDate.format(e)))) }
        if options.priority != 0 { o.append(JSONMember("priority", .int(options.priority))) }
        if let t = options.timeLimit { o.append(JSONMember("time_limit", .double(t))) }
        if options.ignoreResult { o.append(JSONMember("ignore_result", true)) }
        if let id = options.taskID { o.append(JSONMember("task_id", .string(id))) }
        return Signature(task: task, args: args, kwargs: kwargs, options: o, immutable: immutable)
    }

    /// Steps run one after the other, each given the previous one's result as first argument.
    public func chain(_ steps: [Signature]) -> Signature {
        Signature(task: "celery.chain", kwargs: [JSONMember("tasks", .array(steps.map(\.json)))], subtaskType: "chain")
    }

    /// Members run in parallel; the result is the list of their results, in order.
    public func group(_ members: [Signature]) -> Signature {
        Signature(task: "celery.group", kwargs: [JSONMember("tasks", .array(members.map(\.json)))], subtaskType: "group")
    }

    /// The header's parts run in parallel; when all are done, `body` gets the list of their
    /// results. Needs the Redis result backend (rpc:// has no chords, as in Celery).
    public func chord(_ header: [Signature], _ body: Signature) -> Signature {
        Signature(task: "celery.chord", kwargs: [JSONMember("header", group(header).json), JSONMember("body", body.json),
                                                 JSONMember("kwargs", .object([]))], subtaskType: "chord")
    }

    /// Sends a workflow (or a single signature); `args` go before its first calls' args. The
    /// handle's `get()` returns the final result: a chain's last step's, a group's list, a
    /// chord's body's.
    public func apply(_ workflow: Signature, args: [JSONValue] = []) async throws -> WorkflowResult {
        var sig = workflow
        let final = try freeze(&sig)
        var d = Canvas.Dispatch()
        let tasks = manifest?.tasks
        let canvas = Canvas { tasks?[$0]?.queue ?? "celery" }
        do throws(WorkflowError) {
            try canvas.apply(sig, prefix: args, rest: nil, parentID: nil, rootID: nil, into: &d)
        } catch {
            throw ClientError("invalid workflow: \(error.message)")
        }
        if !d.chordSizes.isEmpty {
            guard let resultRedis else { throw ClientError("a chord needs the Redis result backend: the rpc backend does not support chords (as in Celery)") }
            let chords = RedisResultBackend(redis: resultRedis, expires: backend.expires)
            for (group, size) in d.chordSizes { try await chords.setChordSize(group, size) }
        }
        if d.messages.contains(where: { !$0.ignoreResult }) { try await ensureSubscribed() }
        let mark = waiters.mark
        try await publish(d.messages)
        let own = !perCallChannels.load(ordering: .acquiring)
        return WorkflowResult(final: final, client: self, mark: own ? mark : nil)
    }

    /// Gives every call of the workflow its id (and this client's `reply_to`, for rpc), as
    /// Celery's `freeze()` does; returns where its final result will be.
    private func freeze(_ sig: inout Signature) throws -> WorkflowResult.Final {
        func tasks(_ key: String, of s: Signature) throws -> [Signature] {
            do throws(WorkflowError) { return try Signature.list(s.kwarg(key)) } catch { throw ClientError("invalid workflow: \(error.message)") }
        }
        switch sig.subtaskType {
        case nil:
            if sig.taskID == nil { sig.setOption("task_id", .string(newTaskID())) }
            if sig.option("reply_to") == nil { sig.setOption("reply_to", .string(replyTo)) }
            // Routed here, by this client's manifest: a Python Celery worker sends the next
            // step where its own routes say (by default the `celery` queue), not where ours do.
            if sig.option("queue") == nil, let q = manifest?.tasks[sig.task]?.queue { sig.setOption("queue", .string(q)) }
            return .task(sig.taskID!)
        case "chain", "group":
            var members = try tasks("tasks", of: sig)
            guard !members.isEmpty else { throw ClientError("invalid workflow: an empty \(sig.subtaskType!)") }
            var finals: [WorkflowResult.Final] = []
            for i in members.indices { finals.append(try freeze(&members[i])) }
            sig.setOption("task_id", .string(sig.taskID ?? newTaskID()))
            sig.kwargs = [JSONMember("tasks", .array(members.map(\.json)))]
            return sig.subtaskType == "chain" ? finals.last! : .group(finals)
        case "chord":
            guard let headerJSON = sig.kwarg("header"), let bodyJSON = sig.kwarg("body") else { throw ClientError("invalid workflow: a chord needs a header and a body") }
            var header: Signature, body: Signature
            do throws(WorkflowError) { (header, body) = (try Signature(json: headerJSON), try Signature(json: bodyJSON)) } catch { throw ClientError("invalid workflow: \(error.message)") }
            _ = try freeze(&header)
            let final = try freeze(&body)
            sig.setOption("task_id", header.option("task_id"))
            sig.kwargs = [JSONMember("header", header.json), JSONMember("body", body.json), JSONMember("kwargs", .object([]))]
            return final
        case let other?:
            throw ClientError("invalid workflow: canvas type '\(other)' cannot be sent from Swift")
        }
    }
}

/// The handle of a sent workflow: where its final result will be.
public struct WorkflowResult: Sendable {
    public indirect enum Final: Sendable {
        case task(String)
        case group([Final])
    }
    public let final: Final
    public let client: CelerityClient
    let mark: Int?

    /// The id whose result is the workflow's (nil for a group: `ids`).
    public var id: String? { if case let .task(id) = final { return id } else { return nil } }

    /// Waits for the final result: a value, or a list for a group; throws the first failure.
    public func get(timeout: Duration = .seconds(60)) async throws -> JSONValue {
        let deadline = ContinuousClock.now + timeout
        func wait(_ f: Final) async throws -> JSONValue {
            switch f {
            case let .task(id):
                let left = deadline - .now
                return try await AsyncResult(id: id, client: client, mark: mark).get(timeout: left > .zero ? left : .milliseconds(1))
            case let .group(members):
                var out: [JSONValue] = []
                for m in members { out.append(try await wait(m)) }
                return .array(out)
            }
        }
        return try await wait(final)
    }
}
