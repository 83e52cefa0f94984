import Testing
import Foundation
@testable import Celerity

@Suite struct ResultMetaTests {
    private static let captureSecond = CeleryCapture.second

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
}
