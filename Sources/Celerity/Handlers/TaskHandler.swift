import Foundation
import Synchronization

/// A continuation resumed at most once, by whichever comes first.
final class OnceContinuation: Sendable {
    private let state = Mutex<(cont: CheckedContinuation<JSONValue, any Error>?, early: Result<JSONValue, any Error>?, done: Bool)>((nil, nil, false))
    func set(_ c: CheckedContinuation<JSONValue, any Error>) {
        let early: Result<JSONValue, any Error>? = state.withLock { s in
            if let e = s.early { s.done = true; return e }
            s.cont = c
            return nil
        }
        if let early { c.resume(with: early) }
    }
    func resume(with r: Result<JSONValue, any Error>) {
        let c: CheckedContinuation<JSONValue, any Error>? = state.withLock { s in
            if s.done { return nil }
            guard let c = s.cont else {
                if s.early == nil { s.early = r }
                return nil
            }
            s.done = true
            s.cont = nil
            return c
        }
        c?.resume(with: r)
    }
}

/// One call of a task, as a handler sees it.
public struct TaskCall: Sendable {
    public var id: String
    public var task: String
    public var args: [JSONValue]
    public var kwargs: [JSONMember]
    public var queue: String
    /// 1 for the first run, 2 after one retry, ...
    public var attempt: Int
    /// When the hard time limit strikes, if any.
    public var deadline: Date?
    /// When the soft time limit strikes, if any.
    public var softDeadline: Date?
    /// Set when the task is asked to stop (soft time limit, revoke, shutdown). Long-running
    /// built-ins should poll `isCancelled` and throw `TaskFailure.softTimeLimit`.
    public let cancellation = CancellationFlag()
    public var isCancelled: Bool { cancellation.isSet }
    public var rootID: String?
    public var parentID: String?
    public var retries: Int
    /// The worker's node name.
    public var worker: String
    /// Set by the worker when a successful value may be settled (result stored, message
    /// acked) right where it arrives: a handler that receives its answer on a thread of its
    /// own (a persistent plugin's stdout reader) calls it there, synchronously, before
    /// returning the value as usual. The hook may block on Redis: never call it from
    /// Swift's cooperative pool. The worker learns by itself whether it settled.
    public var settleOnAnswer: (@Sendable (JSONValue) -> Void)?

    public init(id: String, task: String, args: [JSONValue], kwargs: [JSONMember] = [], queue: String = "celery", attempt: Int = 1,
                deadline: Date? = nil, rootID: String? = nil, parentID: String? = nil, retries: Int = 0, worker: String = "") {
        self.id = id
        self.task = task
        self.args = args
        self.kwargs = kwargs
        self.queue = queue
        self.attempt = attempt
        self.deadline = deadline
        self.rootID = rootID
        self.parentID = parentID
        self.retries = retries
        self.worker = worker
    }

    /// Argument `i` by position, or by `name` in kwargs.
    public func argument(_ i: Int, _ name: String) -> JSONValue? {
        if i < args.count { return args[i] }
        return kwargs.first { $0.key == name }?.value
    }

    /// Checks the call has exactly the named parameters (positional or keyword) and returns them in order.
    /// Throws a Celery-style `TypeError` failure otherwise.
    public func bind(_ names: [String]) throws(TaskFailure) -> [JSONValue] {
        if args.count > names.count {
            throw .badArguments("\(task)() takes \(names.count) positional argument\(names.count == 1 ? "" : "s") but \(args.count) were given")
        }
        for kw in kwargs where !names.contains(kw.key) {
            throw .badArguments("\(task)() got an unexpected keyword argument '\(kw.key)'")
        }
        var out: [JSONValue] = []
        var missing: [String] = []
        for (i, n) in names.enumerated() {
            let fromKw = kwargs.first { $0.key == n }?.value
            if i < args.count {
                if fromKw != nil { throw .badArguments("\(task)() got multiple values for argument '\(n)'") }
                out.append(args[i])
            } else if let v = fromKw { out.append(v) } else { missing.append(n) }
        }
        if !missing.isEmpty {
            throw .badArguments("\(task)() missing \(missing.count) required argument\(missing.count == 1 ? "" : "s"): \(missing.map { "'\($0)'" }.joined(separator: ", "))")
        }
        return out
    }
}

/// A flag a synchronous built-in can poll to learn it should stop; and, while a one-shot
/// plugin's process runs, the way to send that process a signal (`revoke(terminate=True,
/// signal=...)`).
public final class CancellationFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    private let signaller = Mutex<(@Sendable (Int32) -> Void)?>(nil)
    public init() {}
    public var isSet: Bool { flag.load(ordering: .relaxed) }
    public func set() { flag.store(true, ordering: .relaxed) }

    /// Registers how to signal the running process (nil: it has ended).
    func whileRunning(signal: (@Sendable (Int32) -> Void)?) { signaller.withLock { $0 = signal } }

    /// Sends `signal` to the running process, if one is registered; whether one was.
    func deliver(_ signal: Int32) -> Bool {
        guard let send = signaller.withLock({ $0 }) else { return false }
        send(signal)
        return true
    }
}

/// Something that runs a task: a built-in Swift function or a plugin process.
/// A clean failure is thrown as `TaskFailure`; any other error becomes a FAILURE too.
public protocol TaskHandler: Sendable {
    func run(_ call: TaskCall) async throws -> JSONValue
    /// A function cheap enough to run right where the message is processed (no thread hop,
    /// no time-limit timer): tiny built-ins such as add. nil for everything else.
    var inlineBody: (@Sendable (TaskCall) throws -> JSONValue)? { get }
}

extension TaskHandler {
    public var inlineBody: (@Sendable (TaskCall) throws -> JSONValue)? { nil }
}

/// A synchronous Swift function run as a task on a thread outside the cooperative pool,
/// so CPU-heavy work (big factorials, matrix products) never stalls the worker's I/O.
public struct BuiltinHandler: TaskHandler {
    public let name: String
    public let body: @Sendable (TaskCall) throws -> JSONValue
    /// Runs in place (see `TaskHandler.inlineBody`): only for functions that take microseconds.
    public let inline: Bool
    public init(_ name: String, inline: Bool = false, _ body: @escaping @Sendable (TaskCall) throws -> JSONValue) {
        self.name = name
        self.inline = inline
        self.body = body
    }
    public var inlineBody: (@Sendable (TaskCall) throws -> JSONValue)? { inline ? body : nil }
    public func run(_ call: TaskCall) async throws -> JSONValue {
        // A Swift function cannot be stopped from outside; on cancellation (time limit, revoke,
        // shutdown) the caller stops waiting at once and the late result is dropped.
        let once = OnceContinuation()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (cont: CheckedContinuation<JSONValue, any Error>) in
                once.set(cont)
                BuiltinHandler.queue.async {
                    once.resume(with: Result { try body(call) })
                }
            }
        } onCancel: {
            once.resume(with: .failure(CancellationError()))
        }
    }
    /// Concurrent queue for built-ins: Dispatch's own threads, not Swift's cooperative pool.
    static let queue = DispatchQueue(label: "celerity.builtins", attributes: .concurrent)
}

/// Handlers by name: the built-ins a program links, looked up from tasks.yaml.
public struct BuiltinRegistry: Sendable {
    public var handlers: [String: any TaskHandler]
    /// The argument schema each built-in declares (a task naming it gets it unless its
    /// tasks.yaml entry gives `params:`; see `Manifest.withBuiltinSchemas`).
    public var params: [String: TaskParams] = [:]
    public init(_ handlers: [String: any TaskHandler] = [:]) { self.handlers = handlers }
    public var names: Set<String> { Set(handlers.keys) }
    /// `inline`: the function always takes microseconds (it then runs without a thread hop and
    /// cannot be stopped by a time limit); leave false for anything that may compute for long.
    /// `params`: what it accepts (checked before it runs), nil: anything.
    public mutating func register(_ name: String, inline: Bool = false, params: TaskParams? = nil, _ body: @escaping @Sendable (TaskCall) throws -> JSONValue) {
        handlers[name] = BuiltinHandler(name, inline: inline, body)
        self.params[name] = params
    }
}
