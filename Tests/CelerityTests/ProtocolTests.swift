import Testing
import Foundation
@testable import Celerity

@Suite struct ProtocolTests {
    /// 2026-11-25T09:15:04+00:00.
    private static let captureSecond: TimeInterval = 1_795_598_104

    private func decodeError(_ raw: [UInt8]) -> ProtocolError? {
        do throws(ProtocolError) {
            _ = try TaskMessage.decode(raw)
            return nil
        } catch {
            return error
        }
    }

    private func decodeError(_ text: String) -> ProtocolError? { decodeError(Array(text.utf8)) }

    /// A task envelope whose body is `body` (base64-encoded unless `base64` is false).
    private func envelope(task: String? = "t.add", id: String? = "id-1", contentType: String? = "application/json",
                          body: String, base64: Bool = true) -> [UInt8] {
        var headers: [JSONMember] = [JSONMember("lang", "py")]
        if let task { headers.append(JSONMember("task", .string(task))) }
        if let id { headers.append(JSONMember("id", .string(id))) }
        var members: [JSONMember] = [JSONMember("body", .string(base64 ? Data(body.utf8).base64EncodedString() : body))]
        if let contentType { members.append(JSONMember("content-type", .string(contentType))) }
        members.append(JSONMember("content-encoding", "utf-8"))
        members.append(JSONMember("headers", .object(headers)))
        var properties: [JSONMember] = [
            JSONMember("delivery_info", ["exchange": "", "routing_key": "q"]),
            JSONMember("delivery_tag", "tag-1"),
        ]
        if base64 { properties.append(JSONMember("body_encoding", "base64")) }
        members.append(JSONMember("properties", .object(properties)))
        return JSONValue.object(members).serializedBytes()
    }

    private func expectClose(_ date: Date?, _ expected: TimeInterval, sourceLocation: SourceLocation = #_sourceLocation) {
        guard let date else {
            Issue.record("expected a date near \(expected), got nil", sourceLocation: sourceLocation)
            return
        }
        #expect(abs(date.timeIntervalSince1970 - expected) < 1e-6, "\(date.timeIntervalSince1970) vs \(expected)", sourceLocation: sourceLocation)
    }

    // MARK: TaskMessage

    @Test func taskMessageRoundTripsEveryField() throws {
        let digits = String(repeating: "1234567890", count: 10)
        #expect(digits.count == 100)
        let eta = Date(timeIntervalSince1970: Self.captureSecond + 0.5)
        let expires = Date(timeIntervalSince1970: Self.captureSecond + 3600)
        let args: [JSONValue] = [.number(digits), .double(5.0), "text", nil, [1, 2]]
        let kwargs = [JSONMember("scale", .number("-" + digits)), JSONMember("label", "x"), JSONMember("ratio", 0.25)]
        let message = TaskMessage(id: "6f0c7c2e-8d7c-4a55-9f52-2a1e0c3d9b10", task: "add_module.tasks.add", args: args, kwargs: kwargs,
                                  queue: "add", priority: 7, eta: eta, expires: expires, replyTo: "b5b8fcc8-2cb3-36c2-b172-44c2408c7b6f",
                                  hardTimeLimit: 60, softTimeLimit: 30, ignoreResult: true)
        let raw = message.encode()
        let decoded = try TaskMessage.decode(raw)

        #expect(decoded.id == "6f0c7c2e-8d7c-4a55-9f52-2a1e0c3d9b10")
        #expect(decoded.task == "add_module.tasks.add")
        #expect(decoded.args == args)
        #expect(decoded.args[0] == .number(digits))
        #expect(decoded.args[1] == .number("5.0"))
        #expect(!decoded.args[1].isIntegerLiteral)
        #expect(decoded.kwargs == kwargs)
        #expect(decoded.queue == "add")
        #expect(decoded.priority == 7)
        expectClose(decoded.eta, Self.captureSecond + 0.5)
        expectClose(decoded.expires, Self.captureSecond + 3600)
        #expect(decoded.replyTo == "b5b8fcc8-2cb3-36c2-b172-44c2408c7b6f")
        #expect(decoded.correlationID == decoded.id)
        #expect(decoded.rootID == decoded.id)
        #expect(decoded.parentID == nil)
        #expect(decoded.retries == 0)
        #expect(decoded.hardTimeLimit == 60)
        #expect(decoded.softTimeLimit == 30)
        #expect(decoded.ignoreResult == true)
        #expect(decoded.embed["callbacks"]?.isNull == true)
        #expect(decoded.embed["chord"]?.isNull == true)

        // The wire form: Celery's envelope with [hard, soft] and a base64 body keeping number literals.
        let envelope = try JSONValue(parsing: raw)
        #expect(envelope["content-type"] == "application/json")
        #expect(envelope["properties"]?["body_encoding"] == "base64")
        #expect(envelope["properties"]?["priority"] == 7)
        #expect(envelope["properties"]?["delivery_info"]?["routing_key"] == "add")
        #expect(envelope["properties"]?["delivery_tag"]?.stringValue?.isEmpty == false)
        let headers = try #require(envelope["headers"])
        #expect(headers["timelimit"] == .array([.number("60"), .number("30")]))
        #expect(headers["eta"] == .string("2026-11-25T09:15:04.500000+00:00"))
        #expect(headers["expires"] == .string("2026-11-25T10:15:04+00:00"))
        #expect(headers["ignore_result"] == true)
        #expect(headers["lang"] == "py")
        let body = try #require(envelope["body"]?.stringValue)
        let bodyText = String(decoding: try #require(Data(base64Encoded: body)), as: UTF8.self)
        #expect(bodyText.contains(digits + ",5.0,"))
        let parts = try #require(try JSONValue(parsing: bodyText).arrayValue)
        #expect(parts.count == 3)
        #expect(parts[0] == .array(args))
    }

    @Test func encodeClampsPriorityAndKeepsTimeLimitOrder() throws {
        var message = TaskMessage(task: "t", queue: "q", priority: 12, hardTimeLimit: 10.5, softTimeLimit: nil)
        message.parentID = "parent-1"
        let raw = message.encode()
        let headers = try #require(try JSONValue(parsing: raw)["headers"])
        #expect(headers["timelimit"] == .array([.number("10.5"), .null]))
        #expect(headers["parent_id"] == "parent-1")
        let decoded = try TaskMessage.decode(raw)
        #expect(decoded.priority == 9)
        #expect(decoded.hardTimeLimit == 10.5)
        #expect(decoded.softTimeLimit == nil)
        #expect(decoded.parentID == "parent-1")
        #expect(decoded.eta == nil)
        #expect(decoded.expires == nil)
        #expect(decoded.replyTo == nil)   // encoded as "", read back as none
        #expect(decoded.ignoreResult == false)
    }

    @Test func decodesAMessageCapturedFromPythonCelery() throws {
        let bodyText = #"[[2, 3], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#
        let body = "W1syLCAzXSwge30sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWluIjogbnVsbCwgImNob3JkIjogbnVsbH1d"
        #expect(Data(bodyText.utf8).base64EncodedString() == body)
        let captured = #"""
            {"body": "W1syLCAzXSwge30sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWluIjogbnVsbCwgImNob3JkIjogbnVsbH1d",
             "content-encoding": "utf-8",
             "content-type": "application/json",
             "headers": {"lang": "py", "task": "capapp.add", "id": "9aec24ea-fb53-4b30-bbe5-8da09dee65f8",
               "shadow": null, "eta": null, "expires": null, "group": null, "group_index": null,
               "retries": 0, "timelimit": [null, null],
               "root_id": "9aec24ea-fb53-4b30-bbe5-8da09dee65f8", "parent_id": null,
               "argsrepr": "(2, 3)", "kwargsrepr": "{}", "origin": "gen6688@vm",
               "ignore_result": false, "replaced_task_nesting": 0,
               "stamped_headers": null, "stamps": {}},
             "properties": {"correlation_id": "9aec24ea-fb53-4b30-bbe5-8da09dee65f8",
               "reply_to": "88f908ae-c0e1-33db-aabb-9acd128a99b0",
               "delivery_mode": 2,
               "delivery_info": {"exchange": "", "routing_key": "add"},
               "priority": 0, "body_encoding": "base64",
               "delivery_tag": "432ece15-2459-4040-82ce-0ce92e5348e3"}}
            """#
        let m = try TaskMessage.decode(Array(captured.utf8))
        #expect(m.id == "9aec24ea-fb53-4b30-bbe5-8da09dee65f8")
        #expect(m.task == "capapp.add")
        #expect(m.args == [.number("2"), .number("3")])
        #expect(m.kwargs.isEmpty)
        #expect(m.queue == "add")
        #expect(m.priority == 0)
        #expect(m.replyTo == "88f908ae-c0e1-33db-aabb-9acd128a99b0")
        #expect(m.correlationID == "9aec24ea-fb53-4b30-bbe5-8da09dee65f8")
        #expect(m.rootID == "9aec24ea-fb53-4b30-bbe5-8da09dee65f8")
        #expect(m.parentID == nil)
        #expect(m.groupID == nil)
        #expect(m.retries == 0)
        #expect(m.eta == nil)
        #expect(m.expires == nil)
        #expect(m.hardTimeLimit == nil)
        #expect(m.softTimeLimit == nil)
        #expect(m.ignoreResult == false)
        #expect(m.origin == "gen6688@vm")
        #expect(m.embed == ["callbacks": nil, "errbacks": nil, "chain": nil, "chord": nil])
        // Headers Celerity does not model are kept (for retries and monitoring).
        let keptKeys = Set(m.headers.map(\.key))
        #expect(keptKeys.isSuperset(of: ["lang", "shadow", "argsrepr", "kwargsrepr", "stamps"]))
        #expect(!keptKeys.contains("task"))
        #expect(!keptKeys.contains("id"))
    }

    @Test func decodesCeleryHeaderValues() throws {
        let text = #"""
            {"body": "[[1], {\"k\": 2}, {}]", "content-type": "application/json",
             "headers": {"task": "t", "id": "x1", "eta": "2026-11-25T04:15:04.488298-05:00", "expires": "2026-11-25T10:15:04Z",
                         "timelimit": [10, 5], "retries": 3, "parent_id": "p", "root_id": "r", "group": "g", "ignore_result": true},
             "properties": {"delivery_info": {"exchange": "", "routing_key": "q"}, "priority": 3}}
            """#
        let m = try TaskMessage.decode(Array(text.utf8))
        #expect(m.args == [1])
        #expect(m.kwargs == [JSONMember("k", 2)])
        expectClose(m.eta, Self.captureSecond + 0.488298)
        expectClose(m.expires, Self.captureSecond + 3600)
        #expect(m.hardTimeLimit == 10)
        #expect(m.softTimeLimit == 5)
        #expect(m.retries == 3)
        #expect(m.parentID == "p")
        #expect(m.rootID == "r")
        #expect(m.groupID == "g")
        #expect(m.ignoreResult)
        #expect(m.priority == 3)
        #expect(m.replyTo == nil)
    }

    @Test func bodyAsRawJSONTextWithoutBodyEncoding() throws {
        let raw = envelope(body: #"[[2, 3], {"z": 1}, null]"#, base64: false)
        let m = try TaskMessage.decode(raw)
        #expect(m.id == "id-1")
        #expect(m.task == "t.add")
        #expect(m.args == [2, 3])
        #expect(m.kwargs == [JSONMember("z", 1)])
        #expect(m.embed.isNull)
        #expect(m.queue == "q")
    }

    // MARK: malformed messages

    @Test func notJSON() throws {
        let error = try #require(decodeError("this is not json"))
        #expect(error.message.contains("not JSON"))
        #expect(error.message.contains("this is not json"))   // shows what it got
        #expect(error.description == error.message)
        let array = try #require(decodeError("[1, 2]"))
        #expect(array.message.contains("not a JSON object"))
    }

    @Test func missingHeaders() throws {
        let error = try #require(decodeError(#"{"body": "W10=", "content-type": "application/json", "properties": {"body_encoding": "base64"}}"#))
        #expect(error.message.contains("'headers'"))
    }

    @Test func missingTaskName() throws {
        let error = try #require(decodeError(envelope(task: nil, body: "[[], {}, {}]")))
        #expect(error.message.contains("'task'"))
    }

    @Test func missingTaskID() throws {
        let error = try #require(decodeError(envelope(id: nil, body: "[[], {}, {}]")))
        #expect(error.message.contains("'id'"))
        #expect(error.message.contains("t.add"))
        let empty = try #require(decodeError(envelope(id: "", body: "[[], {}, {}]")))
        #expect(empty.message.contains("'id'"))
    }

    @Test func pickleContentTypeIsRejected() throws {
        let error = try #require(decodeError(envelope(contentType: "application/x-python-serialize", body: "[[], {}, {}]")))
        #expect(error.message.contains("application/x-python-serialize"))
        #expect(error.message.contains("not supported"))
        #expect(error.message.contains("id-1"))
    }

    @Test func bodyThatIsNotBase64OfJSON() throws {
        // Valid base64 of text that is not JSON.
        let notJSON = try #require(decodeError(envelope(body: "hello world")))
        #expect(notJSON.message.contains("body"))
        #expect(notJSON.message.contains("not JSON"))
        #expect(notJSON.message.contains("id-1"))
        // Not base64 at all.
        var members = try #require(try JSONValue(parsing: envelope(body: "[[], {}, {}]")).objectValue)
        members[0] = JSONMember("body", "*** definitely not base64 ***")
        let notBase64 = try #require(decodeError(JSONValue.object(members).serializedBytes()))
        #expect(notBase64.message.contains("body"))
        #expect(notBase64.message.contains("base64") || notBase64.message.contains("not JSON"))
    }

    @Test func bodyWithWrongShape() throws {
        for body in [#"{"args": [1], "kwargs": {}}"#, "[1]", "[[1], {}, {}, {}]", "42"] {
            let error = try #require(decodeError(envelope(body: body)), "\(body)")
            #expect(error.message.contains("[args, kwargs, embed]"), "\(body): \(error.message)")
        }
    }

    @Test func argsThatAreNotAnArray() throws {
        let error = try #require(decodeError(envelope(body: #"[5, {}, {}]"#)))
        #expect(error.message.contains("args"))
        #expect(error.message.contains("array"))
        let kwargs = try #require(decodeError(envelope(body: #"[[], [1], {}]"#)))
        #expect(kwargs.message.contains("kwargs"))
    }

    @Test func badEtaIsRejected() throws {
        var members = try #require(try JSONValue(parsing: envelope(body: "[[], {}, {}]")).objectValue)
        let i = try #require(members.firstIndex { $0.key == "headers" })
        members[i] = JSONMember("headers", ["task": "t", "id": "x", "eta": "tomorrow"])
        let error = try #require(decodeError(JSONValue.object(members).serializedBytes()))
        #expect(error.message.contains("eta"))
    }

    // MARK: Keys

    @Test func priorityBuckets() {
        let sep = "\u{06}\u{16}"
        #expect(Keys.separator == sep)
        #expect(Keys.queue("q") == "q")
        #expect(Keys.queue("q", priority: 0) == "q")
        #expect(Keys.queue("q", priority: 2) == "q")
        #expect(Keys.queue("q", priority: 3) == "q\u{06}\u{16}3")
        #expect(Keys.queue("q", priority: 5) == "q\u{06}\u{16}3")
        #expect(Keys.queue("q", priority: 6) == "q\u{06}\u{16}6")
        #expect(Keys.queue("q", priority: 8) == "q\u{06}\u{16}6")
        #expect(Keys.queue("q", priority: 9) == "q\u{06}\u{16}9")
        #expect(Keys.queue("q", priority: 12) == "q\u{06}\u{16}9")
        #expect(Keys.queue("q", priority: -1) == "q")
        #expect(Array(Keys.queue("add", priority: 3).utf8) == Array("add".utf8) + [0x06, 0x16, 0x33])
        #expect(Keys.priorityQueues("q") == ["q", "q" + sep + "3", "q" + sep + "6", "q" + sep + "9"])
    }

    @Test func queueNameFromListKey() {
        #expect(Keys.queueName(fromListKey: "q") == "q")
        #expect(Keys.queueName(fromListKey: "q\u{06}\u{16}3") == "q")
        #expect(Keys.queueName(fromListKey: "mat_mul\u{06}\u{16}9") == "mat_mul")
        for p in 0...9 {
            #expect(Keys.queueName(fromListKey: Keys.queue("plugins", priority: p)) == "plugins")
        }
        #expect(Keys.resultMeta("abc") == "celery-task-meta-abc")
        #expect(Keys.bindingMember("add") == "add\u{06}\u{16}\u{06}\u{16}add")
    }

    // MARK: CeleryDate

    @Test func formatOmitsZeroMicroseconds() {
        #expect(CeleryDate.format(Date(timeIntervalSince1970: 0)) == "1970-01-01T00:00:00+00:00")
        #expect(CeleryDate.format(Date(timeIntervalSince1970: Self.captureSecond)) == "2026-11-25T09:15:04+00:00")
    }

    @Test func formatWritesSixDigitMicroseconds() {
        #expect(CeleryDate.format(Date(timeIntervalSince1970: Self.captureSecond + 0.488298)) == "2026-11-25T09:15:04.488298+00:00")
        #expect(CeleryDate.format(Date(timeIntervalSince1970: Self.captureSecond + 0.5)) == "2026-11-25T09:15:04.500000+00:00")
        #expect(CeleryDate.format(Date(timeIntervalSince1970: Self.captureSecond + 0.000001)) == "2026-11-25T09:15:04.000001+00:00")
        // Rounds up into the next second instead of writing 1000000.
        #expect(CeleryDate.format(Date(timeIntervalSince1970: Self.captureSecond + 0.9999996)) == "2026-11-25T09:15:05+00:00")
    }

    @Test func parseOffsetsAndSeparators() {
        let expected = Self.captureSecond + 0.488298
        expectClose(CeleryDate.parse("2026-11-25T09:15:04.488298+00:00"), expected)
        expectClose(CeleryDate.parse("2026-11-25T09:15:04.488298Z"), expected)
        // 04:15 at UTC−5 is 09:15 UTC.
        expectClose(CeleryDate.parse("2026-11-25T04:15:04.488298-05:00"), expected)
        expectClose(CeleryDate.parse("2026-11-25T14:45:04.488298+05:30"), expected)
        expectClose(CeleryDate.parse("2026-11-25 09:15:04.488298+00:00"), expected)
        // Naive: read as UTC.
        expectClose(CeleryDate.parse("2026-11-25T09:15:04"), Self.captureSecond)
        expectClose(CeleryDate.parse("2026-11-25T09:15:04.5"), Self.captureSecond + 0.5)
    }

    @Test func parseRejectsGarbage() {
        for text in ["", "garbage", "2026-11-25", "2026-11-25T09:15", "2026-13-25T09:15:04+00:00", "2026-11-25T25:15:04",
                     "2026-11-25X09:15:04", "2026-11-25T09:15:04.", "2026-11-25T09:15:04+0", "2026-11-25T09:15:04+00:00 extra",
                     "2026/11/25T09:15:04"] {
            #expect(CeleryDate.parse(text) == nil, "\(text)")
        }
    }

    @Test func formatThenParseRoundTrips() {
        for t in [0, Self.captureSecond, Self.captureSecond + 0.25, 951_782_400.125 /* 2000-02-29 */] {
            let text = CeleryDate.format(Date(timeIntervalSince1970: t))
            expectClose(CeleryDate.parse(text), t)
        }
    }

    // MARK: ResultMeta

    @Test func successMetaRoundTrips() throws {
        let done = Date(timeIntervalSince1970: Self.captureSecond + 0.5)
        let meta = ResultMeta(taskID: "t-1", state: .success, result: .number("123456789012345678901234567890"), dateDone: done, parentID: "p-1")
        let bytes = meta.encode()
        let decoded = try ResultMeta.decode(bytes)
        #expect(decoded.taskID == "t-1")
        #expect(decoded.state == .success)
        #expect(decoded.result == .number("123456789012345678901234567890"))
        #expect(decoded.traceback == nil)
        #expect(decoded.parentID == "p-1")
        expectClose(decoded.dateDone, Self.captureSecond + 0.5)
        #expect(decoded.failure == nil)

        let document = try JSONValue(parsing: bytes)
        #expect(document.objectValue?.map(\.key) == ["status", "result", "traceback", "children", "date_done", "task_id", "parent_id"])
        #expect(document["status"] == "SUCCESS")
        #expect(document["children"] == [])
        #expect(document["date_done"] == "2026-11-25T09:15:04.500000+00:00")
    }

    @Test func failureMetaRoundTrips() throws {
        let failure = TaskFailure(type: "ValueError", message: "bad thing", traceback: "Traceback (most recent call last):\nValueError: bad thing\n")
        let meta = ResultMeta.failure("t-2", failure)
        #expect(meta.dateDone != nil)
        let bytes = meta.encode()
        let document = try JSONValue(parsing: bytes)
        #expect(document["result"] == ["exc_type": "ValueError", "exc_message": ["bad thing"], "exc_module": "builtins"])
        #expect(document["status"] == "FAILURE")
        let decoded = try ResultMeta.decode(bytes)
        #expect(decoded.taskID == "t-2")
        #expect(decoded.state == .failure)
        #expect(decoded.traceback == failure.traceback)
        let f = try #require(decoded.failure)
        #expect(f.type == "ValueError")
        #expect(f.message == "bad thing")
        #expect(f.module == "builtins")
        #expect(f.traceback == failure.traceback)
    }

    @Test func revokedMetaRoundTrips() throws {
        let meta = ResultMeta.failure("t-3", .revoked("expired"), state: .revoked)
        let decoded = try ResultMeta.decode(meta.encode())
        #expect(decoded.state == .revoked)
        #expect(decoded.state.isReady)
        let f = try #require(decoded.failure)
        #expect(f.type == "TaskRevokedError")
        #expect(f.message == "expired")
        #expect(f.module == "celery.exceptions")
        #expect(decoded.traceback == nil)
    }

    @Test func decodesCeleryResultDocuments() throws {
        let success = try ResultMeta.decode(Array(#"""
            {"status": "SUCCESS", "result": 5, "traceback": null, "children": [],
             "date_done": "2026-11-25T09:15:04.488298+00:00", "task_id": "9aec24ea-…"}
            """#.utf8))
        #expect(success.state == .success)
        #expect(success.result == 5)
        #expect(success.taskID == "9aec24ea-…")
        #expect(success.traceback == nil)
        expectClose(success.dateDone, Self.captureSecond + 0.488298)
        #expect(success.failure == nil)

        let started = try ResultMeta.decode(Array(#"""
            {"status": "STARTED", "result": {"pid": 9649, "hostname": "capworker@vm"}, "traceback": null,
             "children": [], "date_done": null, "task_id": "adbf8f63-…"}
            """#.utf8))
        #expect(started.state == .started)
        #expect(!started.state.isReady)
        #expect(started.result["pid"] == 9649)
        #expect(started.result["hostname"] == "capworker@vm")
        #expect(started.dateDone == nil)
        #expect(started.failure == nil)

        let failure = try ResultMeta.decode(Array(#"""
            {"status": "FAILURE", "result": {"exc_type": "ValueError", "exc_message": ["bad thing"],
             "exc_module": "builtins"}, "traceback": "Traceback (most recent call last):\n …\nValueError: bad thing\n",
             "children": [], "date_done": "2026-11-25T09:16:27.515573+00:00", "task_id": "adbf8f63-…"}
            """#.utf8))
        #expect(failure.state == .failure)
        #expect(failure.traceback == "Traceback (most recent call last):\n …\nValueError: bad thing\n")
        expectClose(failure.dateDone, Self.captureSecond + 83.515573)
        let f = try #require(failure.failure)
        #expect(f == TaskFailure(type: "ValueError", message: "bad thing", module: "builtins", traceback: failure.traceback))

        let retry = try ResultMeta.decode(Array(#"""
            {"status": "RETRY", "result": {"exc_type": "KeyError", "exc_message": ["try 0"], "exc_module": "builtins"},
             "traceback": "…celery.exceptions.Retry: Retry in 1s: KeyError('try 0')\n",
             "children": [[["3c206b34-…", null], null]], "date_done": null, "task_id": "3c206b34-…"}
            """#.utf8))
        #expect(retry.state == .retry)
        #expect(retry.dateDone == nil)
        #expect(retry.failure?.type == "KeyError")
        #expect(retry.failure?.message == "try 0")

        let revoked = try ResultMeta.decode(Array(#"""
            {"status": "REVOKED", "result": {"exc_type": "TaskRevokedError", "exc_message": ["expired"],
             "exc_module": "celery.exceptions"}, "traceback": null, "children": [],
             "date_done": "2026-11-25T09:18:51.036160+00:00", "task_id": "25bca489-…"}
            """#.utf8))
        #expect(revoked.state == .revoked)
        #expect(revoked.failure == TaskFailure(type: "TaskRevokedError", message: "expired", module: "celery.exceptions"))
        expectClose(revoked.dateDone, Self.captureSecond + 227.036160)
    }

    @Test func resultDocumentErrors() {
        for text in ["nope", #"{"result": 5}"#, #"{"status": "DONE", "result": 5}"#] {
            do throws(ProtocolError) {
                _ = try ResultMeta.decode(Array(text.utf8))
                Issue.record("\(text) should not decode")
            } catch {
                #expect(error.message.contains("result document"), "\(error.message)")
            }
        }
    }

    @Test func rpcEnvelopeRoundTrips() throws {
        let meta = ResultMeta(taskID: "afa22775-0000", state: .success, result: 9, dateDone: Date(timeIntervalSince1970: Self.captureSecond))
        let raw = meta.rpcEnvelope(replyTo: "b5b8fcc8-2cb3-36c2-b172-44c2408c7b6f", correlationID: "corr-1")
        let envelope = try JSONValue(parsing: raw)
        #expect(envelope["properties"]?["delivery_info"]?["routing_key"] == "b5b8fcc8-2cb3-36c2-b172-44c2408c7b6f")
        #expect(envelope["properties"]?["body_encoding"] == "base64")
        #expect(envelope["content-type"] == "application/json")

        let (correlation, decoded) = try ResultMeta.decodeRPCEnvelope(raw)
        #expect(correlation == "corr-1")
        #expect(decoded.taskID == "afa22775-0000")
        #expect(decoded.state == .success)
        #expect(decoded.result == 9)
        expectClose(decoded.dateDone, Self.captureSecond)
    }

    @Test func decodesCeleryRPCReply() throws {
        let document = #"{"status": "SUCCESS", "result": 9, "traceback": null, "children": [], "date_done": "2026-11-25T09:16:05.294976+00:00", "task_id": "afa22775-1"}"#
        let raw = JSONValue.object([
            JSONMember("body", .string(Data(document.utf8).base64EncodedString())),
            JSONMember("content-encoding", "utf-8"),
            JSONMember("content-type", "application/json"),
            JSONMember("headers", [:]),
            JSONMember("properties", ["correlation_id": "afa22775-1", "delivery_mode": 1,
                                      "delivery_info": ["exchange": "", "routing_key": "b5b8fcc8"],
                                      "priority": 0, "body_encoding": "base64", "delivery_tag": "da4aff4a"]),
        ]).serializedBytes()
        let (correlation, meta) = try ResultMeta.decodeRPCEnvelope(raw)
        #expect(correlation == "afa22775-1")
        #expect(meta.result == 9)
        #expect(meta.state == .success)
        #expect(throws: ProtocolError.self) { try ResultMeta.decodeRPCEnvelope(Array(#"{"properties": {}}"#.utf8)) }
    }

    // MARK: TaskFailure

    @Test func taskFailureReadsExceptionDocuments() {
        let multi = TaskFailure(json: ["exc_type": "ValueError", "exc_message": ["bad", 2, nil], "exc_module": "builtins"], traceback: "tb")
        #expect(multi.type == "ValueError")
        #expect(multi.message == "bad, 2, null")
        #expect(multi.module == "builtins")
        #expect(multi.traceback == "tb")
        #expect(multi.description == "ValueError: bad, 2, null")

        let noModule = TaskFailure(json: ["exc_type": "KeyError", "exc_message": []], traceback: nil)
        #expect(noModule.message == "")
        #expect(noModule.module == "builtins")

        let stringMessage = TaskFailure(json: ["exc_type": "RuntimeError", "exc_message": "plain", "exc_module": "mymod"], traceback: nil)
        #expect(stringMessage.message == "plain")
        #expect(stringMessage.module == "mymod")

        let bare = TaskFailure(json: "boom", traceback: nil)
        #expect(bare.type == "Exception")
        #expect(bare.message == "boom")
    }

    @Test func taskFailureJSONIsCeleryShaped() {
        let f = TaskFailure(type: "TimeoutError", message: "slow", module: "mymod")
        #expect(f.json == ["exc_type": "TimeoutError", "exc_message": ["slow"], "exc_module": "mymod"])
        #expect(TaskFailure(json: f.json, traceback: nil) == f)
        #expect(TaskFailure.notRegistered("x.y").json["exc_message"] == ["'x.y'"])
        #expect(TaskFailure.notRegistered("x.y").module == "celery.exceptions")
    }
}
