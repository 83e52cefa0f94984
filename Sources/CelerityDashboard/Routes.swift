import Celerity
import Foundation
import Hummingbird
import Logging
import RedisClient

/// The dashboard's routes: pages, the JSON API (docs/dashboard.md), /metrics, /healthz.
enum Routes {
    static func make(state: ClusterState, access: Access, logger: Logger) -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: AccessMiddleware(access: access))
        let csrf = access.csrf
        let broker = state.brokerDisplay

        // MARK: Pages
        router.get("/") { _, _ in
            return await page(csrf: csrf, broker: broker) {
                async let minutes = state.minuteTotals(minutes: 180)
                async let recent = state.history(ClusterState.HistoryQuery(limit: 10))
                let s = try await state.overview()
                return Pages.overview(s, minutes: try await minutes, recent: try await recent.records, csrf: csrf, broker: broker)
            }
        }
        router.get("/dead") { request, _ in
            let queue = request.uri.queryParameters.get("queue") ?? ""
            let text = request.uri.queryParameters.get("q") ?? ""
            return await page(csrf: csrf, broker: broker) {
                let (entries, matched) = try await state.deadLetters(queue: queue, text: text)
                let total = try await state.redis.call("LLEN", Keys.deadLetters).throwingError().int ?? 0
                return Pages.dead(entries, matched: matched, total: total, queue: queue, text: text, csrf: csrf, broker: broker)
            }
        }
        router.get("/delayed") { _, _ in
            return await page(csrf: csrf, broker: broker) {
                let (entries, count) = try await state.delayed()
                return Pages.delayed(entries, count: count, csrf: csrf, broker: broker)
            }
        }
        router.get("/tasks") { request, _ in
            let q = try HistoryParameters.query(request)
            return await page(csrf: csrf, broker: broker) {
                let (records, scanned) = try await state.history(q)
                return Pages.tasks(records, scanned: scanned, query: q, csrf: csrf, broker: broker)
            }
        }
        router.get("/schedules") { _, _ in
            return await page(csrf: csrf, broker: broker) {
                return Pages.schedules(try await state.schedules(), csrf: csrf, broker: broker)
            }
        }
        router.get("/tasks/go") { request, _ in
            let id = (request.uri.queryParameters.get("id") ?? "").trimmingCharacters(in: .whitespaces)
            return Response(status: .seeOther, headers: [.location: id.isEmpty ? "/tasks" : "/tasks/" + Pages.url(id)])
        }
        router.get("/tasks/:id") { _, context in
            let id = try context.parameters.require("id")
            return await page(csrf: csrf, broker: broker) {
                async let timeline = state.timeline(id)
                return Pages.task(try await state.task(id), timeline: try await timeline, csrf: csrf, broker: broker)
            }
        }

        // MARK: API: reading
        router.get("/api/csrf") { _, _ in json(.object([JSONMember("csrf", .string(csrf))])) }
        router.get("/api/overview") { _, _ in
            let s = try await guarded { try await state.overview() }
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: try s.json())))
        }
        router.get("/api/dead") { request, _ in
            let queue = request.uri.queryParameters.get("queue")
            let text = request.uri.queryParameters.get("q")
            let (entries, matched) = try await guarded { try await state.deadLetters(queue: queue, text: text) }
            return json(.object([
                JSONMember("matched", .int(matched)),
                JSONMember("entries", .array(entries.map { e in
                    .object([JSONMember("id", .string(e.id)), JSONMember("task_id", e.task.map { .string($0.id) } ?? .null),
                             JSONMember("task", e.task.map { .string($0.name) } ?? .null), JSONMember("queue", .string(e.queue)),
                             JSONMember("reason", .string(e.reason)), JSONMember("worker", .string(e.worker)), JSONMember("at", .string(e.at)),
                             JSONMember("message", .string(e.message))])
                })),
            ]))
        }
        router.get("/api/delayed") { _, _ in
            let (entries, count) = try await guarded { try await state.delayed() }
            return json(.object([
                JSONMember("count", .int(count)),
                JSONMember("entries", .array(entries.map { e in
                    .object([JSONMember("due", .string(CeleryDate.format(e.due))), JSONMember("queue", .string(e.queue)),
                             JSONMember("id", e.id.map(JSONValue.string) ?? .null), JSONMember("task", e.task.map(JSONValue.string) ?? .null),
                             JSONMember("retries", .int(e.retries))])
                })),
            ]))
        }
        router.get("/api/tasks") { request, _ in
            let q = try HistoryParameters.query(request)
            let (records, scanned) = try await guarded { try await state.history(q) }
            return json(.object([JSONMember("tasks", .array(records)), JSONMember("scanned", .int(scanned))]))
        }
        router.get("/api/throughput") { request, _ in
            let n = min(max(Int(request.uri.queryParameters.get("minutes") ?? "") ?? 180, 1), 2880)
            let minutes = try await guarded { try await state.minuteTotals(minutes: n) }
            return json(.object([JSONMember("minutes", .array(minutes.map { m in
                .object([JSONMember("minute", .string(CeleryDate.format(Date(timeIntervalSince1970: Double(m.minute * 60))))),
                         JSONMember("processed", .int(m.processed)), JSONMember("failed", .int(m.failed)), JSONMember("retried", .int(m.retried))])
            }))]))
        }
        router.get("/api/schedules") { _, _ in
            let rows = try await guarded { try await state.schedules() }
            return json(.array(rows.map(\.json)))
        }
        router.get("/api/tasks/:id") { _, context in
            let id = try context.parameters.require("id")
            let t = try await guarded { try await state.task(id) }
            let attempts = try await guarded { try await state.timeline(id) }
            return json(.object([
                JSONMember("timeline", .array(attempts)),
                JSONMember("id", .string(t.id)), JSONMember("state", t.meta?["status"] ?? (t.dead != nil ? .string("DEAD_LETTER") : .null)),
                JSONMember("result", t.meta ?? .null), JSONMember("revoked", .bool(t.revoked)),
                JSONMember("dead_letter", t.dead.map { d in
                    .object([JSONMember("id", .string(d.id)), JSONMember("reason", .string(d.reason)), JSONMember("at", .string(d.at)),
                             JSONMember("queue", .string(d.queue)), JSONMember("worker", .string(d.worker))])
                } ?? .null),
            ]))
        }

        // MARK: API: actions (POST, CSRF token checked by AccessMiddleware)
        router.post("/api/dead/retry") { request, _ in
            let f = try await Filter(request)
            let n = try await guarded { try await state.retryDead(ids: f.ids, queue: f.queue, text: f.text) }
            logger.info("dead letters retried", metadata: ["count": "\(n)"])
            return json(.object([JSONMember("retried", .int(n)), JSONMember("message", .string("\(n) put back on their queues"))]))
        }
        router.post("/api/dead/delete") { request, _ in
            let f = try await Filter(request)
            let n = try await guarded { try await state.deleteDead(ids: f.ids, queue: f.queue, text: f.text) }
            logger.info("dead letters deleted", metadata: ["count": "\(n)"])
            return json(.object([JSONMember("deleted", .int(n)), JSONMember("message", .string("\(n) deleted"))]))
        }
        router.post("/api/tasks/:id/revoke") { request, context in
            let id = try context.parameters.require("id")
            let body = try await Filter.body(request)
            let terminate = body["terminate"]?.boolValue ?? false
            try await guarded { try await state.revoke(id, terminate: terminate) }
            logger.info("revoked", metadata: ["task_id": "\(id)", "terminate": "\(terminate)"])
            return json(.object([JSONMember("revoked", .string(id)), JSONMember("terminate", .bool(terminate)),
                                 JSONMember("message", .string(terminate ? "revoked and terminated" : "revoked"))]))
        }
        router.post("/api/queues/:queue/purge") { _, context in
            let queue = try context.parameters.require("queue")
            let n = try await guarded { try await state.purge(queue) }
            logger.info("queue purged", metadata: ["queue": "\(queue)", "count": "\(n)"])
            return json(.object([JSONMember("purged", .int(n)), JSONMember("message", .string("\(n) messages deleted from \(queue)"))]))
        }
        for (action, paused) in [("pause", true), ("resume", false)] {
            router.post("/api/queues/:queue/\(action)") { _, context in
                let queue = try context.parameters.require("queue")
                let changed = try await guarded { try await state.setPaused(queue, paused) }
                logger.info(paused ? "queue paused" : "queue resumed", metadata: ["queue": "\(queue)"])
                let message = paused ? (changed ? "\(queue) paused: workers stop fetching from it within a second" : "\(queue) was paused already")
                                     : (changed ? "\(queue) resumed" : "\(queue) was not paused")
                return json(.object([JSONMember(paused ? "paused" : "resumed", .string(queue)), JSONMember("changed", .bool(changed)),
                                     JSONMember("message", .string(message))]))
            }
        }
        router.post("/api/workers/:node/shutdown") { _, context in
            let node = try context.parameters.require("node")
            guard try await guarded({ try await state.shutdown(node) }) else {
                return json(.object([JSONMember("error", .string("\(node) has no live heartbeat"))]), status: .notFound)
            }
            logger.info("worker shutdown asked", metadata: ["worker": "\(node)"])
            return json(.object([JSONMember("stopping", .string(node)), JSONMember("message", .string("\(node) is stopping (running tasks finish first)"))]))
        }

        // MARK: Metrics, health
        router.get("/metrics") { _, _ in
            let s = try await guarded { try await state.overview() }
            var tallies: [String: [String: TaskTally]] = [:]
            for w in s.workers where w.alive { tallies[w.node] = w.heartbeat?.tasks ?? [:] }
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                            body: .init(byteBuffer: ByteBuffer(string: Metrics.render(s, tallies: tallies))))
        }
        router.get("/healthz") { _, _ in
            do {
                _ = try await state.redis.call("PING").throwingError()
                return json(.object([JSONMember("ok", .bool(true))]))
            } catch {
                return json(.object([JSONMember("ok", .bool(false)), JSONMember("error", .string("\(error)"))]), status: .serviceUnavailable)
            }
        }
        return router
    }

    /// A page read from Redis, or the error page when it cannot be (503; 403 when Redis refuses
    /// the dashboard's ACL user, as `failure` says).
    static func page(csrf: String, broker: String, _ render: () async throws -> String) async -> Response {
        do { return html(try await render()) } catch {
            let (status, message) = failure(error) ?? (.serviceUnavailable, "\(error)")
            return html(Pages.error(message, csrf: csrf, broker: broker), status: status)
        }
    }

    static func html(_ page: String, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"],
                 body: .init(byteBuffer: ByteBuffer(string: page)))
    }

    static func json(_ v: JSONValue, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "application/json", .cacheControl: "no-store"], body: .init(byteBuffer: ByteBuffer(bytes: v.serializedBytes())))
    }

    /// Runs a Redis read or action; a Redis failure becomes an answer with its message (no
    /// password in it: URLs are printed redacted), as `failure` says.
    @discardableResult
    static func guarded<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch {
            guard let (status, message) = failure(error) else { throw error }
            throw HTTPError(status, message: message)
        }
    }

    /// The answer to a Redis failure (also inside a `ClientError`): 403 when Redis refused the
    /// dashboard's user (an ACL without the rule: a read-only dashboard's actions), naming
    /// what is missing; 503 for anything else (Redis down, unreachable). Nil: not from Redis.
    static func failure(_ error: any Error) -> (HTTPResponse.Status, String)? {
        let redis: RedisError
        if let e = error as? RedisError { redis = e } else if let e = error as? ClientError, let cause = e.cause { redis = cause } else { return nil }
        // A wrong password (authentication) is not this: nothing works then, 503 as when Redis is down.
        guard redis.code == .server && RedisError.isPermissionMessage(redis.message) else { return (.serviceUnavailable, "Redis: \(redis)") }
        return (.forbidden, "Redis refused the dashboard's user: \(redis.message) (its ACL lacks a rule this needs: see docs/security.md, \"The dashboard\")")
    }
}

/// The task list's query parameters: `id`, `task`, `state`, `worker`, `minutes`, `limit`.
enum HistoryParameters {
    static func query(_ request: Request) throws -> ClusterState.HistoryQuery {
        let p = request.uri.queryParameters
        func text(_ k: String) -> String? { p.get(k).flatMap { $0.isEmpty ? nil : String($0) } }
        var q = ClusterState.HistoryQuery(id: text("id"), task: text("task"), state: text("state"), worker: text("worker"))
        if let m = text("minutes") {
            guard let v = Double(m), v > 0 else { throw HTTPError(.badRequest, message: "minutes: a positive number") }
            q.within = v * 60
        }
        if let l = text("limit") {
            guard let v = Int(l), (1...1000).contains(v) else { throw HTTPError(.badRequest, message: "limit: 1 to 1000") }
            q.limit = v
        }
        return q
    }
}

/// The body of a dead-letter action: `{"ids": [...]}` for these entries, or `{"queue", "q"}`
/// for all that match (what the page's filter shows).
struct Filter {
    var ids: [String]?
    var queue: String?
    var text: String?

    init(_ request: Request) async throws {
        let v = try await Self.body(request)
        if let ids = v["ids"] {
            guard let list = ids.arrayValue?.compactMap(\.stringValue), !list.isEmpty else {
                throw HTTPError(.badRequest, message: "ids: a non-empty array of dead-letter or task ids")
            }
            self.ids = list
        }
        queue = v["queue"]?.stringValue.flatMap { $0.isEmpty ? nil : $0 }
        text = v["q"]?.stringValue.flatMap { $0.isEmpty ? nil : $0 }
    }

    static func body(_ request: Request) async throws -> JSONValue {
        let buffer = try await request.body.collect(upTo: 1 << 20)
        guard buffer.readableBytes > 0 else { return .object([]) }
        do {
            let v = try JSONValue(parsing: Array(buffer.readableBytesView))
            guard case .object = v else { throw HTTPError(.badRequest, message: "the body must be a JSON object") }
            return v
        } catch let e as HTTPError { throw e } catch {
            throw HTTPError(.badRequest, message: "the body is not JSON: \(error)")
        }
    }
}
