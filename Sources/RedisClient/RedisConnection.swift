import CHiredis
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One blocking hiredis connection. Not thread-safe: `Redis` confines each instance to a
/// serial dispatch queue of its own, so blocking reads never run on Swift's cooperative pool.
///
/// `init` is the one place that opens a connection to Redis, for commands (`Redis`) and for
/// pub/sub (`RedisPubSub`) alike: Sentinel discovery and TLS plug in here.
///
/// After an I/O error or a socket time-out hiredis leaves the context unusable; the
/// connection then reports `isBroken` and must be replaced.
///
/// `rediss://` (TLS) does not go through hiredis's I/O: `tls` (TLSStream.swift, which says
/// why) does it, and each I/O method below hands over to it first. Plain connections run
/// exactly the hiredis calls they always did.
final class RedisConnection {
    /// hiredis's context; nil on a TLS connection.
    private let context: UnsafeMutablePointer<redisContext>?
    /// The TLS stream of a `rediss://` connection; nil on a plain one.
    private let tls: TLSStream?
    let url: RedisURL
    private(set) var isBroken = false
    private var currentTimeout: Double
    /// Whether a reply ever came: a plain connection closed before that may be a TLS port.
    private var replied = false

    /// Connects, then sends AUTH and SELECT as the URL asks.
    init(url: RedisURL, connectTimeout: Double, commandTimeout: Double) throws(RedisError) {
        self.url = url
        self.currentTimeout = commandTimeout
        if let options = url.tls {
            let host: String, port: Int
            switch url.endpoint {
            case let .tcp(h, p): (host, port) = (h, p)
            case let .sentinel(group):
                // TLS with Sentinel: the sentinels and the master alike.
                let master = try SentinelDiscovery.master(of: group, tls: options, connectTimeout: connectTimeout)
                (host, port) = (master.host, master.port)
            case .unix: throw RedisError(.invalidURL, "\(url): TLS needs a TCP endpoint")
            }
            tls = try TLSStream(host: host, port: port, options: options, name: url.description,
                                connectTimeout: connectTimeout, commandTimeout: commandTimeout)
            context = nil
            try login()
            return
        }
        tls = nil
        let tv = RedisConnection.timeval(connectTimeout)
        let ctx: UnsafeMutablePointer<redisContext>?
        switch url.endpoint {
        case let .tcp(host, port):
            ctx = redisConnectWithTimeout(host, Int32(port), tv)
        case let .unix(path):
            ctx = redisConnectUnixWithTimeout(path, tv)
        case let .sentinel(group):
            let master = try SentinelDiscovery.master(of: group, tls: nil, connectTimeout: connectTimeout)
            ctx = redisConnectWithTimeout(master.host, Int32(master.port), tv)
        }
        guard let ctx else {
            throw RedisError(.connection, "cannot allocate a Redis context for \(url)")
        }
        if ctx.pointee.err != 0 {
            let why = RedisConnection.errorString(ctx)
            redisFree(ctx)
            throw RedisError(.connection, "cannot connect to \(url): \(why)")
        }
        self.context = ctx
        if case .unix = url.endpoint {} else {
            _ = redisEnableKeepAlive(ctx)   // TCP only: on a unix socket it fails and poisons the context
        }
        _ = redisSetTimeout(ctx, RedisConnection.timeval(commandTimeout))
        try login()
    }

    /// AUTH and SELECT as the URL asks.
    private func login() throws(RedisError) {
        if let password = url.password {
            var args: [[UInt8]] = [Array("AUTH".utf8)]
            if let user = url.username { args.append(Array(user.utf8)) }
            args.append(Array(password.utf8))
            let reply = try command(RedisCommand(args))
            if case let .error(message) = reply {
                throw RedisError(.authentication, "AUTH failed at \(url): \(message)")
            }
        }
        if url.db != 0 {
            let reply = try command(RedisCommand("SELECT", url.db))
            if case let .error(message) = reply {
                throw RedisError(.authentication, "SELECT \(url.db) failed at \(url): \(message)")
            }
        }
        if case let .sentinel(group) = url.endpoint {
            // The Sentinel client spec: the address the sentinels gave must say it is the
            // master (during a failover it may still be a replica, or already demoted).
            let role = try command(RedisCommand("ROLE"))
            guard case let .array(items) = role, items.first?.string == "master" else {
                isBroken = true
                throw RedisError(.connection, "the address the sentinels gave for master '\(group.masterName)' is not a master (ROLE: \(role)): failover under way")
            }
        }
    }

    deinit { if let context { redisFree(context) } }

    /// Sets the socket read/write timeout (seconds). Blocking commands need a timeout longer
    /// than their own.
    func setTimeout(_ seconds: Double) {
        guard seconds != currentTimeout else { return }
        currentTimeout = seconds
        guard let context else { tls?.setTimeout(seconds); return }
        _ = redisSetTimeout(context, RedisConnection.timeval(seconds))
    }

    /// Sends one command and reads its reply. Server error replies come back as `.error`.
    func command(_ command: RedisCommand) throws(RedisError) -> RedisReply {
        try appendAll([command])
        return try readReply()
    }

    /// Sends all commands in one write, then reads all replies (pipelining).
    func pipeline(_ commands: [RedisCommand]) throws(RedisError) -> [RedisReply] {
        try appendAll(commands)
        var replies: [RedisReply] = []
        replies.reserveCapacity(commands.count)
        for _ in commands { replies.append(try readReply()) }
        return replies
    }

    /// Sends all commands in one write and reads their replies without building them:
    /// returns the error replies' messages only (empty when every command succeeded). For
    /// writes whose answers are "OK" or counts nobody reads (results and acks).
    func pipelineErrors(_ commands: [RedisCommand]) throws(RedisError) -> [String] {
        try appendAll(commands)
        return try readErrors(commands.count)
    }

    /// `pipelineErrors` for commands already written in RESP.
    func pipelineErrors(_ batch: RESPBatch) throws(RedisError) -> [String] {
        guard !batch.isEmpty else { return [] }
        guard !isBroken else { throw RedisError(.connection, "connection to \(url) is closed") }
        try appendFormatted(batch.bytes)
        return try readErrors(batch.count)
    }

    /// Writes commands already in RESP to the socket now, without reading their replies
    /// (`readErrors` reads them later), straight from `batch` (no copy into hiredis's output
    /// buffer). For a writer of many large batches (the event flusher): they go out one after
    /// the other while Redis works through them, with one wait for the replies instead of one
    /// per batch (measured with -E: a wait per ~96 KiB pipeline was ~9 context switches per
    /// flush, and the copy a memmove of every byte).
    func write(_ batch: RESPBatch) throws(RedisError) {
        guard !batch.isEmpty else { return }
        guard !isBroken else { throw RedisError(.connection, "connection to \(url) is closed") }
        guard let context else {
            tls!.append(batch.bytes)
            return try tlsIO { t throws(RedisError) in try t.flush() }
        }
        try flushOutput()   // anything hiredis still holds goes first
        let fd = context.pointee.fd
        let failure: Int32? = batch.bytes.withUnsafeBytes { b -> Int32? in
            var offset = 0
            while offset < b.count {
                // send(2), not write(2): a closed peer is EPIPE here, never SIGPIPE for the process.
                let n = Glibc.send(fd, b.baseAddress! + offset, b.count - offset, Int32(MSG_NOSIGNAL))
                if n < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                offset += n
            }
            return nil
        }
        if let failure {
            isBroken = true
            if failure == EAGAIN || failure == EWOULDBLOCK {
                throw RedisError(.timeout, "\(url) took no more bytes within \(currentTimeout) s")
            }
            throw RedisError(.connection, "connection to \(url) is broken (\(String(cString: strerror(failure))))")
        }
    }

    /// Reads `count` replies; returns the messages of the errors among them.
    func readErrors(_ count: Int) throws(RedisError) -> [String] {
        var errors: [String] = []
        for _ in 0..<count {
            let error = try withNextReply { r -> String? in
                func text(_ r: UnsafeMutablePointer<redisReply>) -> String? {
                    r.pointee.type == REDIS_REPLY_ERROR ? String(decoding: RedisConnection.bytes(r.pointee.str, r.pointee.len), as: UTF8.self) : nil
                }
                if let e = text(r) { return e }
                // EXEC answers with the replies of its commands: an error may sit among them.
                if r.pointee.type == REDIS_REPLY_ARRAY, let elements = r.pointee.element {
                    for i in 0..<r.pointee.elements { if let e = elements[i].flatMap(text) { return e } }
                }
                return nil
            }
            if let error { errors.append(error) }
        }
        return errors
    }

    /// Queues commands (one or many), encoded here in the Redis protocol (RESP) into one
    /// buffer that hiredis takes as it is: one copy, instead of an argv array per command
    /// that hiredis formats again argument by argument (measured: ~8% of a busy worker's
    /// CPU went to that formatting).
    func appendAll(_ commands: [RedisCommand]) throws(RedisError) {
        guard !isBroken else { throw RedisError(.connection, "connection to \(url) is closed") }
        if commands.isEmpty { return }
        var size = 0
        for c in commands {
            size += 16
            for a in c.arguments { size += a.count + 24 }
        }
        var out: [UInt8] = []
        out.reserveCapacity(size)
        func number(_ prefix: UInt8, _ n: Int) {
            out.append(prefix)
            out.append(contentsOf: String(n).utf8)   // a small string: no allocation
            out.append(13); out.append(10)
        }
        for c in commands {
            number(42, c.arguments.count)          // *argc
            for a in c.arguments {
                number(36, a.count)                // $len
                out.append(contentsOf: a)
                out.append(13); out.append(10)
            }
        }
        try appendFormatted(out)
    }

    /// Queues bytes already in RESP, as they are.
    private func appendFormatted(_ out: [UInt8]) throws(RedisError) {
        guard let context else { tls!.append(out); return }
        let rc: Int32 = out.withUnsafeBufferPointer { b in
            b.baseAddress!.withMemoryRebound(to: CChar.self, capacity: b.count) { redisAppendFormattedCommand(context, $0, b.count) }
        }
        if rc != REDIS_OK { throw brokenError() }
    }

    /// Reads the next reply (blocking up to the socket timeout).
    func readReply() throws(RedisError) -> RedisReply {
        try withNextReply(RedisConnection.convert)
    }

    /// Reads the next reply (blocking up to the socket timeout) and hands hiredis's object
    /// to `body`, freeing it afterwards.
    private func withNextReply<T>(_ body: (UnsafeMutablePointer<redisReply>) -> T) throws(RedisError) -> T {
        guard !isBroken else { throw RedisError(.connection, "connection to \(url) is closed") }
        var raw: UnsafeMutableRawPointer?
        if let context {
            if redisGetReply(context, &raw) != REDIS_OK || raw == nil { throw brokenError() }
            replied = true
        } else {
            raw = try tlsIO { t throws(RedisError) in try t.nextReply() }
        }
        defer { freeReplyObject(raw) }
        let reply = raw!.assumingMemoryBound(to: redisReply.self)
        if reply.pointee.type == REDIS_REPLY_ERROR, let why = RedisConnection.failoverError(reply) {
            // The server was a master and is a replica now (READONLY), or a master that lost
            // its replicas and refuses writes (NOREPLICAS, with min-replicas-to-write: most
            // likely the old master during a failover): this connection is of no more use
            // for writes; the next one asks the sentinels again.
            isBroken = true
            throw RedisError(.connection, "\(url) refused a write (\(why)): reconnecting to the master")
        }
        return body(reply)
    }

    // MARK: Non-blocking use (pub/sub reader: poll the socket, then parse what arrived)

    /// The socket, for poll(2).
    var fileDescriptor: Int32 { context?.pointee.fd ?? tls!.fd }

    /// Writes everything appended so far.
    func flushOutput() throws(RedisError) {
        guard !isBroken else { throw RedisError(.connection, "connection to \(url) is closed") }
        guard let context else { return try tlsIO { t throws(RedisError) in try t.flush() } }
        var done: Int32 = 0
        while done == 0 {
            if redisBufferWrite(context, &done) != REDIS_OK { throw brokenError() }
        }
    }

    /// Reads what the socket has (call when poll says it is readable; blocks otherwise).
    func readAvailable() throws(RedisError) {
        guard !isBroken else { throw RedisError(.connection, "connection to \(url) is closed") }
        guard let context else { return try tlsIO { t throws(RedisError) in try t.readAvailable() } }
        if redisBufferRead(context) != REDIS_OK { throw brokenError() }
    }

    /// The next complete reply already read, without I/O; nil when none is buffered.
    func bufferedReply() throws(RedisError) -> RedisReply? {
        var raw: UnsafeMutableRawPointer?
        if let context {
            if redisGetReplyFromReader(context, &raw) != REDIS_OK { throw brokenError() }
        } else {
            raw = try tlsIO { t throws(RedisError) in try t.bufferedReply() }
        }
        guard let raw else { return nil }
        defer { freeReplyObject(raw) }
        return RedisConnection.convert(raw.assumingMemoryBound(to: redisReply.self))
    }

    private static let failoverPrefixes = ["READONLY", "NOREPLICAS"].map { Array($0.utf8) }

    /// "READONLY" or "NOREPLICAS" when the error reply starts with one (see withNextReply).
    private static func failoverError(_ r: UnsafeMutablePointer<redisReply>) -> String? {
        guard let p = r.pointee.str else { return nil }
        for prefix in failoverPrefixes where r.pointee.len >= prefix.count {
            let match = p.withMemoryRebound(to: UInt8.self, capacity: prefix.count) { q in
                (0..<prefix.count).allSatisfy { q[$0] == prefix[$0] }
            }
            if match { return String(decoding: prefix, as: UTF8.self) }
        }
        return nil
    }

    /// A TLS call; any error leaves the connection broken, as hiredis's do.
    private func tlsIO<T>(_ body: (TLSStream) throws(RedisError) -> T) throws(RedisError) -> T {
        do { return try body(tls!) } catch {
            isBroken = true
            throw error
        }
    }

    private func brokenError() -> RedisError {
        isBroken = true
        guard let context else { return RedisError(.connection, "connection to \(url) is broken") }
        let errno_ = context.pointee.err
        let text = RedisConnection.errorString(context)
        if errno_ == REDIS_ERR_IO && (text.contains("Resource temporarily unavailable") || text.contains("timed out")) {
            return RedisError(.timeout, "no reply from \(url) within \(currentTimeout) s")
        }
        if errno_ == REDIS_ERR_EOF || errno_ == REDIS_ERR_IO {
            // A TLS-only port drops a plain connection at its first bytes (EOF or reset).
            var hint = ""
            if !replied, errno_ == REDIS_ERR_EOF || text.contains("reset by peer"), case .tcp = url.endpoint {
                hint = " (before any reply: if that port serves TLS only, use rediss://)"
            }
            return RedisError(.connection, "connection to \(url) lost: \(text)\(hint)")
        }
        return RedisError(.connection, "Redis protocol error from \(url): \(text)")
    }

    private static func convert(_ r: UnsafeMutablePointer<redisReply>) -> RedisReply {
        let reply = r.pointee
        switch reply.type {
        case REDIS_REPLY_STRING:
            return .bulk(bytes(reply.str, reply.len))
        case REDIS_REPLY_STATUS:
            return .status(String(decoding: bytes(reply.str, reply.len), as: UTF8.self))
        case REDIS_REPLY_ERROR:
            return .error(String(decoding: bytes(reply.str, reply.len), as: UTF8.self))
        case REDIS_REPLY_INTEGER:
            return .integer(Int(reply.integer))
        case REDIS_REPLY_ARRAY:
            var items: [RedisReply] = []
            items.reserveCapacity(reply.elements)
            for i in 0..<reply.elements {
                if let e = reply.element[i] { items.append(convert(e)) } else { items.append(.null) }
            }
            return .array(items)
        default:
            return .null
        }
    }

    static func bytes(_ p: UnsafeMutablePointer<CChar>?, _ n: Int) -> [UInt8] {
        guard let p, n > 0 else { return [] }
        return p.withMemoryRebound(to: UInt8.self, capacity: n) { Array(UnsafeBufferPointer(start: $0, count: n)) }
    }

    private static func errorString(_ ctx: UnsafeMutablePointer<redisContext>) -> String {
        withUnsafePointer(to: ctx.pointee.errstr) { p in
            p.withMemoryRebound(to: CChar.self, capacity: 128) { String(cString: $0) }
        }
    }

    static func timeval(_ seconds: Double) -> Foundation.timeval {
        let s = max(seconds, 0.001)
        return Foundation.timeval(tv_sec: Int(s), tv_usec: Int((s - Double(Int(s))) * 1_000_000))
    }
}
