import Dispatch
import Foundation
import Logging

/// An async handle on one Redis connection.
///
/// hiredis is blocking, and Swift's cooperative pool has only as many threads as cores (2
/// here): a blocked BLMOVE there would stall every other task. So every call runs on this
/// handle's own serial dispatch queue (a thread outside the cooperative pool) and the caller
/// awaits a continuation. One handle = one connection = calls in order; use several handles
/// for parallelism (e.g. one for blocking fetches, one for result writes).
///
/// The connection is opened lazily and re-opened after it breaks. Reconnection attempts are
/// spaced with exponential backoff (0.1 s doubling to `maxBackoff`): a call made while the
/// server is away fails fast with a `.connection` error instead of hammering it. Nothing is
/// retried behind the caller's back: a command whose connection broke may or may not have run.
public final class Redis: @unchecked Sendable {
    // @unchecked: all mutable state below is touched only on `queue`.
    public let url: RedisURL
    public let commandTimeout: Double
    public let connectTimeout: Double
    public let maxBackoff: Double
    private let queue: DispatchQueue
    private var connection: RedisConnection?
    private var backoff: Backoff
    private var nextAttempt: Double = 0
    private var scriptSHAs: [String: String] = [:]

    public init(url: RedisURL, label: String = "redis", connectTimeout: Double = 2, commandTimeout: Double = 10, maxBackoff: Double = 5) {
        self.url = url
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
        self.maxBackoff = maxBackoff
        self.backoff = Backoff(first: 0.1, max: maxBackoff)
        self.queue = DispatchQueue(label: "celerity.redis.\(label)")
    }

    public convenience init(_ urlString: String, label: String = "redis") throws(RedisError) {
        self.init(url: try RedisURL(string: urlString), label: label)
    }

    // MARK: - Calls

    /// Sends one command; a server error reply is returned as `.error`, not thrown.
    public func send(_ command: RedisCommand) async throws -> RedisReply {
        try await run { c throws(RedisError) in try c.command(command) }
    }

    /// Sends one command given as strings/bytes; server error replies are thrown.
    @discardableResult
    public func call(_ name: String, _ args: any RedisArgument...) async throws -> RedisReply {
        let command = RedisCommand(name, arguments: args)
        return try await send(command).throwingError(naming: command)
    }

    /// Sends all commands in one write and returns every reply in order (one round trip).
    public func pipeline(_ commands: [RedisCommand]) async throws -> [RedisReply] {
        if commands.isEmpty { return [] }
        return try await run { c throws(RedisError) in try c.pipeline(commands) }
    }

    /// Sends all commands in one write and returns the messages of the error replies only
    /// (empty when all succeeded): the other replies are read but never built.
    public func pipelineErrors(_ commands: [RedisCommand]) async throws -> [String] {
        if commands.isEmpty { return [] }
        return try await run { c throws(RedisError) in try c.pipelineErrors(commands) }
    }

    /// `pipelineErrors` for commands already written in RESP (`RESPBatch`).
    public func pipelineErrors(_ batch: RESPBatch) async throws -> [String] {
        if batch.isEmpty { return [] }
        return try await run { c throws(RedisError) in try c.pipelineErrors(batch) }
    }

    /// Sends a blocking command (BLMOVE, BRPOP, ...) whose own timeout is `seconds`; the
    /// socket timeout is raised above it for this call.
    public func blocking(_ command: RedisCommand, timeout seconds: Double) async throws -> RedisReply {
        try await withSession { s throws(RedisError) in try s.blocking(command, timeout: seconds) }
    }

    /// Runs a Lua script by its SHA (EVALSHA), loading it first (SCRIPT LOAD) when the
    /// server does not know it yet.
    public func evalScript(_ script: RedisScript, keys: [any RedisArgument], args: [any RedisArgument]) async throws -> RedisReply {
        try await run { c throws(RedisError) in
            try self.evalOnQueue(c, script, keys: keys.map(\.redisBytes), args: args.map(\.redisBytes))
        }
    }

    /// Runs the same script once per call, all in one pipeline (one round trip), loading it
    /// first when needed. Replies in order; a server error is returned as `.error`, not thrown.
    /// A call that found the script gone (NOSCRIPT: it did not run) is run again alone.
    public func evalScriptMany(_ script: RedisScript, calls: [(keys: [any RedisArgument], args: [any RedisArgument])]) async throws -> [RedisReply] {
        let encoded = calls.map { (keys: $0.keys.map(\.redisBytes), args: $0.args.map(\.redisBytes)) }
        return try await run { c throws(RedisError) in
            guard let first = encoded.first else { return [] }
            // The first call loads the script if this connection has not yet.
            var replies = [try self.evalOnQueue(c, script, keys: first.keys, args: first.args, throwing: false)]
            guard encoded.count > 1, let sha = self.scriptSHAs[script.source] else {
                return replies + (try encoded.dropFirst().map { x throws(RedisError) in try self.evalOnQueue(c, script, keys: x.keys, args: x.args, throwing: false) })
            }
            let commands = encoded.dropFirst().map { x in
                RedisCommand([Array("EVALSHA".utf8), Array(sha.utf8), Array(String(x.keys.count).utf8)] + x.keys + x.args)
            }
            var rest = try c.pipeline(Array(commands))
            for (i, r) in rest.enumerated() {
                if case let .error(message) = r, message.hasPrefix("NOSCRIPT") {
                    self.scriptSHAs[script.source] = nil
                    let x = encoded[i + 1]
                    rest[i] = try self.evalOnQueue(c, script, keys: x.keys, args: x.args, throwing: false)
                }
            }
            replies += rest
            return replies
        }
    }

    /// Runs `body` on this handle's own thread with its connection, for commands that must
    /// follow one another without a hand-off between threads (a blocking fetch, then at once
    /// the writes it leads to). They block this handle's thread only, never Swift's
    /// cooperative pool. The session must not outlive `body`.
    public func withSession<T: Sendable>(_ body: @escaping @Sendable (RedisSession) throws(RedisError) -> T) async throws -> T {
        try await run { c throws(RedisError) in try body(RedisSession(connection: c, commandTimeout: self.commandTimeout)) }
    }

    /// `withSession` for threads of our own (a plugin's stdout reader, ...): `body` runs on
    /// the calling thread when the handle is idle (dispatch_sync), after the work queued
    /// before it otherwise. It blocks the caller: never call it from Swift's cooperative pool.
    public func withSessionNow<T>(_ body: (RedisSession) throws(RedisError) -> T) throws(RedisError) -> T {
        dispatchPrecondition(condition: .notOnQueue(queue))
        let r: Result<T, RedisError> = queue.sync {
            do throws(RedisError) {
                let c = try connected()
                let value = try body(RedisSession(connection: c, commandTimeout: commandTimeout))
                if c.isBroken { connection = nil }
                return .success(value)
            } catch {
                if connection?.isBroken == true { connection = nil }
                return .failure(error)
            }
        }
        return try r.get()
    }

    /// Closes the connection now (the next call reconnects).
    public func close() async {
        await withCheckedContinuation { (cont: CheckedContinuation<Void, Never>) in
            queue.async {
                self.connection = nil
                cont.resume()
            }
        }
    }

    /// Checks the server answers PING (connecting if needed).
    public func ping() async throws {
        let r = try await call("PING")
        guard r.string == "PONG" else { throw RedisError(.unexpectedReply, "PING answered \(r)") }
    }

    // MARK: - Internals

    private func evalOnQueue(_ c: RedisConnection, _ script: RedisScript, keys: [[UInt8]], args: [[UInt8]], throwing: Bool = true) throws(RedisError) -> RedisReply {
        let sha: String
        if let known = scriptSHAs[script.source] {
            sha = known
        } else {
            let load = RedisCommand("SCRIPT", "LOAD", script.source)
            let loaded = try c.command(load).throwingError(naming: RedisCommand("SCRIPT", "LOAD"))
            guard let s = loaded.string else { throw RedisError(.unexpectedReply, "SCRIPT LOAD answered \(loaded)") }
            scriptSHAs[script.source] = s
            sha = s
        }
        let argv: [[UInt8]] = [Array("EVALSHA".utf8), Array(sha.utf8), Array(String(keys.count).utf8)] + keys + args
        let reply = try c.command(RedisCommand(argv))
        if case let .error(message) = reply, message.hasPrefix("NOSCRIPT") {
            scriptSHAs[script.source] = nil
            return try evalOnQueue(c, script, keys: keys, args: args, throwing: throwing)
        }
        guard throwing else { return reply }
        return try reply.throwingError(naming: RedisCommand("EVALSHA", "on keys " + keys.map { String(decoding: $0, as: UTF8.self) }.joined(separator: " ")))
    }

    private func run<T: Sendable>(_ body: @escaping @Sendable (RedisConnection) throws(RedisError) -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (cont: CheckedContinuation<T, any Error>) in
            queue.async {
                do {
                    let c = try self.connected()
                    let value = try body(c)
                    if c.isBroken { self.connection = nil }
                    cont.resume(returning: value)
                } catch {
                    if self.connection?.isBroken == true { self.connection = nil }
                    cont.resume(throwing: error)
                }
            }
        }
    }

    private func connected() throws(RedisError) -> RedisConnection {
        if let c = connection, !c.isBroken { return c }
        connection = nil
        let now = Date().timeIntervalSince1970
        if now < nextAttempt {
            throw RedisError(.connection, "\(url) is unreachable; next reconnect attempt in \(String(format: "%.1f", nextAttempt - now)) s")
        }
        do {
            let c = try RedisConnection(url: url, connectTimeout: connectTimeout, commandTimeout: commandTimeout)
            connection = c
            backoff.reset()
            nextAttempt = 0
            scriptSHAs = [:]
            return c
        } catch {
            nextAttempt = Date().timeIntervalSince1970 + backoff.next()
            throw error
        }
    }
}

/// A Lua script, run with EVALSHA (see `Redis.evalScript`).
public struct RedisScript: Sendable, Hashable {
    public let source: String
    public init(_ source: String) { self.source = source }
}

/// A connection lent to `Redis.withSession`'s body, on that handle's thread: calls block.
public struct RedisSession {
    let connection: RedisConnection
    let commandTimeout: Double

    /// Sends one command; a server error reply is returned as `.error`, not thrown.
    public func send(_ command: RedisCommand) throws(RedisError) -> RedisReply { try connection.command(command) }

    /// Sends all commands in one write and reads every reply in order.
    public func pipeline(_ commands: [RedisCommand]) throws(RedisError) -> [RedisReply] {
        commands.isEmpty ? [] : try connection.pipeline(commands)
    }

    /// Like `Redis.pipelineErrors`: the error replies' messages only.
    public func pipelineErrors(_ commands: [RedisCommand]) throws(RedisError) -> [String] {
        commands.isEmpty ? [] : try connection.pipelineErrors(commands)
    }

    /// `Redis.pipelineErrors` for commands already written in RESP.
    public func pipelineErrors(_ batch: RESPBatch) throws(RedisError) -> [String] {
        try connection.pipelineErrors(batch)
    }

    /// Writes commands already in RESP without waiting for their replies; `readErrors` reads
    /// them (as many as the batches held), in order. Several batches can be in flight.
    public func write(_ batch: RESPBatch) throws(RedisError) { try connection.write(batch) }

    /// Reads `count` replies of what `write` sent; returns the error replies' messages.
    public func readErrors(_ count: Int) throws(RedisError) -> [String] {
        count == 0 ? [] : try connection.readErrors(count)
    }

    /// A blocking command whose own timeout is `seconds` (the socket timeout is raised above it).
    public func blocking(_ command: RedisCommand, timeout seconds: Double) throws(RedisError) -> RedisReply {
        connection.setTimeout(seconds + 5)
        defer { if !connection.isBroken { connection.setTimeout(commandTimeout) } }
        return try connection.command(command)
    }
}
