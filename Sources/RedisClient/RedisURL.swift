import Foundation

/// Where a Redis server is and how to log in: `redis://[user:password@]host:port/db`,
/// `redis://:password@host`, `unix:///path/to/redis.sock?db=2` (also `redis+unix://`), or a
/// master found through Redis Sentinel, in kombu's form:
/// `sentinel://[user:password@]h1:26379;sentinel://h2:26379/0?master_name=mymaster`
/// (the password is the master's; `sentinel_password` / `sentinel_username` in the query log
/// in to the sentinels). `rediss://…` is TCP with TLS, its options in kombu's query
/// parameters (`TLSOptions`).
///
/// `description` never shows the password.
public struct RedisURL: Sendable, Hashable, CustomStringConvertible {
    public enum Endpoint: Sendable, Hashable {
        case tcp(host: String, port: Int)
        case unix(path: String)
        /// The current master of a Sentinel-monitored group (`RedisConnection` asks the
        /// sentinels each time it connects).
        case sentinel(SentinelGroup)
    }
    public var endpoint: Endpoint
    public var db: Int
    public var username: String?
    public var password: String?
    /// `wait_replicas=N` (`wait_timeout=MS`, default 1000): a producer (the Celerity client)
    /// sends `WAIT N MS` after its writes and fails unless N replicas confirmed them, so an
    /// enqueue it reports as done survives a failover. 0 (the default): no WAIT.
    public var waitReplicas: Int = 0
    public var waitTimeoutMs: Int = 1000
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
        if scheme == "sentinel" {
            self = try RedisURL.parseSentinel(string)
            return
        }
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
        let wait = try RedisURL.waitOptions(components.queryItems ?? [], shown: RedisURL.redact(string))
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
            throw RedisError(.invalidURL, "Redis URL \(RedisURL.redact(string)): unknown scheme '\(scheme)' (expected redis://, rediss://, unix:// or sentinel://)")
        }
        (waitReplicas, waitTimeoutMs) = wait
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
        case let .sentinel(group):
            let nodes = group.sentinels.enumerated().map { i, n in "sentinel://\(i == 0 ? auth : "")\(n.host):\(n.port)" }
            return nodes.joined(separator: ";") + "/\(db)?master_name=\(group.masterName)" + (tls.map { "&" + $0.query } ?? "")
        }
    }

    /// Whether the server is on this machine (loopback or a unix socket).
    public var isLocal: Bool {
        switch endpoint {
        case .unix: return true
        case let .tcp(host, _): return host == "localhost" || host == "127.0.0.1" || host == "::1" || host.hasPrefix("127.")
        case .sentinel: return false
        }
    }

    /// Replaces the password of a URL-like string with `***`, for error messages.
    public static func redact(_ text: String) -> String {
        // A sentinel URL's query may carry the sentinels' password.
        var string = text
        var from = string.startIndex
        while let r = string.range(of: "sentinel_password=", range: from..<string.endIndex) {
            let end = string[r.upperBound...].firstIndex(where: { $0 == "&" || $0 == ";" }) ?? string.endIndex
            let head = String(string[..<r.upperBound]) + "***"
            string = head + string[end...]
            from = string.index(string.startIndex, offsetBy: head.count)
        }
        guard let schemeEnd = string.range(of: "://") else { return string }
        let rest = string[schemeEnd.upperBound...]
        guard let at = rest.lastIndex(of: "@") else { return string }
        let userinfo = rest[..<at]
        guard let colon = userinfo.firstIndex(of: ":") else { return string }
        return String(string[..<schemeEnd.upperBound]) + userinfo[..<colon] + ":***" + rest[at...]
    }
}

/// A Redis master watched by Sentinel: the sentinels to ask, in order, and the name under
/// which they know the master (kombu's `master_name`).
public struct SentinelGroup: Sendable, Hashable {
    public struct Node: Sendable, Hashable {
        public var host: String
        public var port: Int
        public init(host: String, port: Int) { self.host = host; self.port = port }
    }
    public var sentinels: [Node]
    public var masterName: String
    /// Credentials of the sentinels themselves (kombu's `sentinel_kwargs`), not the master's.
    public var username: String?
    public var password: String?

    public init(sentinels: [Node], masterName: String, username: String? = nil, password: String? = nil) {
        self.sentinels = sentinels
        self.masterName = masterName
        self.username = username
        self.password = password
    }
}

extension RedisURL {
    /// `sentinel://[user:pass@]host[:port][/db][?query];sentinel://host[:port]…` as kombu
    /// writes it: one `sentinel://` part per sentinel, separated by `;`. Credentials, the db
    /// and the query may sit on any part (the last one given wins). Query: `master_name`
    /// (required, here or from tasks.yaml's `broker_transport_options`), `sentinel_password`,
    /// `sentinel_username`, `db`.
    static func parseSentinel(_ string: String) throws(RedisError) -> RedisURL {
        let shown = redact(string)
        var nodes: [SentinelGroup.Node] = []
        var db = 0
        var user: String?
        var pass: String?
        var query: [String: String] = [:]
        for rawPart in string.split(separator: ";", omittingEmptySubsequences: true) {
            let part = rawPart.trimmingCharacters(in: .whitespaces)
            guard part.lowercased().hasPrefix("sentinel://"), let c = URLComponents(string: part) else {
                throw RedisError(.invalidURL, "Redis URL \(shown): '\(redact(part))' is not a sentinel://host:port part (parts are separated by ';')")
            }
            guard let host = c.host, !host.isEmpty else {
                throw RedisError(.invalidURL, "Redis URL \(shown): '\(redact(part))' names no sentinel host")
            }
            let port = c.port ?? 26379
            guard (1...65535).contains(port) else {
                throw RedisError(.invalidURL, "Redis URL \(shown): port \(port) is out of range")
            }
            nodes.append(.init(host: host, port: port))
            if let u = c.user, !u.isEmpty { user = u.removingPercentEncoding ?? u }
            if let p = c.password { pass = p.removingPercentEncoding ?? p }
            let path = c.path.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
            if !path.isEmpty {
                guard let n = Int(path), n >= 0 else {
                    throw RedisError(.invalidURL, "Redis URL \(shown): database '\(path)' is not a non-negative integer")
                }
                db = n
            }
            for item in c.queryItems ?? [] { query[item.name] = item.value ?? "" }
        }
        guard !nodes.isEmpty else { throw RedisError(.invalidURL, "Redis URL \(shown) names no sentinel") }
        if let d = query["db"] {
            guard let n = Int(d), n >= 0 else {
                throw RedisError(.invalidURL, "Redis URL \(shown): db must be a non-negative integer, got \(d)")
            }
            db = n
        }
        guard let master = query["master_name"], !master.isEmpty else {
            throw RedisError(.invalidURL, "Redis URL \(shown): a sentinel URL needs the master's name: add ?master_name=NAME (or set broker_transport_options: {master_name: NAME} in tasks.yaml)")
        }
        let known: Set<String> = ["master_name", "sentinel_password", "sentinel_username", "db", "min_other_sentinels", "wait_replicas", "wait_timeout"]
        if let unknown = query.keys.sorted().first(where: { !known.contains($0) && !$0.hasPrefix("ssl_") }) {
            throw RedisError(.invalidURL, "Redis URL \(shown): unknown query parameter '\(unknown)' (known: \(known.sorted().joined(separator: ", ")))")
        }
        let group = SentinelGroup(sentinels: nodes, masterName: master,
                                  username: query["sentinel_username"].flatMap { $0.isEmpty ? nil : $0 },
                                  password: query["sentinel_password"])
        // ssl_* parameters (as on rediss://): TLS to the sentinels and to the master.
        let sslItems = query.keys.sorted().filter { $0.hasPrefix("ssl_") }.map { URLQueryItem(name: $0, value: query[$0]) }
        let tls = sslItems.isEmpty ? nil : try TLSOptions.parse(sslItems, where: shown)
        var url = RedisURL(endpoint: .sentinel(group), db: db, username: user, password: pass, tls: tls)
        (url.waitReplicas, url.waitTimeoutMs) = try waitOptions(query.map { URLQueryItem(name: $0.key, value: $0.value) }, shown: shown)
        return url
    }

    static func waitOptions(_ items: [URLQueryItem], shown: String) throws(RedisError) -> (Int, Int) {
        var replicas = 0, timeout = 1000
        for item in items where item.name == "wait_replicas" || item.name == "wait_timeout" {
            guard let n = item.value.flatMap({ Int($0) }), n >= 0 else {
                throw RedisError(.invalidURL, "Redis URL \(shown): \(item.name) must be a non-negative integer, got '\(item.value ?? "")'")
            }
            if item.name == "wait_replicas" { replicas = n } else { timeout = n }
        }
        return (replicas, timeout)
    }

    /// Adds `master_name=NAME` to a `sentinel://` URL string that has none (the name may come
    /// from tasks.yaml); any other string is returned as it is.
    public static func withMasterName(_ string: String, _ name: String?) -> String {
        guard let name, !name.isEmpty, string.lowercased().hasPrefix("sentinel://"), !string.contains("master_name=") else { return string }
        let encoded = name.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed) ?? name
        return string + (string.contains("?") ? "&" : "?") + "master_name=" + encoded
    }
}
