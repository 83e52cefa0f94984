import Foundation
import Testing
@testable import Celerity

/// The pieces of issue 11's fidelity gaps that need no worker: compressed and refused bodies,
/// extended and STARTED documents, the module of a plugin's error, and the manifest keys.
@Suite struct FidelityUnitTests {
    /// `[[4, 6], {"k": "v"}, {embed}]` as Python's zlib.compress, gzip.compress and
    /// bz2.compress write it (base64).
    static let zlibBody = "eJyLjjbRUTCL1VGoVspWslJQKlOqBbGTE3NykhKTs4uBYnmlOTk6CkqpRUVoIskZiZl5yNz8ohQotzYWAKVqG7o="
    static let gzipBody = "H4sIAAAAAAACA4uONtFRMIvVUahWylayUlAqU6oFsZMTc3KSEpOzi4FieaU5OToKSqlFRWgiyRmJmXnI3PyiFCi3NhYArXVez1kAAAA="
    static let bz2Body = "QlpoOTFBWSZTWbX9QFUAABKbgFAEBRAACj5tmwogAEDQhMTRtQepsoUAA0DJkIVDMAwreHl6kZuxYhV2yQSS07Devi5MJJMSRBMCCmaPyBa0RoaA4qDv+LuSKcKEha/qAqg="
    /// bz2.compress of a million zero bytes: 48 bytes that claim a megabyte.
    static let bz2Zeros = "QlpoOTFBWSZTWXnTnkgAB6jAQMAAAAIACCAAMMwJqmmVJDapSQ8XckU4UJB5055I"

    /// A kombu envelope with a base64 body as given, a content type and a `compression` header.
    static func envelope(body: String, contentType: String = "application/json", compression: String? = nil) -> [UInt8] {
        var headers: [JSONMember] = [JSONMember("lang", "py"), JSONMember("task", "t.add"), JSONMember("id", "id-7"),
                                     JSONMember("parent_id", "p-7"), JSONMember("retries", 2)]
        if let compression { headers.append(JSONMember("compression", .string(compression))) }
        return JSONValue.object([
            JSONMember("body", .string(body)), JSONMember("content-type", .string(contentType)), JSONMember("content-encoding", "utf-8"),
            JSONMember("headers", .object(headers)),
            JSONMember("properties", .object([
                JSONMember("correlation_id", "id-7"), JSONMember("reply_to", "reply-list"), JSONMember("body_encoding", "base64"),
                JSONMember("delivery_info", .object([JSONMember("exchange", ""), JSONMember("routing_key", "q1")])),
            ])),
        ]).serializedBytes()
    }

    static func decodeError(_ raw: [UInt8]) -> ProtocolError? {
        do throws(ProtocolError) {
            _ = try TaskMessage.decode(raw)
            return nil
        } catch {
            return error
        }
    }

    // MARK: - Compressed bodies

    @Test(arguments: [("application/x-gzip", zlibBody), ("application/x-gzip", gzipBody), ("zlib", zlibBody), ("application/x-bz2", bz2Body),
                      ("bzip2", bz2Body)])
    func compressedBodiesDecodeAndARetryResendsThemPlain(header: String, body: String) throws {
        let raw = Self.envelope(body: body, compression: header)
        // Not the fast read: it leaves anything unusual to `decode`.
        #expect(TaskMessage.decodeForRun(raw) == nil)
        let m = try TaskMessage.decode(raw)
        #expect(m.args == [4, 6])
        #expect(m.kwargs.map(\.key) == ["k"])
        #expect(m.kwargs.first?.value == "v")
        #expect(m.queue == "q1" && m.parentID == "p-7" && m.retries == 2)
        // Used up by decoding: a message sent again (a retry) carries a plain body and no
        // `compression` header.
        #expect(!m.headers.contains { $0.key == "compression" })
        let again = try TaskMessage.decode(m.encode())
        #expect(again.args == [4, 6])
        #expect(try JSONValue(parsing: m.encode())["headers"]?["compression"] == nil)
    }

    @Test func corruptTruncatedOrUnknownCompressionIsRefusedWithKombusDecodeError() throws {
        let truncatedZlib = Data(base64Encoded: Self.zlibBody)!.dropLast(8).base64EncodedString()
        let truncatedBz2 = Data(base64Encoded: Self.bz2Body)!.dropLast(20).base64EncodedString()
        let cases: [(String, String, String)] = [
            (Data("not compressed at all".utf8).base64EncodedString(), "application/x-gzip", "zlib"),
            (truncatedZlib, "application/x-gzip", "ends too soon"),
            (truncatedBz2, "application/x-bz2", "ends too soon"),
            (Data("not bzip2".utf8).base64EncodedString(), "application/x-bz2", "bzip2"),
            (Self.zlibBody, "application/x-lzma", "application/x-lzma"),
        ]
        for (body, header, words) in cases {
            let e = try #require(Self.decodeError(Self.envelope(body: body, compression: header)), "\(header) \(words)")
            let refused = try #require(e.refused, "\(e.message)")
            #expect(refused.failure.type == "DecodeError")
            #expect(refused.failure.module == "kombu.exceptions")
            #expect(refused.failure.message.contains(words), "\(refused.failure.message)")
            #expect(refused.message.id == "id-7" && refused.message.replyTo == "reply-list" && refused.message.queue == "q1")
        }
    }

    @Test func decompressionStopsAtItsLimit() throws {
        let zlib = Array(Data(base64Encoded: Self.zlibBody)!)
        guard case let .failure(e) = BodyCompression.inflate(zlib, limit: 50) else { Issue.record("inflated past its limit"); return }
        #expect(e.message.contains("more than 50 bytes"))
        guard case let .success(plain) = BodyCompression.inflate(zlib, limit: 1 << 20) else { Issue.record("did not inflate"); return }
        #expect(plain.count == 89)
        let zeros = Array(Data(base64Encoded: Self.bz2Zeros)!)
        guard case let .failure(b) = BodyCompression.bunzip(zeros, limit: 64 << 10) else { Issue.record("bunzipped past its limit"); return }
        #expect(b.message.contains("more than"))
        guard case let .success(all) = BodyCompression.bunzip(zeros, limit: 2 << 20) else { Issue.record("did not bunzip"); return }
        #expect(all.count == 1_000_000 && all.allSatisfy { $0 == 0 })
    }

    // MARK: - Refused content types

    @Test(arguments: [("application/x-python-serialize", "pickle"), ("application/x-yaml", "yaml"), ("application/x-msgpack", "msgpack"),
                      ("text/plain", "text/plain")])
    func contentTypesOtherThanJSONAreRefusedAsKombuRefusesThem(contentType: String, name: String) throws {
        let e = try #require(Self.decodeError(Self.envelope(body: "gAN9cQAu", contentType: contentType)))
        #expect(e.message.contains(contentType))   // the dead letter's reason, as before
        let refused = try #require(e.refused)
        #expect(refused.failure.type == "ContentDisallowed")
        #expect(refused.failure.module == "kombu.exceptions")
        #expect(refused.failure.message == "Refusing to deserialize untrusted content of type \(name) (\(contentType))")
        #expect(refused.message.id == "id-7" && refused.message.task == "t.add" && refused.message.replyTo == "reply-list")
        #expect(refused.message.correlationID == "id-7" && refused.message.queue == "q1")
    }

    /// A message that names no call cannot be answered: no refusal, only a dead letter.
    @Test func aMessageWithoutAnIDIsNotRefusedButMalformed() {
        let raw = Array(#"{"headers": {"task": "t.add"}, "content-type": "application/x-python-serialize", "body": "gAN9cQAu"}"#.utf8)
        let e = Self.decodeError(raw)
        #expect(e != nil && e?.refused == nil)
    }

    // MARK: - Documents

    @Test func extendedDocumentsCarryTheRequestAsCeleryNamesIt() throws {
        var m = TaskMessage(id: "id-9", task: "t.add", args: [2], kwargs: [JSONMember("y", 3)], queue: "q9", retries: 1, parentID: "p-9")
        let plain = ResultMeta.success("id-9", 5)
        // Without result_extended: only parent_id is added (Celery writes it whenever the
        // request has one).
        let bare = try JSONValue(parsing: plain.forRequest(m, extendedBy: nil).encode())
        #expect(bare.objectValue?.map(\.key) == ["status", "result", "traceback", "children", "date_done", "task_id", "parent_id"])
        #expect(bare["parent_id"] == "p-9")
        let doc = try JSONValue(parsing: plain.forRequest(m, extendedBy: "w1@host").encode())
        #expect(doc.objectValue?.map(\.key) == ["status", "result", "traceback", "children", "date_done", "task_id", "parent_id",
                                                "name", "args", "kwargs", "worker", "retries", "queue"])
        #expect(doc["name"] == "t.add" && doc["args"] == [2] && doc["kwargs"]?["y"] == 3)
        #expect(doc["worker"] == "w1@host" && doc["retries"] == 1 && doc["queue"] == "q9")
        let back = try ResultMeta.decode(plain.forRequest(m, extendedBy: "w1@host").encode())
        #expect(back.request?.name == "t.add" && back.request?.worker == "w1@host" && back.request?.queue == "q9")
        m.parentID = nil
        #expect(try JSONValue(parsing: plain.forRequest(m, extendedBy: nil).encode()) == JSONValue(parsing: plain.encode()))
    }

    @Test func startedIsCeleryShaped() throws {
        let doc = try JSONValue(parsing: ResultMeta.started("id-1", pid: 4242, hostname: "w1@host").encode())
        #expect(doc["status"] == "STARTED")
        #expect(doc["result"] == .object([JSONMember("pid", 4242), JSONMember("hostname", "w1@host")]))
        #expect(doc["date_done"] == .null)
    }

    // MARK: - Exceptions

    @Test func pluginErrorsNameTheModuleAPythonClientFindsTheClassIn() {
        #expect(TaskFailure.pluginModule(type: "ValueError", declared: nil) == "builtins")
        #expect(TaskFailure.pluginModule(type: "ZeroDivisionError", declared: .null) == "builtins")
        #expect(TaskFailure.pluginModule(type: "KeyError", declared: "") == "builtins")
        #expect(TaskFailure.pluginModule(type: "LinAlgError", declared: nil) == "celerity.plugin")
        #expect(TaskFailure.pluginModule(type: "LinAlgError", declared: "numpy.linalg") == "numpy.linalg")
        #expect(TaskFailure.pluginModule(type: "ValueError", declared: "myapp.errors") == "myapp.errors")
        #expect(TaskFailure.pluginModule(type: "X", declared: .string(String(repeating: "m", count: 300))) == "celerity.plugin")
        // Every name Python 3.11 lists as a builtin exception.
        for name in ["Exception", "BaseException", "TypeError", "OSError", "TimeoutError", "UnicodeDecodeError", "StopIteration",
                     "RecursionError", "ExceptionGroup", "UserWarning"] {
            #expect(TaskFailure.pythonBuiltinExceptions.contains(name), "\(name)")
        }
        #expect(!TaskFailure.pythonBuiltinExceptions.contains("NotRegistered"))
    }

    // MARK: - Manifest

    @Test func trackStartedAndExtendedAreReadFromTheManifest() throws {
        let text = """
            defaults:
              track_started: true
            result_backend:
              extended: true
              expires: 60
            tasks:
              a:
                builtin: add
              b:
                builtin: add
                track_started: false
            """
        let m = try Manifest.parse(text, path: "t.yaml", baseDirectory: "/tmp", builtins: ["add"])
        #expect(m.tasks["a"]?.trackStarted == true)
        #expect(m.tasks["b"]?.trackStarted == false)
        #expect(m.resultBackend == ResultBackendConfig(kind: .sameAsBroker, expires: 60, extended: true))
        #expect(m.resultBackend?.resolved(broker: "redis://h:1/0").extended == true)
        let plain = try Manifest.parse("tasks:\n  a:\n    builtin: add\n    track_started: true\n", path: "t.yaml", baseDirectory: "/tmp", builtins: ["add"])
        #expect(plain.tasks["a"]?.trackStarted == true)
        let withURL = try Manifest.parse("result_backend: {url: 'rpc://', extended: true}\ntasks:\n  a:\n    builtin: add\n", path: "t.yaml",
                                         baseDirectory: "/tmp", builtins: ["add"])
        #expect(withURL.resultBackend == ResultBackendConfig(kind: .rpc, expires: 86400, extended: true))
        do throws(ManifestError) {
            _ = try Manifest.parse("tasks:\n  a:\n    builtin: add\n    track_started: often\n", path: "t.yaml", baseDirectory: "/tmp", builtins: ["add"])
            Issue.record("track_started: often parsed")
        } catch {
            #expect(error.description.contains("t.yaml:4:") && error.description.contains("track_started must be true or false"))
        }
    }
}
