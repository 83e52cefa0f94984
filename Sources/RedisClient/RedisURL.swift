import Foundation

/// Where a Redis server is and how to log in: `redis://[user:password@]host:port/db`,
/// `redis://:password@host`, or `unix:///path/to/redis.sock?db=2` (also `redis+unix://`);
/// `rediss://…` is TCP with TLS, its options in kombu's query parameters (`TLSOptions`).
///
/// `description` never shows the password.
public struct RedisURL: Sendable, Hashable, CustomStringConvertible {
    public enum Endpoint: Sendable, Hashable {
        case tcp(host: String, port: Int)
        case unix(path: String)
    }
    public var endpoint: Endpoint
    public var db: Int
    public var username: String?
    public var password: String?
    /// TLS (`rediss://`); nil for a plain connection. TCP endpoints only.
    public var tls: TLSOptions?

    public init(endpoint: Endpoint, db: Int = 0, username: String? = nil, password: String? = nil, tls: TLSOptions? = nil) {
        self.endpoint = endpoint
        self.db = db
        self.username = username
        self.password = password
        self.tls = tls
    }

    /// Parses a Redis URL. Errors say what is wrong without echoing the password.
    public init(string: String) throws(RedisError) {
        guard let schemeEnd = string.range(of: "://") else {
            throw RedisError(.invalidURL, "Redis URL \(RedisURL.redact(string)) has no scheme (expected redis://host:port/db or unix:///path)")
        }
        let scheme = string[..<schemeEnd.lowerBound].lowercased()
        guard let components = URLComponents(string: string) else {
            throw RedisError(.invalidURL, "Redis URL \(RedisURL.redact(string)) is not a valid URL")
        }
        let user = components.user.flatMap { $0.isEmpty ? nil : $0.removingPercentEncoding ?? $0 }
        let pass = components.password.flatMap { $0.removingPercentEncoding ?? $0 }
        var db = 0
        if let dbItem = components.queryItems?.first(where: { $0.name == "db" })?.value {
            guard let n = Int(dbItem), n >= 0 else {
                throw RedisError(.invalidURL, "Redis URL \(RedisURL.redact(string)): db must be a non-negative integer, got \(dbItem)")
            }
            db = n
        }
        let sslItems = (components.queryItems ?? []).filter { $0.name.hasPrefix("ssl_") }
        if scheme != "rediss", let first = sslItems.first {
            throw RedisError(.invalidURL, "Redis URL \(RedisURL.redact(string)): \(first.name) is a TLS parameter, but the scheme is \(scheme):// (use rediss:// for TLS)")
        }
        switch scheme {
        case "redis", "rediss":
            let host = components.host.map { $0.isEmpty ? "localhost" : $0 } ?? "localhost"
            let port = components.port ?? 6379
            guard (1...65535).contains(port) else {
                throw RedisError(.invalidURL, "Redis URL \(RedisURL.redact(string)): port \(port) is out of range")
            }
            let path = components.path.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
            if !path.isEmpty {
                guard let n = Int(path), n >= 0 else {
                    throw RedisError(.invalidURL, "Redis URL \(RedisURL.redact(string)): database '\(path)' is not a non-negative integer")
                }
                db = n
            }
            let tls = scheme == "rediss" ? try TLSOptions.parse(sslItems, where: RedisURL.redact(string)) : nil
            self.init(endpoint: .tcp(host: host, port: port), db: db, username: user, password: pass, tls: tls)
        case "unix", "redis+unix", "redis+socket":
            let path = components.path
            guard !path.isEmpty else {
                throw RedisError(.invalidURL, "Redis URL \(RedisURL.redact(string)) names no socket path")
            }
            self.init(endpoint: .unix(path: path), db: db, username: user, password: pass)
        default:
            throw RedisError(.invalidURL, "Redis URL \(RedisURL.redact(string)): unknown scheme '\(scheme)' (expected redis://, rediss:// or unix://)")
        }
    }

    /// The URL with the password replaced by `***`.
    public var description: String {
        var auth = ""
        if username != nil || password != nil {
            auth = (username ?? "") + (password != nil ? ":***" : "") + "@"
        }
        switch endpoint {
        case let .tcp(host, port):
            if let tls { return "rediss://\(auth)\(host):\(port)/\(db)?\(tls.query)" }
            return "redis://\(auth)\(host):\(port)/\(db)"
        case let .unix(path):
            return "unix://\(auth)\(path)?db=\(db)"
        }
    }

    /// Whether the server is on this machine (loopback or a unix socket).
    public var isLocal: Bool {
        switch endpoint {
        case .unix: return true
        case let .tcp(host, _): return host == "localhost" || host == "127.0.0.1" || host == "::1" || host.hasPrefix("127.")
        }
    }

    /// Replaces the password of a URL-like string with `***`, for error messages.
    public static func redact(_ string: String) -> String {
        guard let schemeEnd = string.range(of: "://") else { return string }
        let rest = string[schemeEnd.upperBound...]
        guard let at = rest.lastIndex(of: "@") else { return string }
        let userinfo = rest[..<at]
        guard let colon = userinfo.firstIndex(of: ":") else { return string }
        return String(string[..<schemeEnd.upperBound]) + userinfo[..<colon] + ":***" + rest[at...]
    }
}
