/// A typed RESP2 reply.
public enum RedisReply: Sendable, Hashable {
    case status(String)
    case error(String)
    case integer(Int)
    case bulk([UInt8])
    case null
    case array([RedisReply])

    /// Bulk or status text as a String (UTF-8, lossy), nil for null.
    public var string: String? {
        switch self {
        case let .bulk(b): return String(decoding: b, as: UTF8.self)
        case let .status(s): return s
        default: return nil
        }
    }
    public var bytes: [UInt8]? {
        switch self {
        case let .bulk(b): return b
        case let .status(s): return Array(s.utf8)
        default: return nil
        }
    }
    public var int: Int? {
        switch self {
        case let .integer(i): return i
        case let .bulk(b): return Int(String(decoding: b, as: UTF8.self))
        default: return nil
        }
    }
    public var array: [RedisReply]? {
        if case let .array(a) = self { return a }
        return nil
    }
    public var isNull: Bool { self == .null }

    /// Throws the server's error reply as a `RedisError`, else returns self.
    @discardableResult
    public func throwingError() throws(RedisError) -> RedisReply {
        if case let .error(message) = self { throw RedisError(.server, message) }
        return self
    }

    /// The same; a refusal for want of permission (`NOPERM`) also names the command and its
    /// first keys, since Redis's own message does not say which command or key it refused.
    @discardableResult
    public func throwingError(naming command: RedisCommand) throws(RedisError) -> RedisReply {
        if case let .error(message) = self {
            throw RedisError(.server, RedisError.isPermissionMessage(message) ? "\(message) (\(command.summary))" : message)
        }
        return self
    }
}

/// Anything that can be one argument of a Redis command, as bytes (binary safe).
public protocol RedisArgument: Sendable {
    var redisBytes: [UInt8] { get }
}
extension String: RedisArgument { public var redisBytes: [UInt8] { Array(utf8) } }
extension Substring: RedisArgument { public var redisBytes: [UInt8] { Array(utf8) } }
extension Array: RedisArgument where Element == UInt8 { public var redisBytes: [UInt8] { self } }
extension Int: RedisArgument { public var redisBytes: [UInt8] { Array(String(self).utf8) } }
extension Double: RedisArgument { public var redisBytes: [UInt8] { Array(String(self).utf8) } }

/// One command: its arguments as byte strings.
public struct RedisCommand: Sendable, Hashable {
    public var arguments: [[UInt8]]
    public init(_ arguments: [[UInt8]]) { self.arguments = arguments }
    public init(_ name: String, _ args: any RedisArgument...) {
        self.arguments = [Array(name.utf8)] + args.map(\.redisBytes)
    }
    public init(_ name: String, arguments args: [any RedisArgument]) {
        self.arguments = [Array(name.utf8)] + args.map(\.redisBytes)
    }

    /// The command's name and first argument (its key, for most commands), printable and
    /// short, for error messages (values are never shown).
    public var summary: String {
        arguments.prefix(2).map { a in
            var out = ""
            for b in a.prefix(64) {
                if b >= 0x20 && b < 0x7f { out.unicodeScalars.append(UnicodeScalar(b)) } else { out += "\\x" + String(b, radix: 16).leftPadded(2) }
            }
            return a.count > 64 ? out + "…" : out
        }.joined(separator: " ")
    }
}

extension String {
    fileprivate func leftPadded(_ n: Int) -> String { count >= n ? self : String(repeating: "0", count: n - count) + self }
}
