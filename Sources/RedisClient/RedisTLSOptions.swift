import Foundation

/// How a `rediss://` connection does TLS: the query parameters of kombu and redis-py
/// (`ssl_cert_reqs`, `ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile`, `ssl_check_hostname`),
/// so that one URL serves Python Celery and Celerity alike:
///
///     rediss://:pw@redis.example:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/ssl/redis-ca.pem
///
/// Files are read when a connection opens (a missing or unreadable file is a clear error
/// there, naming the file and the parameter).
public struct TLSOptions: Sendable, Hashable {
    /// `ssl_cert_reqs`: whether the server's certificate is checked.
    public enum Verify: String, Sendable, Hashable {
        /// The chain must lead to a trusted CA and, unless `checkHostname` is off, name the host.
        case required
        /// As for Python's ssl module on a client (a server always sends a certificate): the
        /// same checks as `required`.
        case optional
        /// Nothing is checked: the traffic is encrypted, but anyone in the middle can read it.
        case none
    }

    public var verify: Verify
    /// `ssl_ca_certs`: PEM file of the CA(s) to trust; nil trusts the system's CAs.
    public var caFile: String?
    /// `ssl_certfile`: the client certificate (PEM, may hold the chain and the key), for a
    /// server started with `tls-auth-clients yes`.
    public var certFile: String?
    /// `ssl_keyfile`: the client certificate's private key (PEM); nil reads it from `certFile`.
    public var keyFile: String?
    /// `ssl_check_hostname` (redis-py's, default true): the certificate must name the host of
    /// the URL (a DNS name or an IP address in its subjectAltName).
    public var checkHostname: Bool
    /// The name sent as SNI and checked against the certificate; nil means the URL's host.
    public var serverName: String?

    public init(verify: Verify = .required, caFile: String? = nil, certFile: String? = nil, keyFile: String? = nil,
                checkHostname: Bool = true, serverName: String? = nil) {
        self.verify = verify
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
        self.checkHostname = checkHostname
        self.serverName = serverName
    }

    /// The query parameters this type reads; any other `ssl_…` parameter is refused (a typo
    /// must not silently turn verification off).
    static let queryNames: Set<String> = ["ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname"]

    /// Reads the `ssl_…` query items of a `rediss://` URL. `where_` names the URL (redacted).
    static func parse(_ items: [URLQueryItem], where url: String) throws(RedisError) -> TLSOptions {
        var o = TLSOptions()
        for item in items where item.name.hasPrefix("ssl_") {
            let value = item.value ?? ""
            switch item.name {
            case "ssl_cert_reqs":
                // kombu accepts Python's constant names and the lower-case words.
                switch value.lowercased() {
                case "required", "cert_required": o.verify = .required
                case "optional", "cert_optional": o.verify = .optional
                case "none", "cert_none": o.verify = .none
                default:
                    throw RedisError(.invalidURL, "Redis URL \(url): ssl_cert_reqs must be required, optional or none (or CERT_REQUIRED, CERT_OPTIONAL, CERT_NONE), got '\(value)'")
                }
            case "ssl_ca_certs": o.caFile = try path(value, item.name, url)
            case "ssl_certfile": o.certFile = try path(value, item.name, url)
            case "ssl_keyfile": o.keyFile = try path(value, item.name, url)
            case "ssl_check_hostname":
                switch value.lowercased() {
                case "true", "1", "yes", "on": o.checkHostname = true
                case "false", "0", "no", "off": o.checkHostname = false
                default: throw RedisError(.invalidURL, "Redis URL \(url): ssl_check_hostname must be true or false, got '\(value)'")
                }
            default:
                throw RedisError(.invalidURL, "Redis URL \(url): unknown TLS parameter '\(item.name)' (known: \(queryNames.sorted().joined(separator: ", ")))")
            }
        }
        if o.keyFile != nil && o.certFile == nil {
            throw RedisError(.invalidURL, "Redis URL \(url): ssl_keyfile is set but ssl_certfile is not (the key belongs to a client certificate)")
        }
        return o
    }

    private static func path(_ value: String, _ name: String, _ url: String) throws(RedisError) -> String {
        guard !value.isEmpty else { throw RedisError(.invalidURL, "Redis URL \(url): \(name) is empty (expected a file path)") }
        return value
    }

    /// The query string that `parse` reads back (for `RedisURL.description`; paths are not
    /// secret). Defaults are left out.
    var query: String {
        var items: [String] = ["ssl_cert_reqs=\(verify.rawValue)"]
        if let caFile { items.append("ssl_ca_certs=\(caFile)") }
        if let certFile { items.append("ssl_certfile=\(certFile)") }
        if let keyFile { items.append("ssl_keyfile=\(keyFile)") }
        if !checkHostname { items.append("ssl_check_hostname=false") }
        return items.joined(separator: "&")
    }
}
