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
