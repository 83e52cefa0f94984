/// A message, result document or argument that does not follow the Celery protocol.
public struct ProtocolError: Error, Sendable, CustomStringConvertible {
    public var message: String
    /// A message whose envelope could be read but whose body the worker will not decode (a
    /// content type other than JSON, a compression it does not know): the call, without its
    /// arguments, and the failure its client is told (kombu's error, as a Celery worker
    /// would raise it) before the message goes to the dead letters.
    public var refused: (message: TaskMessage, failure: TaskFailure)?
    public init(_ message: String) { self.message = message }
    init(_ message: String, refusing call: TaskMessage, with failure: TaskFailure) {
        self.message = message
        self.refused = (call, failure)
    }
    public var description: String { message }
}

extension TaskFailure {
    /// kombu's refusal of a body whose content type the worker does not accept, in kombu's
    /// words: "Refusing to deserialize untrusted content of type pickle
    /// (application/x-python-serialize)".
    public static func contentDisallowed(_ contentType: String) -> TaskFailure {
        let names = ["application/x-python-serialize": "pickle", "application/x-yaml": "yaml", "application/x-msgpack": "msgpack",
                     "application/json": "json"]
        let name = names[contentType] ?? contentType
        return TaskFailure(type: "ContentDisallowed", message: "Refusing to deserialize untrusted content of type \(name) (\(contentType))",
                           module: "kombu.exceptions")
    }

    /// A body that could not be decoded (here: decompressed), as kombu's DecodeError.
    public static func decodeError(_ message: String) -> TaskFailure {
        TaskFailure(type: "DecodeError", message: message, module: "kombu.exceptions")
    }
}
