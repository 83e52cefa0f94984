import Testing
import Foundation
@testable import Celerity

@Suite struct TaskMessageTests {
    private static let captureSecond = CeleryCapture.second

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

    // MARK: encode and decode

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
        let captured = CeleryCapture.message
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
}
