/// An error from the Redis layer. Messages never contain a password.
public struct RedisError: Error, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        /// The URL could not be parsed.
        case invalidURL
        /// Could not connect, or the connection broke (I/O error, EOF). Retry with backoff.
        case connection
        /// No reply within the socket timeout; the connection was dropped.
        case timeout
        /// The server answered with an error reply (`-ERR ...`).
        case server
        /// AUTH or SELECT failed.
        case authentication
        /// A reply did not have the shape the caller expected.
        case unexpectedReply
    }
    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// True when the connection is gone and the caller should retry later.
    public var isConnectionProblem: Bool { code == .connection || code == .timeout }

    public var description: String { "Redis \(code.rawValue) error: \(message)" }
}
