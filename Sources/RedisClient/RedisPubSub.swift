import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A pub/sub subscriber on one connection, read by a thread of its own.
///
/// Why our own code: hiredis's blocking API cannot wait for pushes and take new SUBSCRIBE
/// commands at the same time, and a socket time-out leaves its context unusable. This reader
/// polls the socket together with a wake-up pipe, so subscriptions can be added at any moment
/// and a message is handed over the moment it arrives; it never touches Swift's cooperative
/// pool. (No library on this machine's mirror offers a hiredis-based subscriber.)
///
/// After a lost connection it reconnects with backoff, subscribes again to everything, and
/// calls `onReconnect` (messages published meanwhile were missed: read the keys again).
public final class RedisPubSub: Sendable {
    public typealias MessageHandler = @Sendable (_ channel: [UInt8], _ payload: [UInt8]) -> Void

    /// A SUBSCRIBE/PSUBSCRIBE sent or to send; Redis confirms each name in order.
    private struct Pending {
        let command: RedisCommand
        var remaining: Int
        /// nil for the re-subscriptions after a reconnect (nobody waits for them).
        let continuation: CheckedContinuation<Void, any Error>?
    }
    private struct State {
        var outbox: [RedisCommand] = []
        var confirmations: [Pending] = []
        var channels: Set<String> = []
        var patterns: Set<String> = []
        var started = false
        var closed = false
        var connected = false
    }

    public let url: RedisURL
    private let label: String
    private let onMessage: MessageHandler
    private let onReconnect: @Sendable () -> Void
    private let onRefused: @Sendable (RedisError) -> Void
    private let state = Mutex(State())
    private let wakeRead: Int32
    private let wakeWrite: Int32

    /// - Parameter onRefused: a re-subscription after a reconnect was refused (nobody waits
    ///   for it; e.g. the user's ACL changed meanwhile).
    public init(url: RedisURL, label: String = "pubsub", onMessage: @escaping MessageHandler, onReconnect: @escaping @Sendable () -> Void = {},
                onRefused: @escaping @Sendable (RedisError) -> Void = { _ in }) {
        self.url = url
        self.label = label
        self.onMessage = onMessage
        self.onReconnect = onReconnect
        self.onRefused = onRefused
        var fds: [Int32] = [0, 0]
        _ = pipe(&fds)
        _ = fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK)
        _ = fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) | O_NONBLOCK)
        wakeRead = fds[0]
        wakeWrite = fds[1]
    }

    deinit {
        close(wakeRead)
        close(wakeWrite)
    }

    /// Subscribes to channels; returns once Redis has confirmed every one.
    public func subscribe(_ channels: [String]) async throws {
        try await request("SUBSCRIBE", channels) { s in s.channels.formUnion(channels) }
    }

    /// Subscribes to patterns (PSUBSCRIBE); returns once Redis has confirmed every one.
    public func psubscribe(_ patterns: [String]) async throws {
        try await request("PSUBSCRIBE", patterns) { s in s.patterns.formUnion(patterns) }
    }

    /// Drops channel subscriptions (no confirmation awaited).
    public func unsubscribe(_ channels: [String]) {
        guard !channels.isEmpty else { return }
        state.withLock { s in
            for c in channels { s.channels.remove(c) }
            if s.connected { s.outbox.append(RedisCommand([Array("UNSUBSCRIBE".utf8)] + channels.map { Array($0.utf8) })) }
        }
        wake()
    }

    /// Stops the reader thread and closes the connection; pending subscriptions fail.
    public func shutdown() {
        state.withLock { $0.closed = true }
        wake()
    }

    private func request(_ verb: String, _ names: [String], _ remember: @escaping @Sendable (inout State) -> Void) async throws {
        guard !names.isEmpty else { return }
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            let refused: String? = state.withLock { s in
                if s.closed { return "subscriber is shut down" }
                remember(&s)
                let command = RedisCommand([Array(verb.utf8)] + names.map { Array($0.utf8) })
                if s.connected { s.outbox.append(command) }
                s.confirmations.append(Pending(command: command, remaining: names.count, continuation: c))
                if !s.started {
                    s.started = true
                    let t = Thread { [self] in self.loop() }
                    t.name = "celerity.\(label)"
                    t.start()
                }
                return nil
            }
            if let refused { c.resume(throwing: RedisError(.connection, refused)) }
            else { wake() }
        }
    }

    private func wake() {
        var b: UInt8 = 1
        _ = write(wakeWrite, &b, 1)
    }

    // MARK: - The reader thread

    private func loop() {
        var backoff = Backoff(first: 0.1, max: 5)
        var everConnected = false
        while !state.withLock({ $0.closed }) {
            let connection: RedisConnection
            do {
                connection = try RedisConnection(url: url, connectTimeout: 2, commandTimeout: 10)
            } catch {
                failPending(error.message)
                Thread.sleep(forTimeInterval: backoff.next())
                continue
            }
            backoff.reset()
            // Send the requests not yet confirmed; after a reconnect, first everything that
            // was subscribed before (nobody waits for those confirmations).
            let reconnected = everConnected
            state.withLock { s in
                s.connected = true
                var again: [Pending] = []
                if reconnected {
                    if !s.channels.isEmpty {
                        again.append(Pending(command: RedisCommand([Array("SUBSCRIBE".utf8)] + s.channels.map { Array($0.utf8) }), remaining: s.channels.count, continuation: nil))
                    }
                    if !s.patterns.isEmpty {
                        again.append(Pending(command: RedisCommand([Array("PSUBSCRIBE".utf8)] + s.patterns.map { Array($0.utf8) }), remaining: s.patterns.count, continuation: nil))
                    }
                }
                s.confirmations = again + s.confirmations
                s.outbox = s.confirmations.map(\.command)
            }
            everConnected = true
            if reconnected { onReconnect() }
            do {
                try serve(connection)
            } catch {
                state.withLock { $0.connected = false }
                failPending("lost the subscriber connection to \(url): \(error)")
            }
        }
        failPending("subscriber is shut down")
    }

    private func serve(_ c: RedisConnection) throws(RedisError) {
        var fds = [pollfd(fd: c.fileDescriptor, events: Int16(POLLIN), revents: 0), pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)]
        var drain = [UInt8](repeating: 0, count: 256)
        while true {
            let (commands, closed) = state.withLock { s -> ([RedisCommand], Bool) in
                defer { s.outbox.removeAll(keepingCapacity: true) }
                return (s.outbox, s.closed)
            }
            if closed { return }
            if !commands.isEmpty {
                try c.appendAll(commands)
                try c.flushOutput()
            }
            while let reply = try c.bufferedReply() { handle(reply) }
            fds[0].revents = 0
            fds[1].revents = 0
            let n = poll(&fds, 2, 1000)
            if n < 0 && errno != EINTR { throw RedisError(.connection, "poll failed: errno \(errno)") }
            if fds[1].revents != 0 { _ = read(wakeRead, &drain, drain.count) }
            if fds[0].revents != 0 { try c.readAvailable() }
        }
    }

    private func handle(_ reply: RedisReply) {
        if case let .error(message) = reply {
            refused(message)
            return
        }
        guard case let .array(parts) = reply, let kind = parts.first?.string else { return }
        switch kind {
        case "message":
            if parts.count == 3, let ch = parts[1].bytes, let payload = parts[2].bytes { onMessage(ch, payload) }
        case "pmessage":
            if parts.count == 4, let ch = parts[2].bytes, let payload = parts[3].bytes { onMessage(ch, payload) }
        case "subscribe", "psubscribe":
            let done: CheckedContinuation<Void, any Error>? = state.withLock { s in
                guard !s.confirmations.isEmpty else { return nil }
                s.confirmations[0].remaining -= 1
                if s.confirmations[0].remaining > 0 { return nil }
                return s.confirmations.removeFirst().continuation
            }
            done?.resume()
        default:
            break
        }
    }

    /// An error reply: Redis refused the oldest SUBSCRIBE/PSUBSCRIBE not yet confirmed (as a
    /// whole: an ACL check refuses every name of the command, e.g. `NOPERM` for a channel the
    /// user may not read). Its waiter fails with the command and the reason, and its names are
    /// forgotten (a reconnect does not ask again).
    private func refused(_ message: String) {
        let pending: Pending? = state.withLock { s in
            guard !s.confirmations.isEmpty else { return nil }
            let p = s.confirmations.removeFirst()
            let names = p.command.arguments.dropFirst().map { String(decoding: $0, as: UTF8.self) }
            if p.command.arguments.first == Array("PSUBSCRIBE".utf8) {
                for n in names { s.patterns.remove(n) }
            } else {
                for n in names { s.channels.remove(n) }
            }
            return p
        }
        guard let pending else { return }
        let verb = pending.command.arguments.first.map { String(decoding: $0, as: UTF8.self) } ?? "SUBSCRIBE"
        let names = pending.command.arguments.dropFirst().prefix(3).map { String(decoding: $0, as: UTF8.self) }.joined(separator: " ")
        let more = pending.command.arguments.count > 4 ? " …" : ""
        let error = RedisError(.server, "\(message) (\(verb) \(names)\(more) refused by \(url))")
        if let c = pending.continuation {
            c.resume(throwing: error)
        } else {
            onRefused(error)
        }
    }

    private func failPending(_ why: String) {
        let pending = state.withLock { s -> [Pending] in
            defer { s.confirmations.removeAll(); s.outbox.removeAll() }
            return s.confirmations
        }
        for p in pending { p.continuation?.resume(throwing: RedisError(.connection, why)) }
    }
}
