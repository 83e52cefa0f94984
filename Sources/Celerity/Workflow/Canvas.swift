import Foundation

/// Turns signatures into the messages that carry them out, as a Celery worker's
/// `signature.apply_async(...)` does (celery/canvas.py, app/trace.py), and as clients build
/// them: the same ids (`options.task_id`), headers (`root_id`, `parent_id`, `group`,
/// `group_index`), `reply_to`, and `embed` (link, link_error, the rest of a chain reversed,
/// a chord's body). Facts: `docs/workflows.md`.
struct Canvas: Sendable {
    /// The queue of a task whose signature names none: the manifest's route, else `celery`.
    /// (Celery sends such follow-ups to `celery`; routing by tasks.yaml is what a user means.)
    let route: @Sendable (String) -> String

    /// What applying signatures produced.
    struct Dispatch: Sendable {
        /// The messages to push, in order.
        var messages: [TaskMessage] = []
        /// Chord sizes to set (`celery-taskset-meta-<group>.s`) before the last part is pushed.
        var chordSizes: [(group: String, size: Int)] = []
        /// Result tuples of what was applied directly, for the parent's `children`.
        var children: [JSONValue] = []
        /// The messages as they are pushed: (list key for their queue and priority, envelope).
        var envelopes: [(String, [UInt8])] { messages.map { (Keys.queue($0.queue, priority: $0.priority), $0.encode()) } }
    }

    /// `[[id, null], null]`: Celery's result tuple of one task (`AsyncResult.as_tuple()`).
    static func tuple(_ id: String) -> JSONValue { .array([.array([.string(id), .null]), .null]) }
    /// `[[gid, null], [member tuples]]`: a group's (`GroupResult.as_tuple()`).
    static func groupTuple(_ gid: String, _ members: [JSONValue]) -> JSONValue { .array([.array([.string(gid), .null]), .array(members)]) }

    /// Applies `sig` with `prefix` put before its args (the parent's result, or the failed
    /// task's id for an errback) unless it is immutable; `rest`: the chain that follows it
    /// (last step first), nil to keep what its options say.
    func apply(_ sig: Signature, prefix: [JSONValue], rest: [Signature]?, parentID: String?, rootID: String?,
               into d: inout Dispatch) throws(WorkflowError) {
        switch sig.subtaskType {
        case nil, "xmap", "xstarmap":
            let m = message(sig, prefix: prefix, rest: rest, parentID: parentID, rootID: rootID)
            d.messages.append(m)
            d.children.append(Self.tuple(m.id))
        case "chain":
            var tasks = try Signature.list(sig.kwarg("tasks"))
            guard var first = tasks.first else { return }
            // The chain's own routing options reach its first step; its link/link_error belong
            // to its last step (Celery applies a chain's callbacks when the chain is done).
            Self.inherit(sig, into: &first)
            if tasks.count > 1 {
                for key in ["link", "link_error"] where tasks[tasks.count - 1].option(key) == nil {
                    tasks[tasks.count - 1].setOption(key, sig.option(key))
                }
            } else {
                for key in ["link", "link_error"] where first.option(key) == nil { first.setOption(key, sig.option(key)) }
            }
            // Run order after `first`: the chain's other steps, then what followed the chain;
            // reversed, as `embed.chain` holds it.
            let after = (rest ?? []) + Array(tasks.dropFirst().reversed())
            try apply(first, prefix: prefix, rest: after.isEmpty && rest == nil ? nil : after, parentID: parentID, rootID: rootID, into: &d)
        case "group":
            if let rest, !rest.isEmpty {
                throw WorkflowError("a group followed by more steps in a chain (Celery makes that a chord when it builds the chain): '\(sig.task)'")
            }
            try group(sig, prefix: prefix, parentID: parentID, rootID: rootID, into: &d)
        case "chord":
            try chord(sig, prefix: prefix, rest: rest ?? [], parentID: parentID, rootID: rootID, into: &d)
        case "chunks":
            // `task.chunks(it, n)`: a group of `celery.starmap` calls over slices of `it`.
            guard let task = sig.kwarg("task"), let it = sig.kwarg("it")?.arrayValue, let n = sig.kwarg("n")?.intValue, n > 0 else {
                throw WorkflowError("a chunks signature needs kwargs task, it and n > 0")
            }
            var members: [JSONValue] = []
            var start = 0
            while start < it.count {
                let part = Array(it[start..<min(start + n, it.count)])
                members.append(Signature(task: "celery.starmap", kwargs: [JSONMember("task", task), JSONMember("it", .array(part))],
                                         subtaskType: "xstarmap", immutable: true).json)
                start += n
            }
            var g = Signature(task: "celery.group", kwargs: [JSONMember("tasks", .array(members))], options: sig.options, subtaskType: "group")
            g.setOption("task_id", sig.taskID.map { .string($0) })
            try group(g, prefix: [], parentID: parentID, rootID: rootID, into: &d)
        case let other?:
            throw WorkflowError("canvas type '\(other)' of '\(sig.task)' is not supported")
        }
    }

    /// Options of a canvas that its calls take unless they set their own: where to send them
    /// and where their results go.
    static let inherited = ["queue", "routing_key", "reply_to", "priority", "expires", "time_limit", "soft_time_limit"]
    static func inherit(_ canvas: Signature, into call: inout Signature) {
        for key in inherited where call.option(key) == nil { call.setOption(key, canvas.option(key)) }
    }

    /// Each member with `group` / `group_index` headers.
    func group(_ sig: Signature, prefix: [JSONValue], parentID: String?, rootID: String?, into d: inout Dispatch) throws(WorkflowError) {
        let gid = sig.taskID ?? FastUUID.string()
        var inner = Dispatch()
        for (i, var member) in try Signature.list(sig.kwarg("tasks")).enumerated() {
            Self.inherit(sig, into: &member)
            member.setOption("group_id", .string(gid))
            member.setOption("group_index", .int(i))
            try apply(member, prefix: prefix, rest: nil, parentID: parentID, rootID: rootID, into: &inner)
        }
        d.messages += inner.messages
        d.chordSizes += inner.chordSizes
        d.children.append(Self.groupTuple(gid, inner.children))
    }

    /// The header's parts, each carrying the body (`embed.chord`); the chord's size is set
    /// before its parts are pushed, so the last part to finish always finds it.
    func chord(_ sig: Signature, prefix: [JSONValue], rest: [Signature], parentID: String?, rootID: String?, into d: inout Dispatch) throws(WorkflowError) {
        guard let bodyJSON = sig.kwarg("body") else { throw WorkflowError("a chord signature has no body") }
        var body = try Signature(json: bodyJSON)
        let headerValue = sig.kwarg("header")
        let header: [Signature]
        var gid = sig.taskID
        if let h = headerValue, case .object = h {
            let g = try Signature(json: h)
            header = try Signature.list(g.kwarg("tasks"))
            gid = gid ?? g.taskID
        } else {
            header = try Signature.list(headerValue)
        }
        let groupID = gid ?? FastUUID.string()
        if body.taskID == nil { body.setOption("task_id", .string(FastUUID.string())) }
        body.setOption("group_id", .string(groupID))
        if !rest.isEmpty { body.setOption("chain", .array(rest.map(\.json))) }
        if header.isEmpty {
            // An empty header: the body runs at once with no results.
            try apply(body, prefix: [.array([])], rest: nil, parentID: parentID, rootID: rootID, into: &d)
            return
        }
        d.chordSizes.append((groupID, header.count))
        var inner = Dispatch()
        for (i, var part) in header.enumerated() {
            part.setOption("group_id", .string(groupID))
            part.setOption("group_index", .int(i))
            part.setOption("chord", body.json)
            try apply(part, prefix: prefix, rest: nil, parentID: parentID, rootID: rootID, into: &inner)
        }
        d.messages += inner.messages
        d.chordSizes += inner.chordSizes
        d.children.append(Self.tuple(body.taskID!))
    }

    /// One task message for a plain signature.
    func message(_ sig: Signature, prefix: [JSONValue], rest: [Signature]?, parentID: String?, rootID: String?) -> TaskMessage {
        let id = sig.taskID ?? FastUUID.string()
        let queue = sig.option("queue")?.stringValue ?? sig.option("routing_key")?.stringValue ?? route(sig.task)
        var eta: Date?
        if let c = sig.option("countdown")?.doubleValue { eta = Date().addingTimeInterval(c) }
        if let e = sig.option("eta")?.stringValue { eta = CeleryDate.parse(e) }
        var expires: Date?
        if let e = sig.option("expires") { expires = e.doubleValue.map { Date().addingTimeInterval($0) } ?? e.stringValue.flatMap(CeleryDate.parse) }
        var m = TaskMessage(id: id, task: sig.task, args: sig.immutable ? sig.args : prefix + sig.args, kwargs: sig.kwargs, queue: queue,
                            priority: sig.option("priority")?.intValue ?? 0, eta: eta, expires: expires,
                            replyTo: sig.option("reply_to")?.stringValue, hardTimeLimit: sig.option("time_limit")?.doubleValue,
                            softTimeLimit: sig.option("soft_time_limit")?.doubleValue, ignoreResult: sig.option("ignore_result")?.boolValue ?? false,
                            rootID: sig.option("root_id")?.stringValue ?? rootID ?? id, parentID: sig.option("parent_id")?.stringValue ?? parentID)
        m.groupID = sig.option("group_id")?.stringValue
        m.groupIndex = sig.option("group_index")?.intValue
        let chain: JSONValue = rest.map { .array($0.map(\.json)) } ?? sig.option("chain") ?? .null
        m.embed = .object([
            JSONMember("callbacks", sig.option("link") ?? .null), JSONMember("errbacks", sig.option("link_error") ?? .null),
            JSONMember("chain", chain), JSONMember("chord", sig.option("chord") ?? .null),
        ])
        return m
    }
}
