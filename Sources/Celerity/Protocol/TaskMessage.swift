import Foundation

/// A Celery protocol-v2 task message as it sits on a kombu Redis queue: an envelope
/// `{"body", "content-type", "content-encoding", "headers", "properties"}` whose body is
/// (base64 of) the JSON `[args, kwargs, embed]`.
public struct TaskMessage: Sendable {
    public var id: String
    public var task: String
    public var args: [JSONValue]
    public var kwargs: [JSONMember]
    /// The queue (routing key) the message was published to.
    public var queue: String
    public var rootID: String?
    public var parentID: String?
    public var groupID: String?
    /// Its place in its group (`group_index`), for a chord's results in order.
    public var groupIndex: Int?
    public var retries: Int
    public var eta: Date?
    public var expires: Date?
    /// Celery's `timelimit` header is `[hard, soft]` (seconds).
    public var hardTimeLimit: Double?
    public var softTimeLimit: Double?
    public var replyTo: String?
    public var correlationID: String
    public var priority: Int
    public var ignoreResult: Bool
    public var origin: String?
    /// Anything else the sender put in `headers`, kept for retries and monitoring.
    public var headers: [JSONMember]
    /// The `embed` element of the body (callbacks, errbacks, chain, chord).
    public var embed: JSONValue
    /// The Redis key of a unique task (`celerity_unique_key` header, `UniqueSpec.redisKey`):
    /// the worker deletes it, if it still holds this task's id, when the task is done.
    public var uniqueKey: String?
    /// When this worker fetched it (unix seconds), for the task history, if it did not run at
    /// once (nil: it ran where it was fetched, or was not fetched here). Not on the wire.
    public var receivedAt: Double?
    /// The sender's `argsrepr` and `kwargsrepr` headers (Python's `saferepr` of the arguments,
    /// or what the caller chose to show instead), cut at 1024 bytes: what a Python worker's
    /// `task-received` carries. The fast read takes them only when asked (task events on).
    /// `encode` writes them when set (a retry shows what the sender showed), else reprs of
    /// `args` and `kwargs`: set them to nil when changing the arguments of a decoded message.
    public var argsRepr: String?
    public var kwargsRepr: String?

    public init(id: String = FastUUID.string(), task: String, args: [JSONValue] = [], kwargs: [JSONMember] = [],
                queue: String, priority: Int = 0, eta: Date? = nil, expires: Date? = nil, replyTo: String? = nil,
                hardTimeLimit: Double? = nil, softTimeLimit: Double? = nil, ignoreResult: Bool = false, retries: Int = 0,
                rootID: String? = nil, parentID: String? = nil, origin: String? = nil) {
        self.id = id
        self.task = task
        self.args = args
        self.kwargs = kwargs
        self.queue = queue
        self.priority = priority
        self.eta = eta
        self.expires = expires
        self.replyTo = replyTo
        self.hardTimeLimit = hardTimeLimit
        self.softTimeLimit = softTimeLimit
        self.ignoreResult = ignoreResult
        self.retries = retries
        self.rootID = rootID ?? id
        self.parentID = parentID
        self.origin = origin
        self.correlationID = id
        self.headers = []
        self.embed = .object([JSONMember("callbacks", .null), JSONMember("errbacks", .null), JSONMember("chain", .null), JSONMember("chord", .null)])
    }

    // MARK: Decoding

    /// Decodes an envelope. Every failure says which field is wrong.
    /// The worker's fast path: reads only the fields needed to run a plain call (task, id,
    /// ids of the workflow, retries, limits, result routing, args, kwargs), checking the rest
    /// without building it. Unknown headers are not kept (`headers` is empty), so a message
    /// that must be re-sent (retry) is decoded again with `decode`. Returns nil whenever the
    /// message needs more than that (eta, expiry, compression, anything unusual) or is
    /// malformed: `decode` then says why.
    /// `reprs`: read the `argsrepr` and `kwargsrepr` headers too (for task events).
    static func decodeForRun(_ raw: [UInt8], reprs: Bool = false) -> TaskMessage? {
        var task: String?, id: String?, rootID: String?, parentID: String?, groupID: String?, groupIndex: Int?
        var argsRepr: String?, kwargsRepr: String?
        var retries = 0, ignoreResult = false, usual = true
        var hard: Double?, soft: Double?
        var replyTo: String?, correlationID: String?, priority = 0, base64 = false, routingKey = ""
        var body: String?, uniqueKey: String?
        let ok: Bool? = raw.withUnsafeBufferPointer { buf in
            do throws(JSONError) {
                try JSONReader.readObject(buf) { (key, r) throws(JSONError) in
                    if key.is("body") {
                        body = try r.value().stringValue
                    } else if key.is("content-type") {
                        if try r.value().stringValue != "application/json" { usual = false }
                    } else if key.is("headers") {
                        try r.object { (k, r) throws(JSONError) in
                            if k.is("task") { task = try r.value().stringValue }
                            else if k.is("id") { id = try r.value().stringValue }
                            else if k.is("root_id") { rootID = try r.value().stringValue }
                            else if k.is("parent_id") { parentID = try r.value().stringValue }
                            else if k.is("group") { groupID = try r.value().stringValue }
                            else if k.is("group_index") { groupIndex = try r.value().intValue }
                            else if k.is("retries") { retries = try r.value().intValue ?? 0 }
                            else if k.is("ignore_result") { ignoreResult = try r.value().boolValue ?? false }
                            else if k.is("eta") || k.is("expires") || k.is("compression") { if !r.isNull() { usual = false } }
                            else if k.is("timelimit") {
                                if let tl = try r.value().arrayValue, tl.count == 2 { hard = tl[0].doubleValue; soft = tl[1].doubleValue }
                            }
                            else if k.is("celerity_unique_key") { uniqueKey = try r.value().stringValue }
                            // Handed back after a worker died or stalled: the full decode keeps
                            // the header, for the stored-result check in `Worker.start`.
                            else if k.is("celerity_redeliveries") { usual = false }
                            else if reprs && k.is("argsrepr") { argsRepr = try r.value().stringValue.map(PythonRepr.clip) }
                            else if reprs && k.is("kwargsrepr") { kwargsRepr = try r.value().stringValue.map(PythonRepr.clip) }
                        }
                    } else if key.is("properties") {
                        try r.object { (k, r) throws(JSONError) in
                            if k.is("reply_to") { replyTo = try r.value().stringValue }
                            else if k.is("correlation_id") { correlationID = try r.value().stringValue }
                            else if k.is("priority") { priority = try r.value().intValue ?? 0 }
                            else if k.is("body_encoding") { base64 = try r.value().stringValue == "base64" }
                            else if k.is("delivery_info") {
                                try r.object { (k, r) throws(JSONError) in
                                    if k.is("routing_key") { routingKey = try r.value().stringValue ?? "" }
                                }
                            }
                        }
                    }
                }
                return true
            } catch {
                return false
            }
        }
        guard ok == true, usual, let task, !task.isEmpty, let id, !id.isEmpty, let body else { return nil }
        let bodyBytes: [UInt8]
        if base64 {
            guard let d = Data(base64Encoded: body, options: .ignoreUnknownCharacters) else { return nil }
            bodyBytes = Array(d)
        } else {
            bodyBytes = Array(body.utf8)
        }
        guard let parts = (try? JSONValue(parsing: bodyBytes))?.arrayValue, parts.count == 3 || parts.count == 2,
              let args = parts[0].arrayValue else { return nil }
        let kwargs: [JSONMember]
        if parts[1].isNull { kwargs = [] } else {
            guard let k = parts[1].objectValue else { return nil }
            kwargs = k
        }
        var m = TaskMessage(id: id, task: task, args: args, kwargs: kwargs, queue: routingKey)
        m.embed = parts.count == 3 ? parts[2] : .null
        m.rootID = rootID
        m.parentID = parentID
        m.groupID = groupID
        m.groupIndex = groupIndex
        m.retries = retries
        m.ignoreResult = ignoreResult
        m.hardTimeLimit = hard
        m.softTimeLimit = soft
        m.replyTo = replyTo.flatMap { $0.isEmpty ? nil : $0 }
        m.correlationID = correlationID ?? id
        m.priority = priority
        m.uniqueKey = uniqueKey
        m.argsRepr = argsRepr
        m.kwargsRepr = kwargsRepr
        return m
    }

    /// Headers decoded into fields (the rest are kept in `headers`). `compression` is used up
    /// by decoding: a message sent again (a retry) has a plain body.
    static let knownHeaders: Set<String> = ["task", "id", "root_id", "parent_id", "group", "group_index", "retries", "eta", "expires", "timelimit", "origin", "ignore_result",
                                            "compression", "celerity_unique_key"]

    public static func decode(_ raw: [UInt8]) throws(ProtocolError) -> TaskMessage {
        let envelope: JSONValue
        do { envelope = try JSONValue(parsing: raw) } catch {
            throw ProtocolError("message is not JSON (\(error.description)); starts with: \(preview(raw))")
        }
        guard envelope.objectValue != nil else { throw ProtocolError("message is not a JSON object; starts with: \(preview(raw))") }
        guard let headers = envelope["headers"]?.objectValue else {
            throw ProtocolError("message has no 'headers' object (Celery protocol v2 expected)")
        }
        let h = JSONValue.object(headers)
        guard let task = h["task"]?.stringValue, !task.isEmpty else { throw ProtocolError("message headers have no 'task' name") }
        guard let id = h["id"]?.stringValue, !id.isEmpty else { throw ProtocolError("message headers have no task 'id' (task \(task))") }
        let props = envelope["properties"] ?? .object([])
        // The call as its envelope says, its arguments still to read from the body.
        var m = TaskMessage(id: id, task: task, queue: props["delivery_info"]?["routing_key"]?.stringValue ?? "")
        m.rootID = h["root_id"]?.stringValue
        m.parentID = h["parent_id"]?.stringValue
        m.groupID = h["group"]?.stringValue
        m.groupIndex = h["group_index"]?.intValue
        m.retries = h["retries"]?.intValue ?? 0
        m.origin = h["origin"]?.stringValue
        m.ignoreResult = h["ignore_result"]?.boolValue ?? false
        m.replyTo = props["reply_to"]?.stringValue.flatMap { $0.isEmpty ? nil : $0 }
        m.correlationID = props["correlation_id"]?.stringValue ?? id
        m.priority = props["priority"]?.intValue ?? 0
        if let ct = envelope["content-type"]?.stringValue, ct != "application/json" {
            throw ProtocolError("task \(id): content type '\(ct)' is not supported (only application/json)",
                                refusing: m, with: .contentDisallowed(ct))
        }
        guard let bodyValue = envelope["body"] else { throw ProtocolError("task \(id): message has no 'body'") }
        var bodyBytes: [UInt8]
        switch bodyValue {
        case let .string(s):
            if props["body_encoding"]?.stringValue == "base64" {
                guard let d = Data(base64Encoded: s, options: .ignoreUnknownCharacters) else {
                    throw ProtocolError("task \(id): body is not valid base64")
                }
                bodyBytes = Array(d)
            } else {
                bodyBytes = Array(s.utf8)
            }
        case .array:
            bodyBytes = bodyValue.serializedBytes()
        default:
            throw ProtocolError("task \(id): body must be a string")
        }
        if let c = h["compression"]?.stringValue {
            switch BodyCompression.decompress(bodyBytes, header: c) {
            case let .success(plain): bodyBytes = plain
            case let .failure(e):
                throw ProtocolError("task \(id): compressed body ('\(c)') not decoded: \(e.message)", refusing: m, with: .decodeError(e.message))
            }
        }
        let body: JSONValue
        do { body = try JSONValue(parsing: bodyBytes) } catch {
            throw ProtocolError("task \(id): body is not JSON (\(error.description))")
        }
        guard let parts = body.arrayValue, parts.count == 3 || parts.count == 2 else {
            throw ProtocolError("task \(id): body must be [args, kwargs, embed] (Celery protocol v2)")
        }
        guard let args = parts[0].arrayValue else { throw ProtocolError("task \(id): args (body[0]) must be an array") }
        let kwargs: [JSONMember]
        if parts[1].isNull { kwargs = [] } else {
            guard let k = parts[1].objectValue else { throw ProtocolError("task \(id): kwargs (body[1]) must be an object") }
            kwargs = k
        }
        m.args = args
        m.kwargs = kwargs
        m.embed = parts.count == 3 ? parts[2] : .null
        if let eta = h["eta"], !eta.isNull {
            guard let s = eta.stringValue, let d = CeleryDate.parse(s) else { throw ProtocolError("task \(id): eta \(eta) is not an ISO 8601 date") }
            m.eta = d
        }
        if let exp = h["expires"], !exp.isNull {
            if let s = exp.stringValue, let d = CeleryDate.parse(s) { m.expires = d }
            else if let secs = exp.doubleValue { m.expires = Date(timeIntervalSince1970: secs) }
            else { throw ProtocolError("task \(id): expires \(exp) is not an ISO 8601 date") }
        }
        if let tl = h["timelimit"]?.arrayValue, tl.count == 2 {
            m.hardTimeLimit = tl[0].doubleValue
            m.softTimeLimit = tl[1].doubleValue
        }
        m.headers = headers.filter { !knownHeaders.contains($0.key) }
        m.uniqueKey = h["celerity_unique_key"]?.stringValue
        m.argsRepr = h["argsrepr"]?.stringValue.map(PythonRepr.clip)
        m.kwargsRepr = h["kwargsrepr"]?.stringValue.map(PythonRepr.clip)
        return m
    }

    /// The unique key and task id of a raw message, if it has the `celerity_unique_key`
    /// header (rare paths only: it decodes the whole message when the header is there).
    static func uniqueRelease(of raw: [UInt8]) -> (key: String, id: String)? {
        let needle = Array("\"celerity_unique_key\"".utf8)
        guard raw.count >= needle.count else { return nil }
        var found = false
        var i = 0
        while i <= raw.count - needle.count {
            if raw[i] == needle[0] && raw[i..<(i + needle.count)].elementsEqual(needle) { found = true; break }
            i += 1
        }
        guard found, let m = try? TaskMessage.decode(raw), let key = m.uniqueKey else { return nil }
        return (key, m.id)
    }

    // MARK: Encoding

    /// The envelope as JSON bytes, ready to LPUSH. `origin` defaults to this process.
    public func encode() -> [UInt8] {
        // Written straight into bytes, field by field, rather than built as a JSONValue tree
        // and serialized: sending is the client's hot path (profiled: the tree took a third
        // of a bulk sender's CPU). Same fields, same order, same JSON as before.
        var bodyJSON: [UInt8] = []
        bodyJSON.reserveCapacity(64)
        bodyJSON.append(ASCII.openBracket)
        JSONValue.array(args).write(into: &bodyJSON)
        bodyJSON.append(ASCII.comma)
        JSONValue.object(kwargs).write(into: &bodyJSON)
        bodyJSON.append(ASCII.comma)
        embed.write(into: &bodyJSON)
        bodyJSON.append(ASCII.closeBracket)
        let body = Data(bodyJSON).base64EncodedString()

        var out: [UInt8] = []
        out.reserveCapacity(body.utf8.count + 900)
        func raw(_ text: StaticString) { out.append(contentsOf: UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount)) }
        func str(_ text: String) { JSONValue.writeString(text, into: &out) }
        func optStr(_ text: String?) { if let text { str(text) } else { raw("null") } }
        func int(_ v: Int) { out.append(contentsOf: String(v).utf8) }
        func date(_ d: Date?) { if let d { str(CeleryDate.format(d)) } else { raw("null") } }
        func num(_ d: Double?) {
            guard let d else { raw("null"); return }
            (d == d.rounded() && abs(d) < 1e15 ? JSONValue.int(Int(d)) : JSONValue.double(d)).write(into: &out)
        }
        raw(#"{"body":"#); str(body)
        raw(#","content-encoding":"utf-8","content-type":"application/json","headers":{"lang":"py","task":"#); str(task)
        raw(#","id":"#); str(id)
        raw(#","shadow":null,"eta":"#); date(eta)
        raw(#","expires":"#); date(expires)
        raw(#","group":"#); optStr(groupID)
        raw(#","group_index":"#); if let groupIndex { int(groupIndex) } else { raw("null") }
        raw(#","retries":"#); int(retries)
        raw(#","timelimit":["#); num(hardTimeLimit); out.append(ASCII.comma); num(softTimeLimit)
        raw(#"],"root_id":"#); str(rootID ?? id)
        raw(#","parent_id":"#); optStr(parentID)
        raw(#","argsrepr":"#); str(argsRepr ?? TaskMessage.repr(.array(args)))
        raw(#","kwargsrepr":"#); str(kwargsRepr ?? TaskMessage.repr(.object(kwargs)))
        raw(#","origin":"#); str(origin ?? TaskMessage.defaultOrigin)
        raw(#","ignore_result":"#); raw(ignoreResult ? "true" : "false")
        raw(#","replaced_task_nesting":0,"stamped_headers":null,"stamps":{}"#)
        if let uniqueKey { raw(#","celerity_unique_key":"#); str(uniqueKey) }
        for h in headers where !TaskMessage.writtenHeaders.contains(h.key) {
            out.append(ASCII.comma); str(h.key); out.append(ASCII.colon); h.value.write(into: &out)
        }
        raw(#"},"properties":{"correlation_id":"#); str(correlationID)
        raw(#","reply_to":"#); str(replyTo ?? "")
        raw(#","delivery_mode":2,"delivery_info":{"exchange":"","routing_key":"#); str(queue)
        raw(#"},"priority":"#); int(min(max(priority, 0), 9))
        raw(#","body_encoding":"base64","delivery_tag":"#); str(FastUUID.string())
        raw("}}")
        return out
    }

    /// `argsrepr` / `kwargsrepr` as a Python client writes them (`saferepr`): the arguments as
    /// a tuple (`(2, 'a')`, `(1,)`), keyword arguments as a dict, at most 1024 characters.
    /// Monitors show them (a worker's `task-received` carries them as they are).
    static func repr(_ v: JSONValue) -> String {
        guard case let .array(items) = v else { return PythonRepr.of(v) }
        return PythonRepr.tuple(items)
    }

    /// `gen<pid>@<host>`, as Python clients write `origin`.
    /// The headers `encode` writes itself (others in `headers` are added after them).
    static let writtenHeaders: Set<String> = ["lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries", "timelimit",
                                              "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin", "ignore_result",
                                              "replaced_task_nesting", "stamped_headers", "stamps", "celerity_unique_key"]

    public static let defaultOrigin: String = "gen\(getpid())@\(ProcessInfo.processInfo.hostName)"

    /// The first bytes of a raw message, printable, for error messages and logs.
    public static func preview(_ raw: [UInt8], limit: Int = 120) -> String {
        let s = String(decoding: raw.prefix(limit), as: UTF8.self)
        let cleaned = s.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7f ? "\\x" + String(format: "%02x", $0.value) : String($0) }.joined()
        return raw.count > limit ? cleaned + "…(\(raw.count) bytes)" : cleaned
    }

    /// How many times a raw envelope was handed back after worker crashes
    /// (Celerity's `celerity_redeliveries` header; absent = 0).
    public static func redeliveries(of raw: [UInt8]) -> Int {
        (try? JSONValue(parsing: raw))?["headers"]?["celerity_redeliveries"]?.intValue ?? 0
    }

    /// The envelope with `celerity_redeliveries` set to `count` and marked redelivered the way
    /// kombu marks restored messages (`headers.redelivered`, `delivery_info.redelivered`).
    /// Everything else is kept byte-exact in value (numbers stay lossless). Nil if unreadable.
    public static func markRedelivered(_ raw: [UInt8], count: Int) -> [UInt8]? {
        guard case var .object(env) = try? JSONValue(parsing: raw) else { return nil }
        func set(_ members: inout [JSONMember], _ key: String, _ value: JSONValue) {
            if let i = members.firstIndex(where: { $0.key == key }) { members[i].value = value } else { members.append(JSONMember(key, value)) }
        }
        guard let hi = env.firstIndex(where: { $0.key == "headers" }), case var .object(headers) = env[hi].value else { return nil }
        set(&headers, "celerity_redeliveries", .int(count))
        set(&headers, "redelivered", true)
        env[hi].value = .object(headers)
        if let pi = env.firstIndex(where: { $0.key == "properties" }), case var .object(props) = env[pi].value,
           let di = props.firstIndex(where: { $0.key == "delivery_info" }), case var .object(info) = props[di].value {
            set(&info, "redelivered", true)
            props[di].value = .object(info)
            env[pi].value = .object(props)
        }
        return JSONValue.object(env).serializedBytes()
    }
}
