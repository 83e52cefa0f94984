import Foundation
import RedisClient

/// Celery's remote control, the requester's side (`app.control.broadcast` / `inspect`), on
/// Redis as kombu carries it. Works with Celerity workers and Python Celery workers alike.
///
/// One request (`broadcast`), as captured from Celery 5.7 / kombu (redis-cli MONITOR):
/// 1. the reply queue `<oid>.reply.celery.pidbox` is bound: kombu's script adds
///    `<oid>\x06\x16\x06\x16<oid>.reply.celery.pidbox` to `_kombu.binding.reply.celery.pidbox`
///    and raises the table's deadline in `_kombu.binding_deadlines` (one hour, server clock);
/// 2. PUBLISH on `/<db>.celery.pidbox` of a kombu envelope, base64 body
///    `{method, arguments, destination, pattern, matcher, ticket, reply_to: {exchange:
///    "reply.celery.pidbox", routing_key: <oid>}}`, headers `{clock, expires}`;
/// 3. replies `{"<node>": value}` are LPUSHed by the workers to the reply queue; they are taken
///    with BRPOP (every priority list, as kombu does), those of another ticket dropped, until
///    `limit` replies or `timeout` seconds after the request (in all: unlike kombu, whose
///    timeout restarts with each reply, the wait is bounded);
/// 4. the binding is removed (SREM from the table and `_kombu.binding_permanent.…`) and the
///    queue's lists deleted.
///
/// ```swift
/// let control = try ControlClient(broker: "redis://localhost:6379/0")
/// let pongs = try await control.broadcast("ping")          // [ControlReply(node:, value: {"ok":"pong"})]
/// try await control.broadcast("revoke", arguments: ["task_id": ["…"], "terminate": false, "signal": "SIGTERM"], reply: false)
/// ```
public final class ControlClient: Sendable {
    public let redis: Redis
    /// This requester's reply routing key (kombu's mailbox `oid`).
    public let oid: String
    let clock = LamportClock()

    public static let exchange = "celery.pidbox"
    public static let replyExchange = "reply.celery.pidbox"
    /// How long the reply binding table lives unless refreshed (kombu's MIN_BINDING_TTL, ms).
    static let bindingTTL = 3_600_000

    public init(redis: Redis) {
        self.redis = redis
        self.oid = UUID().uuidString.lowercased()
    }

    /// Throws `RedisError` (`.invalidURL`) for a bad URL; nothing connects until a request.
    public convenience init(broker: String) throws {
        self.init(redis: Redis(url: try RedisURL(string: broker), label: "control"))
    }

    /// The channel requests are published on.
    public var channel: String { "/\(redis.url.db).\(Self.exchange)" }
    public var replyQueue: String { "\(oid).\(Self.replyExchange)" }
    var bindingMember: String { oid + Keys.separator + Keys.separator + replyQueue }

    /// kombu's REFRESH_BINDING: adds the member, raises the exchange's deadline (server clock).
    static let refreshBinding = RedisScript("""
    redis.call('SADD', KEYS[1], ARGV[1])
    local now = redis.call('TIME')
    local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
    redis.call('ZADD', KEYS[2], 'GT', ms + tonumber(ARGV[3]), ARGV[2])
    """)

    /// Sends `method` to the workers and, with `reply`, collects their answers.
    ///
    /// - Parameters:
    ///   - arguments: the request's `arguments` object (names as Celery's handlers read them).
    ///   - destination: only these nodes (nil or empty: every node). With no `limit`, the
    ///     wait ends once each of them has replied.
    ///   - pattern: only nodes whose name matches this glob (Celery's `matcher: "glob"`).
    ///   - timeout: seconds to wait for replies, from the request on.
    ///   - limit: stop after this many replies.
    /// - Returns: the replies in arrival order (empty without `reply`).
    @discardableResult
    public func broadcast(_ method: String, arguments: JSONValue = .object([]), destination: [String]? = nil, pattern: String? = nil,
                          reply: Bool = true, timeout: Double = 1, limit: Int? = nil) async throws -> [ControlReply] {
        let ticket = reply ? UUID().uuidString.lowercased() : nil
        let destination = destination.flatMap { $0.isEmpty ? nil : $0 }
        if reply {
            _ = try await redis.evalScript(Self.refreshBinding, keys: [Keys.binding(Self.replyExchange), "_kombu.binding_deadlines"],
                                           args: [bindingMember, Self.replyExchange, Self.bindingTTL])
        }
        let envelope = requestEnvelope(method, arguments: arguments, destination: destination, pattern: pattern, ticket: ticket, timeout: timeout)
        do {
            try await redis.call("PUBLISH", channel, envelope)
            guard let ticket else { return [] }
            return try await collect(ticket: ticket, timeout: timeout, limit: limit ?? destination?.count)
        } catch {
            if reply { try? await cleanUp() }
            throw error
        }
    }

    /// The kombu envelope of a request (as `Mailbox._publish` sends it).
    func requestEnvelope(_ method: String, arguments: JSONValue, destination: [String]?, pattern: String?, ticket: String?, timeout: Double) -> [UInt8] {
        var body: [JSONMember] = [
            JSONMember("method", .string(method)),
            JSONMember("arguments", arguments),
            JSONMember("destination", destination.map { .array($0.map(JSONValue.string)) } ?? .null),
            JSONMember("pattern", pattern.map(JSONValue.string) ?? .null),
            JSONMember("matcher", pattern == nil ? .null : "glob"),
        ]
        if let ticket {
            body.append(JSONMember("ticket", .string(ticket)))
            body.append(JSONMember("reply_to", .object([JSONMember("exchange", .string(Self.replyExchange)), JSONMember("routing_key", .string(oid))])))
        }
        let bytes = JSONValue.object(body).serializedBytes()
        return JSONValue.object([
            JSONMember("body", .string(Data(bytes).base64EncodedString())),
            JSONMember("content-encoding", "utf-8"), JSONMember("content-type", "application/json"),
            JSONMember("headers", .object([JSONMember("clock", .int(clock.tick())),
                                           JSONMember("expires", timeout > 0 ? .double(Date().timeIntervalSince1970 + timeout) : .int(0))])),
            JSONMember("properties", .object([
                JSONMember("delivery_mode", 2),
                JSONMember("delivery_info", .object([JSONMember("exchange", .string(Self.exchange)), JSONMember("routing_key", "")])),
                JSONMember("priority", 0), JSONMember("body_encoding", "base64"), JSONMember("delivery_tag", .string(FastUUID.string())),
            ])),
        ]).serializedBytes()
    }

    private func collect(ticket: String, timeout: Double, limit: Int?) async throws -> [ControlReply] {
        let deadline = Date().addingTimeInterval(timeout)
        var replies: [ControlReply] = []
        let keys = Keys.priorityQueues(replyQueue)
        while limit.map({ replies.count < $0 }) ?? true {
            let left = deadline.timeIntervalSinceNow
            if left <= 0.001 { break }
            let command = RedisCommand([Array("BRPOP".utf8)] + keys.map { Array($0.utf8) } + [Array(String(format: "%.3f", left).utf8)])
            let r = try await redis.blocking(command, timeout: left).throwingError()
            guard let parts = r.array, parts.count == 2, let raw = parts[1].bytes else { break }
            guard let message = ControlReply.decode(envelope: raw) else { continue }
            clock.observe(message.clock)
            guard message.ticket == nil || message.ticket == ticket else { continue }
            replies += message.replies
        }
        // Best effort once replies are in: a failed cleanup must not turn them into an error.
        try? await cleanUp()
        return replies
    }

    /// Unbinds and deletes the reply queue (as kombu does when its consumer ends).
    func cleanUp() async throws {
        var commands = [RedisCommand("SREM", Keys.binding(Self.replyExchange), bindingMember),
                        RedisCommand("SREM", Keys.bindingPermanent(Self.replyExchange), bindingMember)]
        for k in Keys.priorityQueues(replyQueue) { commands.append(RedisCommand("DEL", k)) }
        for r in try await redis.pipeline(commands) { _ = try r.throwingError() }
    }
}

/// One node's answer to a remote-control request.
public struct ControlReply: Sendable, Hashable {
    public var node: String
    public var value: JSONValue

    public init(node: String, value: JSONValue) {
        self.node = node
        self.value = value
    }

    /// The error a reply carries: Celery's handlers answer `{"error": "…"}` when they refuse.
    public var error: String? {
        guard let e = value["error"], value["ok"] == nil else { return nil }
        return e.stringValue ?? e.serialized()
    }

    /// A reply envelope: its ticket and clock headers, and its `{node: value}` body.
    static func decode(envelope raw: [UInt8]) -> (ticket: String?, clock: Int, replies: [ControlReply])? {
        guard let (env, bytes) = KombuEnvelope.open(raw), let body = try? JSONValue(parsing: bytes), let members = body.objectValue else { return nil }
        return (env["headers"]?["ticket"]?.stringValue, env["headers"]?["clock"]?.intValue ?? 0,
                members.map { ControlReply(node: $0.key, value: $0.value) })
    }
}
