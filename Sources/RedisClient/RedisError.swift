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
    public var isConnectionProblem: Bool {
        if code == .connection || code == .timeout { return true }
        // The server is up but cannot serve yet (loading its AOF/RDB after a restart, busy
        // running a script, a replica without its master) or refuses writes until memory
        // frees (OOM under `maxmemory` with noeviction), a master demoted to replica by a
        // failover (READONLY: the next connection finds the new master): also worth retrying.
        if code == .server {
            return ["LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN", "OOM", "READONLY", "NOREPLICAS"].contains { message.hasPrefix($0) }
        }
        return false
    }

    /// True when Redis refused access: the ACL user lacks a permission (`NOPERM`: a command,
    /// a key or a channel), or authentication failed (wrong user or password, `NOAUTH`).
    /// Retrying does not help; the user's ACL or the URL must change.
    public var isPermissionDenied: Bool {
        switch code {
        case .authentication: return true
        case .server: return RedisError.isPermissionMessage(message) || message.hasPrefix("NOAUTH") || message.hasPrefix("WRONGPASS")
        default: return false
        }
    }

    /// An ACL refusal: `NOPERM …` from a command, or the `ERR The user executing the script
    /// can't …` that Redis 7 returns when a command inside a script is refused.
    public static func isPermissionMessage(_ message: String) -> Bool {
        message.hasPrefix("NOPERM") || message.contains("The user executing the script can't")
    }

    public var description: String { "Redis \(code.rawValue) error: \(message)" }
}
