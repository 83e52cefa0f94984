import CHiredis
import COpenSSL
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One TLS connection to Redis (`rediss://`): our own socket, OpenSSL 3 for TLS, hiredis's
/// `redisReader` for the replies. `RedisConnection` uses it in place of a hiredis context.
///
/// Why this route. Debian bookworm's hiredis is 0.14, which has no TLS (hiredis_ssl came with
/// 1.0); hiredict (a hiredis 1.x fork with TLS) exists only in bookworm-backports and its dev
/// package conflicts with libhiredis-dev, so building on it would make every install depend
/// on backports. hiredis 0.14 cannot be given another transport either (its I/O calls
/// read(2)/write(2) on the socket; the pluggable transport arrived with 1.0). And no Swift
/// package does blocking TLS on a socket: swift-nio-ssl works inside SwiftNIO's event loops
/// only, and the Redis layer here is blocking on threads of its own by design (Redis.swift).
/// So: plain connections keep hiredis exactly as before (the hot path is unchanged), and a
/// `rediss://` connection runs TLS here with Debian's OpenSSL 3 (libssl-dev), writes the RESP
/// that `RedisConnection.appendAll` already formats, and parses replies with hiredis's own
/// reader (`redisReaderCreate`/`Feed`/`GetReply`, present in 0.14), so replies are the same
/// `redisReply` objects on both paths.
///
/// The socket is non-blocking; every wait is a poll(2) bounded by the timeout (the same
/// meaning as hiredis's SO_RCVTIMEO: seconds without progress), so a time-out is known for
/// what it is and maps to `RedisError(.timeout)`. Not thread-safe, like `RedisConnection`.
final class TLSStream {
    let fd: Int32
    private let ctx: OpaquePointer
    private let ssl: OpaquePointer
    private let reader: UnsafeMutablePointer<redisReader>
    private var output: [UInt8] = []
    private var input = [UInt8](repeating: 0, count: 16 * 1024)
    private var timeout: Double
    /// The URL as printed in errors (no password).
    private let name: String
    /// No client certificate given, and no reply read yet: a connection lost then is most
    /// likely the server refusing this client after the handshake (TLS 1.3 sends its
    /// "certificate required" alert after the client's Finished, and a reset can overtake
    /// the alert), which the error then says.
    private let withoutClientCert: Bool
    private var replied = false

    /// Connects, runs the TLS handshake and checks the server's certificate as `options` ask.
    init(host: String, port: Int, options: TLSOptions, name: String, connectTimeout: Double, commandTimeout: Double) throws(RedisError) {
        _ = TLSStream.ignoreSIGPIPE
        self.name = name
        self.timeout = commandTimeout
        self.withoutClientCert = options.certFile == nil
        let ctx = try TLSStream.context(options, name: name)
        var fdToClose: Int32 = -1
        var sslToFree: OpaquePointer?
        defer {
            if let sslToFree { SSL_free(sslToFree) }
            if fdToClose >= 0 { Glibc.close(fdToClose) }
        }
        do throws(RedisError) {
            let fd = try TLSStream.connectTCP(host: host, port: port, timeout: connectTimeout, name: name)
            fdToClose = fd
            guard let ssl = SSL_new(ctx) else { throw RedisError(.connection, "cannot create a TLS session for \(name): \(TLSStream.errors())") }
            sslToFree = ssl
            SSL_set_fd(ssl, fd)
            let serverName = options.serverName ?? host
            let isIP = TLSStream.isIPAddress(serverName)
            if !isIP { _ = celerity_ssl_set_sni(ssl, serverName) }   // SNI takes DNS names only
            if options.verify != .none && options.checkHostname {
                let ok = isIP ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), serverName) : SSL_set1_host(ssl, serverName)
                if ok != 1 { throw RedisError(.connection, "cannot set the host name '\(serverName)' to check for \(name): \(TLSStream.errors())") }
            }
            let deadline = connectTimeout
            while true {
                ERR_clear_error()
                let rc = SSL_connect(ssl)
                if rc == 1 { break }
                let err = SSL_get_error(ssl, rc)
                if err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE {
                    if !TLSStream.wait(fd, write: err == SSL_ERROR_WANT_WRITE, seconds: deadline) {
                        throw RedisError(.connection, "TLS handshake with \(name) timed out after \(deadline) s (does that port serve TLS? Redis's TLS port is its tls-port)")
                    }
                    continue
                }
                throw TLSStream.handshakeError(ssl, err, name: name)
            }
            self.fd = fd
            self.ssl = ssl
            self.ctx = ctx
            guard let reader = redisReaderCreate() else { throw RedisError(.connection, "cannot allocate a reply reader for \(name)") }
            self.reader = reader
            fdToClose = -1
            sslToFree = nil
        } catch {
            SSL_CTX_free(ctx)
            throw error
        }
    }

    deinit {
        // No close_notify: it could block on a dead peer; Redis does not need it.
        SSL_free(ssl)
        SSL_CTX_free(ctx)
        Glibc.close(fd)
        redisReaderFree(reader)
    }

    func setTimeout(_ seconds: Double) { timeout = seconds }

    /// Queues bytes (RESP already formatted) for the next write.
    func append(_ bytes: [UInt8]) { output.append(contentsOf: bytes) }

    /// Writes everything queued.
    func flush() throws(RedisError) {
        var done = 0
        defer { if done == output.count { output.removeAll(keepingCapacity: true) } else { output.removeFirst(done) } }
        while done < output.count {
            ERR_clear_error()
            let n = output.withUnsafeBytes { b in SSL_write(ssl, b.baseAddress! + done, Int32(min(b.count - done, Int(Int32.max)))) }
            if n > 0 { done += Int(n); continue }
            try waitOrThrow(SSL_get_error(ssl, n), n, doing: "write to")
        }
    }

    /// The next reply, reading (and first writing what is queued) as needed. The caller frees
    /// it with `freeReplyObject`.
    func nextReply() throws(RedisError) -> UnsafeMutableRawPointer {
        if !output.isEmpty { try flush() }
        while true {
            if let r = try bufferedReply() { return r }
            try readOnce(blocking: true)
        }
    }

    /// A complete reply already read, without I/O; nil when none is buffered.
    func bufferedReply() throws(RedisError) -> UnsafeMutableRawPointer? {
        var raw: UnsafeMutableRawPointer?
        if redisReaderGetReply(reader, &raw) != REDIS_OK {
            let why = withUnsafePointer(to: reader.pointee.errstr) { p in
                p.withMemoryRebound(to: CChar.self, capacity: 128) { String(cString: $0) }
            }
            throw RedisError(.connection, "Redis protocol error from \(name): \(why)")
        }
        return raw
    }

    /// Reads everything that has arrived, without blocking: for the pub/sub reader, which
    /// polls `fd`. Loops until OpenSSL wants more from the socket, so no decrypted byte is
    /// left in OpenSSL's buffer (SSL_pending) where poll(2) would not see it.
    func readAvailable() throws(RedisError) {
        while try readOnce(blocking: false) {}
    }

    /// One SSL_read into the reply reader. Returns false when nothing more can be read now
    /// (only when `blocking` is false); when blocking, waits up to the timeout for bytes.
    @discardableResult
    private func readOnce(blocking: Bool) throws(RedisError) -> Bool {
        while true {
            ERR_clear_error()
            let n = input.withUnsafeMutableBytes { b in SSL_read(ssl, b.baseAddress!, Int32(b.count)) }
            if n > 0 {
                replied = true
                input.withUnsafeBytes { b in
                    _ = b.withMemoryRebound(to: CChar.self) { redisReaderFeed(reader, $0.baseAddress!, Int(n)) }
                }
                return true
            }
            let err = SSL_get_error(ssl, n)
            if err == SSL_ERROR_WANT_READ && !blocking { return false }
            try waitOrThrow(err, n, doing: "read from")
        }
    }

    /// After an SSL call that did not complete: waits for the socket when OpenSSL wants it
    /// (a time-out throws `.timeout`); any other outcome throws.
    private func waitOrThrow(_ err: Int32, _ rc: Int32, doing what: String) throws(RedisError) {
        let e = errno
        if err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE {
            if TLSStream.wait(fd, write: err == SSL_ERROR_WANT_WRITE, seconds: timeout) { return }
            throw RedisError(.timeout, "no reply from \(name) within \(timeout) s")
        }
        let refused = !replied && withoutClientCert
            ? " (right after the TLS handshake, before any reply: if the server wants a client certificate, tls-auth-clients, give ssl_certfile and ssl_keyfile)" : ""
        if err == SSL_ERROR_ZERO_RETURN || (err == SSL_ERROR_SYSCALL && e == 0) {
            throw RedisError(.connection, "connection to \(name) lost: Server closed the connection\(refused)")
        }
        if err == SSL_ERROR_SYSCALL {
            throw RedisError(.connection, "connection to \(name) lost: \(String(cString: strerror(e)))\(refused)")
        }
        let why = TLSStream.errors()
        if why.contains("unexpected eof") {
            throw RedisError(.connection, "connection to \(name) lost: Server closed the connection\(refused)")
        }
        throw RedisError(.connection, "TLS error on \(name) (\(what) the server): \(why)\(TLSStream.hint(why))")
    }

    // MARK: - Setup

    /// Ignores SIGPIPE for the whole process, once: OpenSSL writes with write(2), and a write
    /// to a connection the server just closed must be an error, not the process's death.
    static let ignoreSIGPIPE: Void = { _ = signal(SIGPIPE, SIG_IGN) }()

    private static func context(_ options: TLSOptions, name: String) throws(RedisError) -> OpaquePointer {
        guard let ctx = SSL_CTX_new(TLS_client_method()) else {
            throw RedisError(.connection, "cannot create a TLS context for \(name): \(errors())")
        }
        do throws(RedisError) {
            _ = celerity_ssl_ctx_set_min_tls12(ctx)
            _ = celerity_ssl_ctx_set_mode(ctx, celerity_ssl_mode_partial_writes())
            ERR_clear_error()
            if options.verify == .none {
                SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nil)
            } else {
                SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nil)
                if let ca = options.caFile {
                    try readable(ca, "ssl_ca_certs (the CA file)", name)
                    if SSL_CTX_load_verify_locations(ctx, ca, nil) != 1 {
                        throw RedisError(.connection, "\(name): cannot load the CA file \(ca) (ssl_ca_certs): \(errors()); expected PEM certificates")
                    }
                } else if SSL_CTX_set_default_verify_paths(ctx) != 1 {
                    throw RedisError(.connection, "\(name): cannot load the system's CA certificates: \(errors()); give ssl_ca_certs")
                }
            }
            if let cert = options.certFile {
                let key = options.keyFile ?? cert
                try readable(cert, "ssl_certfile (the client certificate)", name)
                try readable(key, "ssl_keyfile (the client key)", name)
                if SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 {
                    throw RedisError(.connection, "\(name): cannot load the client certificate \(cert) (ssl_certfile): \(errors())")
                }
                if SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 {
                    throw RedisError(.connection, "\(name): cannot load the client key \(key) (\(options.keyFile == nil ? "ssl_certfile, no ssl_keyfile given" : "ssl_keyfile")): \(errors())")
                }
                if SSL_CTX_check_private_key(ctx) != 1 {
                    throw RedisError(.connection, "\(name): the client key \(key) does not match the certificate \(cert): \(errors())")
                }
            }
            return ctx
        } catch {
            SSL_CTX_free(ctx)
            throw error
        }
    }

    private static func readable(_ path: String, _ what: String, _ name: String) throws(RedisError) {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw RedisError(.connection, "\(name): \(what) \(path) does not exist")
        }
        guard !isDir.boolValue, FileManager.default.isReadableFile(atPath: path) else {
            throw RedisError(.connection, "\(name): \(what) \(path) is not a readable file")
        }
    }

    /// A non-blocking TCP socket connected to host:port (each address in turn), within `timeout`.
    private static func connectTCP(host: String, port: Int, timeout: Double, name: String) throws(RedisError) -> Int32 {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &list)
        guard rc == 0, let list else {
            throw RedisError(.connection, "cannot connect to \(name): \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(list) }
        var why = "no address for \(host)"
        var ai: UnsafeMutablePointer<addrinfo>? = list
        while let a = ai {
            ai = a.pointee.ai_next
            let fd = socket(a.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            if fd < 0 { why = String(cString: strerror(errno)); continue }
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            if Glibc.connect(fd, a.pointee.ai_addr, a.pointee.ai_addrlen) != 0 {
                if errno != EINPROGRESS { why = String(cString: strerror(errno)); Glibc.close(fd); continue }
                if !wait(fd, write: true, seconds: timeout) { why = "Connection timed out"; Glibc.close(fd); continue }
                var soError: Int32 = 0
                var len = socklen_t(MemoryLayout<Int32>.size)
                _ = getsockopt(fd, SOL_SOCKET, SO_ERROR, &soError, &len)
                if soError != 0 { why = String(cString: strerror(soError)); Glibc.close(fd); continue }
            }
            // As hiredis does for plain TCP: no Nagle delay, keepalive (15 s idle, then probes).
            var one: Int32 = 1, idle: Int32 = 15, interval: Int32 = 5, count: Int32 = 3
            let size = socklen_t(MemoryLayout<Int32>.size)
            _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, size)
            _ = setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, size)
            _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPIDLE, &idle, size)
            _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPINTVL, &interval, size)
            _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPCNT, &count, size)
            return fd
        }
        throw RedisError(.connection, "cannot connect to \(name): \(why)")
    }

    /// Waits until `fd` is readable (or writable); false after `seconds` without it.
    private static func wait(_ fd: Int32, write: Bool, seconds: Double) -> Bool {
        var p = pollfd(fd: fd, events: Int16(write ? POLLOUT : POLLIN), revents: 0)
        let deadline = Date().addingTimeInterval(max(seconds, 0.001))
        while true {
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { return false }
            let n = poll(&p, 1, Int32(min(left * 1000, Double(Int32.max)).rounded(.up)))
            if n > 0 { return true }     // ready, or an error/hang-up the next SSL call reports
            if n < 0 && errno != EINTR { return true }
        }
    }

    private static func isIPAddress(_ s: String) -> Bool {
        var v4 = in_addr(), v6 = in6_addr()
        return inet_pton(AF_INET, s, &v4) == 1 || inet_pton(AF_INET6, s, &v6) == 1
    }

    /// OpenSSL's error queue as text (and empties it).
    private static func errors() -> String {
        var parts: [String] = []
        while true {
            let e = ERR_get_error()
            if e == 0 { break }
            if let r = ERR_reason_error_string(e) { parts.append(String(cString: r)) } else {
                var buf = [CChar](repeating: 0, count: 256)
                ERR_error_string_n(e, &buf, buf.count)
                parts.append(String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
            }
        }
        return parts.isEmpty ? "unknown TLS error" : parts.joined(separator: "; ")
    }

    /// What to do about a TLS alert or error, for the messages people will read.
    private static func hint(_ why: String) -> String {
        if why.contains("certificate required") {
            return " (the server wants a client certificate: give ssl_certfile and ssl_keyfile)"
        }
        if why.contains("unknown ca") || why.contains("bad certificate") || why.contains("certificate unknown") {
            return " (the server refused the client certificate: is it signed by the CA the server trusts, tls-ca-cert-file?)"
        }
        if why.contains("wrong version number") || why.contains("packet length too long") || why.contains("record layer failure") {
            return " (the server does not speak TLS on that port: a plain Redis port wants redis://, TLS is on its tls-port)"
        }
        return ""
    }

    private static func handshakeError(_ ssl: OpaquePointer, _ err: Int32, name: String) -> RedisError {
        let verify = SSL_get_verify_result(ssl)
        if verify != Int(X509_V_OK) {
            let text = String(cString: X509_verify_cert_error_string(verify))
            _ = errors()
            let hint = verify == Int(X509_V_ERR_HOSTNAME_MISMATCH) || verify == Int(X509_V_ERR_IP_ADDRESS_MISMATCH)
                ? "the certificate does not name this host; connect by a name it has, or ssl_check_hostname=false"
                : "is ssl_ca_certs the CA that signed the server's certificate?"
            return RedisError(.connection, "TLS handshake with \(name) failed: certificate verify failed: \(text) (\(hint))")
        }
        if err == SSL_ERROR_SYSCALL || err == SSL_ERROR_ZERO_RETURN {
            let e = errno
            let why = errors()
            let detail = why != "unknown TLS error" ? why : (e == 0 ? "the server closed the connection" : String(cString: strerror(e)))
            return RedisError(.connection, "TLS handshake with \(name) failed: \(detail) (does that port serve TLS?)")
        }
        let why = errors()
        return RedisError(.connection, "TLS handshake with \(name) failed: \(why)\(hint(why))")
    }
}
