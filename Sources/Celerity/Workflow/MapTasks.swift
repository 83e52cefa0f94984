import Foundation

/// Celery's built-in canvas tasks `celery.map` (`task.map(it)`), `celery.starmap`
/// (`task.starmap(it)`, and each slice of `task.chunks(it, n)`): the named task is called once
/// per item, here, in order, and the list of its results is the result. The named task must
/// be served by this worker (as in Celery, where the worker calls it in-process).
struct MapTask: TaskHandler {
    let star: Bool
    let handlers: [String: any TaskHandler]
    /// The hard time limit of a named task (tasks.yaml's, or `time_limit`'s at run time): each
    /// call of it gets it, within the map's own deadline (a one-shot plugin's limit comes with
    /// its call, nowhere else).
    var hardLimit: @Sendable (String) -> Double? = { _ in nil }
    /// The argument schema of a named task: each item's call is checked against it.
    var params: @Sendable (String) -> TaskParams? = { _ in nil }

    static let names: Set<String> = ["celery.map", "celery.starmap"]

    func run(_ call: TaskCall) async throws -> JSONValue {
        let v = try call.bind(["task", "it"])
        guard let sig = try? Signature(json: v[0]) else {
            throw TaskFailure(type: "TypeError", message: "\(call.task)(): 'task' must be a signature, got \(v[0].serialized().prefix(80))")
        }
        guard let it = v[1].arrayValue else { throw TaskFailure(type: "TypeError", message: "\(call.task)(): 'it' must be a list") }
        guard let handler = handlers[sig.task] else { throw TaskFailure.notRegistered(sig.task) }
        var out: [JSONValue] = []
        out.reserveCapacity(it.count)
        for item in it {
            if call.isCancelled { throw TaskFailure.softTimeLimit(0) }
            let args: [JSONValue]
            if star {
                guard let a = item.arrayValue else { throw TaskFailure(type: "TypeError", message: "\(call.task)(): each item must be a list of arguments, got \(item.serialized().prefix(80))") }
                args = a
            } else {
                args = [item]
            }
            var deadline = call.deadline
            if let own = hardLimit(sig.task) {
                let d = Date().addingTimeInterval(own)
                deadline = min(deadline ?? d, d)
            }
            var c = TaskCall(id: call.id, task: sig.task, args: args, kwargs: sig.kwargs, queue: call.queue, attempt: call.attempt,
                             deadline: deadline, rootID: call.rootID, parentID: call.parentID, retries: call.retries, worker: call.worker)
            c.softDeadline = call.softDeadline
            if let p = params(sig.task), let problem = p.validate(task: sig.task, args: args, kwargs: sig.kwargs) { throw problem.failure }
            if let body = handler.inlineBody { out.append(try body(c)) } else { out.append(try await handler.run(c)) }
        }
        return .array(out)
    }
}
