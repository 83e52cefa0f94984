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
}
