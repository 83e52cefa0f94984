import Foundation

/// Celery's task states.
public enum TaskState: String, Sendable, CaseIterable {
    case pending = "PENDING", received = "RECEIVED", started = "STARTED", success = "SUCCESS"
    case failure = "FAILURE", retry = "RETRY", revoked = "REVOKED"
    /// SUCCESS, FAILURE and REVOKED end a task.
    public var isReady: Bool { self == .success || self == .failure || self == .revoked }
}

/// A failure as Celery stores it: `{"exc_type", "exc_message": [args], "exc_module"}`.
public struct TaskFailure: Error, Sendable, Hashable, CustomStringConvertible {
    public var type: String
    public var message: String
    public var module: String
    public var traceback: String?
    /// What the worker does with the attempt that failed, decided where the failure is made.
    public var disposition: Disposition

    public enum Disposition: Sendable, Hashable {
        /// Stored as FAILURE (dead-lettered if the task had retries).
        case final
        /// Retried if the task has retries left, else final.
        case retry
        /// Not the task's failure (its handler could not take it now): the message goes back
        /// to the head of its queue unchanged, no result, no retry counted.
        case handBack
    }

    public init(type: String, message: String, module: String = "builtins", traceback: String? = nil, retryable: Bool = false) {
        self.init(type: type, message: message, module: module, traceback: traceback, disposition: retryable ? .retry : .final)
    }

    public init(type: String, message: String, module: String = "builtins", traceback: String? = nil, disposition: Disposition) {
        self.type = type
        self.message = message
        self.module = module
        self.traceback = traceback
        self.disposition = disposition
    }

    /// Whether a task with retries left runs again after this failure.
    public var retryable: Bool {
        get { disposition == .retry }
        set { disposition = newValue ? .retry : .final }
    }

    // description (a log line's "type: message", cut short): TaskFailure+Limits.swift

    public var json: JSONValue {
        .object([JSONMember("exc_type", .string(type)), JSONMember("exc_message", .array([.string(message)])), JSONMember("exc_module", .string(module))])
    }

    /// Reads Celery's exception document (also tolerates a bare string).
    public init(json: JSONValue, traceback: String?) {
        if let t = json["exc_type"]?.stringValue {
            type = t
            if let args = json["exc_message"]?.arrayValue {
                message = args.map { $0.stringValue ?? $0.serialized() }.joined(separator: ", ")
            } else {
                message = json["exc_message"]?.stringValue ?? json["exc_message"]?.serialized() ?? ""
            }
            module = json["exc_module"]?.stringValue ?? "builtins"
        } else {
            type = "Exception"
            message = json.stringValue ?? json.serialized()
            module = "builtins"
        }
        self.traceback = traceback
        self.disposition = .final
    }

    // Errors Celerity itself raises, named as Celery names them so Python clients recognise them.
    public static func notRegistered(_ task: String) -> TaskFailure {
        TaskFailure(type: "NotRegistered", message: "'\(task)'", module: "celery.exceptions")
    }
    public static func revoked(_ reason: String) -> TaskFailure {
        TaskFailure(type: "TaskRevokedError", message: reason, module: "celery.exceptions")
    }
    public static func timeLimit(_ seconds: Double) -> TaskFailure {
        TaskFailure(type: "TimeLimitExceeded", message: "task exceeded its time limit of \(String(format: "%g", (seconds * 1000).rounded() / 1000)) s", module: "billiard.exceptions", retryable: false)
    }
    public static func softTimeLimit(_ seconds: Double) -> TaskFailure {
        TaskFailure(type: "SoftTimeLimitExceeded", message: seconds > 0 ? "task exceeded its soft time limit of \(String(format: "%g", (seconds * 1000).rounded() / 1000)) s" : "task stopped at its soft time limit", module: "billiard.exceptions")
    }
    public static func badArguments(_ message: String) -> TaskFailure {
        TaskFailure(type: "TypeError", message: message)
    }
}

/// The result document of Celery's result backends (`celery-task-meta-<id>` and rpc replies).
public struct ResultMeta: Sendable {
    public var taskID: String
    public var state: TaskState
    /// The value on SUCCESS, the exception document on FAILURE/RETRY/REVOKED.
    public var result: JSONValue
    public var traceback: String?
    public var dateDone: Date?
    public var parentID: String?
    /// The group the task was a member of (`group_id` in the document).
    public var groupID: String?
    /// Result tuples of what the task sent on finishing (a chain's next step, callbacks).
    public var children: [JSONValue] = []
    /// The request, as Celery's `result_extended` adds it (nil: not extended).
    public var request: RequestInfo?

    /// What `result_extended` adds to a document: Celery's names are `name`, `args`,
    /// `kwargs`, `worker`, `retries`, `queue` (the routing key the message was sent with).
    public struct RequestInfo: Sendable {
        public var name: String
        public var args: [JSONValue]
        public var kwargs: [JSONMember]
        public var worker: String
        public var retries: Int
        public var queue: String?
        public init(name: String, args: [JSONValue], kwargs: [JSONMember], worker: String, retries: Int, queue: String?) {
            (self.name, self.args, self.kwargs, self.worker, self.retries, self.queue) = (name, args, kwargs, worker, retries, queue)
        }
    }

    public init(taskID: String, state: TaskState, result: JSONValue, traceback: String? = nil, dateDone: Date? = nil, parentID: String? = nil) {
        self.taskID = taskID
        self.state = state
        self.result = result
        self.traceback = traceback
        self.dateDone = dateDone ?? (state.isReady ? Date() : nil)
        self.parentID = parentID
    }

    /// This document as Celery's backends write it for `message`: with its `parent_id` (as
    /// Celery writes it whenever the request has one) and, when `extendedBy` names the worker
    /// (`result_extended`), the request itself. Cheap when there is nothing to add.
    public func forRequest(_ message: TaskMessage, extendedBy worker: String?) -> ResultMeta {
        guard worker != nil || (parentID == nil && message.parentID != nil) else { return self }
        var m = self
        if m.parentID == nil { m.parentID = message.parentID }
        if let worker {
            m.request = RequestInfo(name: message.task, args: message.args, kwargs: message.kwargs, worker: worker,
                                    retries: message.retries, queue: message.queue.isEmpty ? nil : message.queue)
        }
        return m
    }

    /// STARTED as Celery's `track_started` stores it: `{"pid": …, "hostname": <node>}`.
    public static func started(_ id: String, pid: Int, hostname: String) -> ResultMeta {
        ResultMeta(taskID: id, state: .started, result: .object([JSONMember("pid", .int(pid)), JSONMember("hostname", .string(hostname))]))
    }

    public static func success(_ id: String, _ value: JSONValue) -> ResultMeta { ResultMeta(taskID: id, state: .success, result: value) }
    public static func failure(_ id: String, _ f: TaskFailure, state: TaskState = .failure) -> ResultMeta {
        ResultMeta(taskID: id, state: state, result: f.json, traceback: f.traceback)
    }

    /// With the `parent_id` and `group_id` of the task of `message`, as Celery writes them.
    func about(_ message: TaskMessage) -> ResultMeta {
        var m = self
        m.parentID = message.parentID
        m.groupID = message.groupID
        return m
    }

    /// The failure, for FAILURE/RETRY/REVOKED documents.
    public var failure: TaskFailure? {
        state == .success || state == .pending || state == .started ? nil : TaskFailure(json: result, traceback: traceback)
    }

    public func encode() -> [UInt8] {
        var m: [JSONMember] = [
            JSONMember("status", .string(state.rawValue)),
            JSONMember("result", result),
            JSONMember("traceback", traceback.map { .string($0) } ?? .null),
            JSONMember("children", .array(children)),
            JSONMember("date_done", dateDone.map { .string(CeleryDate.format($0)) } ?? .null),
            JSONMember("task_id", .string(taskID)),
        ]
        if let g = groupID { m.append(JSONMember("group_id", .string(g))) }
        if let p = parentID { m.append(JSONMember("parent_id", .string(p))) }
        if let r = request {
            m.append(JSONMember("name", .string(r.name)))
            m.append(JSONMember("args", .array(r.args)))
            m.append(JSONMember("kwargs", .object(r.kwargs)))
            m.append(JSONMember("worker", .string(r.worker)))
            m.append(JSONMember("retries", .int(r.retries)))
            m.append(JSONMember("queue", r.queue.map { .string($0) } ?? .null))
        }
        return JSONValue.object(m).serializedBytes()
    }

    public static func decode(_ raw: [UInt8]) throws(ProtocolError) -> ResultMeta {
        let v: JSONValue
        do { v = try JSONValue(parsing: raw) } catch { throw ProtocolError("result document is not JSON: \(error.description)") }
        guard let s = v["status"]?.stringValue, let state = TaskState(rawValue: s) else {
            throw ProtocolError("result document has no known 'status'")
        }
        var meta = ResultMeta(taskID: v["task_id"]?.stringValue ?? "", state: state, result: v["result"] ?? .null,
                              traceback: v["traceback"]?.stringValue,
                              dateDone: v["date_done"]?.stringValue.flatMap(CeleryDate.parse), parentID: v["parent_id"]?.stringValue)
        if let name = v["name"]?.stringValue {
            meta.request = RequestInfo(name: name, args: v["args"]?.arrayValue ?? [], kwargs: v["kwargs"]?.objectValue ?? [],
                                       worker: v["worker"]?.stringValue ?? "", retries: v["retries"]?.intValue ?? 0, queue: v["queue"]?.stringValue)
        }
        return meta
    }

    /// The rpc backend's envelope around this document, LPUSHed to `reply_to`.
    public func rpcEnvelope(replyTo: String, correlationID: String) -> [UInt8] {
        JSONValue.object([
            JSONMember("body", .string(Data(encode()).base64EncodedString())),
            JSONMember("content-encoding", "utf-8"),
            JSONMember("content-type", "application/json"),
            JSONMember("headers", .object([])),
            JSONMember("properties", .object([
                JSONMember("correlation_id", .string(correlationID)),
                JSONMember("delivery_mode", 1),
                JSONMember("delivery_info", .object([JSONMember("exchange", ""), JSONMember("routing_key", .string(replyTo))])),
                JSONMember("priority", 0),
                JSONMember("body_encoding", "base64"),
                JSONMember("delivery_tag", .string(FastUUID.string())),
            ])),
        ]).serializedBytes()
    }

    /// Reads an rpc reply envelope: (correlation id, document).
    public static func decodeRPCEnvelope(_ raw: [UInt8]) throws(ProtocolError) -> (String, ResultMeta) {
        let v: JSONValue
        do { v = try JSONValue(parsing: raw) } catch { throw ProtocolError("rpc reply is not JSON: \(error.description)") }
        guard let body = v["body"]?.stringValue else { throw ProtocolError("rpc reply has no body") }
        let bytes: [UInt8]
        if v["properties"]?["body_encoding"]?.stringValue == "base64" {
            guard let d = Data(base64Encoded: body) else { throw ProtocolError("rpc reply body is not base64") }
            bytes = Array(d)
        } else { bytes = Array(body.utf8) }
        let meta = try decode(bytes)
        let corr = v["properties"]?["correlation_id"]?.stringValue ?? meta.taskID
        return (corr, meta)
    }
}
