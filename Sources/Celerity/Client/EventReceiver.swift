import Foundation
import RedisClient
import Synchronization

/// Receives Celery events (worker heartbeats, task events) from Celerity and Python Celery
/// workers, as Celery's `EventReceiver` does on Redis (captured with redis-cli MONITOR):
/// its queue `celeryev.<uuid>` is bound to the fanout exchange `celeryev` with routing key
/// `#` (`#\x06\x16\x06\x16celeryev.<uuid>` in `_kombu.binding.celeryev`, deadline raised in
/// `_kombu.binding_deadlines`), then PSUBSCRIBE `/<db>.celeryev/*` (kombu turns `#` into
/// `*`); at the end the binding is removed. Each message is a kombu envelope whose base64
/// body is one event, or for routing key `task.multi` a JSON array of events.
///
/// ```swift
/// let receiver = try EventReceiver(broker: "redis://localhost:6379/0")
/// try await receiver.start()
/// for await event in receiver.events { print(event["type"]?.stringValue ?? "?") }
/// ```
public final class EventReceiver: Sendable {
    public let url: RedisURL
    /// The queue name kombu would give this receiver (`celeryev.<uuid>`).
    public let queue: String
    /// Events in arrival order (dropped beyond the newest 10,000 not yet read).
    public let events: AsyncStream<JSONValue>
    private let continuation: AsyncStream<JSONValue>.Continuation
    private let subscriber: RedisPubSub
    private let redis: Redis
    private let undecodable = Counter()

    public static let exchange = "celeryev"

    /// Throws `RedisError` (`.invalidURL`) for a bad URL; nothing connects until `start`.
    public init(broker: String) throws {
        url = try RedisURL(string: broker)
        queue = "celeryev." + UUID().uuidString.lowercased()
        let (stream, continuation) = AsyncStream<JSONValue>.makeStream(bufferingPolicy: .bufferingNewest(10_000))
        events = stream
        self.continuation = continuation
        redis = Redis(url: url, label: "events")
        let bad = undecodable
        subscriber = RedisPubSub(url: url, label: "events-sub", onMessage: { _, payload in
            guard let events = EventReceiver.decode(envelope: payload) else {
                bad.value.add(1, ordering: .relaxed)
                return
            }
            for e in events { continuation.yield(e) }
        })
    }

    deinit {
        subscriber.shutdown()
        continuation.finish()
    }

    /// The pattern subscribed to.
    public var pattern: String { "/\(url.db).\(Self.exchange)/*" }
    var bindingMember: String { "#" + Keys.separator + Keys.separator + queue }

    /// Messages received that were not events (not a kombu envelope of JSON).
    public var undecodableCount: Int { undecodable.value.load(ordering: .relaxed) }

    final class Counter: Sendable { let value = Atomic<Int>(0) }

    /// Binds and subscribes; returns once Redis has confirmed the subscription.
    public func start() async throws {
        _ = try await redis.evalScript(ControlClient.refreshBinding, keys: [Keys.binding(Self.exchange), "_kombu.binding_deadlines"],
                                       args: [bindingMember, Self.exchange, ControlClient.bindingTTL])
        try await subscriber.psubscribe([pattern])
    }

    /// Unsubscribes, removes the binding, ends `events`.
    public func stop() async {
        subscriber.shutdown()
        continuation.finish()
        _ = try? await redis.pipeline([RedisCommand("SREM", Keys.binding(Self.exchange), bindingMember),
                                       RedisCommand("SREM", Keys.bindingPermanent(Self.exchange), bindingMember)])
    }

    /// The events of one kombu envelope (a `task.multi` body's array unpacked); nil when it
    /// is not an envelope with a JSON body.
    public static func decode(envelope raw: [UInt8]) -> [JSONValue]? {
        guard let (_, bytes) = KombuEnvelope.open(raw), let body = try? JSONValue(parsing: bytes) else { return nil }
        switch body {
        case let .array(items): return items.filter { $0.objectValue != nil }
        case .object: return [body]
        default: return nil
        }
    }
}

/// Celery's event times (celery/events/state.py, celery/utils/time.py).
public enum EventTimes {
    /// Celery's `HEARTBEAT_EXPIRE_WINDOW` (percent of `freq`).
    public static let expireWindow = 200.0

    /// Celery's `heartbeat_expires`: a worker whose last heartbeat was at `timestamp` (seconds,
    /// adjusted) with `freq` stops counting as alive at `timestamp + freq * 2`.
    public static func heartbeatExpires(_ timestamp: Double, freq: Double = 60) -> Double {
        timestamp + freq * (expireWindow / 100)
    }

    /// An event's timestamp as Celery's receiver localizes it (`adjust_timestamp`): shifted
    /// by the difference between the sender's `utcoffset` and this host's (hours west of UTC).
    public static func adjusted(_ event: JSONValue) -> Double? {
        guard let t = event["timestamp"]?.doubleValue else { return nil }
        guard let offset = event["utcoffset"]?.doubleValue else { return t }
        return t - (offset - EventWire.utcOffsetHours()) * 3600
    }
}
