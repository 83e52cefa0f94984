import Foundation
import Logging
import RedisClient
import Synchronization

/// Celery's remote control ("pidbox") on Redis, as kombu carries it: requests are PUBLISHed
/// on `/<db>.celery.pidbox` (the fanout exchange `celery.pidbox`), each a kombu envelope whose
/// base64 body is `{method, arguments, destination, pattern, matcher, ticket, reply_to}`;
/// a reply (only when the request has a `reply_to` and a `ticket`) is `{"<node>": value}`,
/// LPUSHed to the requester's reply queue, found in kombu's binding table
/// `_kombu.binding.reply.celery.pidbox` under the requester's routing key (docs/monitoring.md).
///
/// Messages arrive on the subscriber's reader thread and are handed to a task of the
/// cooperative pool; a message that is not a control request is logged and dropped: the
/// pidbox keeps serving.
final class Pidbox: Sendable {
    let node: String
    let channel: String
    let redis: Redis
    let subscriber: RedisPubSub
    let logger: Logger
    let clock: LamportClock
    private let handle: @Sendable (ControlRequest) async -> JSONValue?
    private let inbox: AsyncStream<[UInt8]>.Continuation
    private let messages: AsyncStream<[UInt8]>

    /// `handle`: the worker's answer to a request meant for it (nil: no reply, e.g. shutdown).
    init(url: RedisURL, node: String, clock: LamportClock, logger: Logger, handle: @escaping @Sendable (ControlRequest) async -> JSONValue?) {
        self.node = node
        self.channel = "/\(url.db).celery.pidbox"
        self.redis = Redis(url: url, label: "pidbox-\(node)")
        self.logger = logger
        self.clock = clock
        self.handle = handle
        let (stream, continuation) = AsyncStream<[UInt8]>.makeStream(bufferingPolicy: .bufferingNewest(1000))
        messages = stream
        inbox = continuation
        subscriber = RedisPubSub(url: url, label: "pidbox-sub-\(node)", onMessage: { _, payload in continuation.yield(payload) })
    }

    /// Subscribes, then serves requests until `isStopping` (polled) or cancellation.
    func run(isStopping: @escaping @Sendable () -> Bool) async {
        do { try await subscriber.subscribe([channel]) } catch {
            logger.error("remote control unavailable: cannot subscribe to \(channel): \(error)")
            return
        }
        let inbox = self.inbox, subscriber = self.subscriber
        let watcher = Task {
            while !isStopping() && !Task.isCancelled { try? await Task.sleep(for: .milliseconds(200)) }
            inbox.finish()
            subscriber.shutdown()
        }
        defer { watcher.cancel() }
        await withTaskCancellationHandler {
            for await payload in messages {
                guard let request = ControlRequest(envelope: payload) else {
                    logger.warning("remote control: ignored a message that is not a control request", metadata: ["preview": .string(TaskMessage.preview(payload))])
                    continue
                }
                guard request.isFor(node) else { continue }
                clock.observe(request.clock)
                // Each request in a task of its own: a slow one (stats reads Redis) holds up no other.
                Task {
                    let reply = await self.handle(request)
                    if let reply, let ticket = request.ticket, let replyTo = request.replyTo { await self.reply(reply, ticket: ticket, to: replyTo) }
                }
            }
        } onCancel: {
            inbox.finish()
            subscriber.shutdown()
        }
    }

    /// LPUSH `{"<node>": value}` to the queue bound to the requester's routing key.
    private func reply(_ value: JSONValue, ticket: String, to replyTo: String) async {
        let body = JSONValue.object([JSONMember(node, value)]).serializedBytes()
        let envelope = JSONValue.object([
            JSONMember("body", .string(Data(body).base64EncodedString())),
            JSONMember("content-encoding", "utf-8"), JSONMember("content-type", "application/json"),
            JSONMember("headers", .object([JSONMember("ticket", .string(ticket)), JSONMember("clock", .int(clock.tick()))])),
            JSONMember("properties", .object([
                JSONMember("delivery_mode", 1),
                JSONMember("delivery_info", .object([JSONMember("exchange", "reply.celery.pidbox"), JSONMember("routing_key", .string(replyTo))])),
                JSONMember("priority", 0), JSONMember("body_encoding", "base64"), JSONMember("delivery_tag", .string(FastUUID.string())),
            ])),
        ]).serializedBytes()
        do {
            // kombu's direct exchange: the binding table maps the routing key to its queue.
            let members = try await redis.call("SMEMBERS", "_kombu.binding.reply.celery.pidbox").array?.compactMap(\.string) ?? []
            let queues = members.compactMap { m -> String? in
                let parts = m.components(separatedBy: Keys.separator)
                return parts.count == 3 && parts[0] == replyTo ? parts[2] : nil
            }
            guard !queues.isEmpty else {
                // No binding: the requester gave up waiting (or never bound). Kombu's usual queue
                // name, kept 5 minutes only, so a late reply is not left in Redis for good.
                let q = replyTo + ".reply.celery.pidbox"
                _ = try await redis.pipeline([RedisCommand("LPUSH", q, envelope), RedisCommand("EXPIRE", q, 300)])
                return
            }
            for q in Set(queues) { _ = try await redis.call("LPUSH", q, envelope) }
        } catch {
            logger.warning("remote control: reply not sent: \(error)")
        }
    }
}

/// One remote-control request.
struct ControlRequest: Sendable {
    var method: String
    var arguments: JSONValue
    var destination: [String]?
    var pattern: String?
    var ticket: String?
    var replyTo: String?
    var clock: Int

    init?(envelope raw: [UInt8]) {
        guard let (env, bytes) = KombuEnvelope.open(raw), let body = try? JSONValue(parsing: bytes), let method = body["method"]?.stringValue else { return nil }
        self.method = method
        arguments = body["arguments"] ?? .object([])
        destination = body["destination"]?.arrayValue?.compactMap(\.stringValue)
        pattern = body["matcher"]?.stringValue == "glob" ? body["pattern"]?.stringValue : nil
        ticket = body["ticket"]?.stringValue
        replyTo = body["reply_to"]?["routing_key"]?.stringValue
        clock = env["headers"]?["clock"]?.intValue ?? 0
    }

    /// Whether `node` is addressed: no destination (everyone), named, or matching the glob.
    func isFor(_ node: String) -> Bool {
        if let destination, !destination.isEmpty { return destination.contains(node) }
        if let pattern { return fnmatch(pattern, node, 0) == 0 }
        return true
    }

    func argument(_ name: String) -> JSONValue? {
        guard let v = arguments[name], !v.isNull else { return nil }
        return v
    }

    /// An argument as Celery's handlers read it: JSON truthiness (Flower sends `terminate: 1`).
    func flag(_ name: String) -> Bool {
        switch argument(name) {
        case let .bool(b)?: return b
        case let .number(n)?: return n != "0" && n != "0.0"
        case let .string(s)?: return !s.isEmpty && s != "0" && s.lowercased() != "false"
        case nil: return false
        default: return true
        }
    }
}

/// Celery's logical clock (kombu's `LamportClock`): ticks on every message sent, jumps past
/// every clock seen.
final class LamportClock: Sendable {
    private let value = Mutex(0)
    func tick() -> Int { value.withLock { $0 += 1; return $0 } }
    func observe(_ other: Int) { value.withLock { $0 = max($0, other) + 1 } }
    var now: Int { value.withLock { $0 } }
}
