import Testing
import Foundation
@testable import Celerity

/// The worker's fast envelope read (`TaskMessage.decodeForRun`, built on `JSONReader`) must
/// agree with the full decoder on every field it reads, and give up (nil) on anything the full
/// decoder rejects or that needs the full path.
@Suite struct FastDecodeTests {
    static let captured = CeleryCapture.message

    func expectSameFields(_ raw: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) throws {
        let full = try TaskMessage.decode(raw)
        let quick = try #require(TaskMessage.decodeForRun(raw), sourceLocation: sourceLocation)
        #expect(quick.id == full.id, sourceLocation: sourceLocation)
        #expect(quick.task == full.task, sourceLocation: sourceLocation)
        #expect(quick.args == full.args, sourceLocation: sourceLocation)
        #expect(quick.kwargs == full.kwargs, sourceLocation: sourceLocation)
        #expect(quick.queue == full.queue, sourceLocation: sourceLocation)
        #expect(quick.replyTo == full.replyTo, sourceLocation: sourceLocation)
        #expect(quick.correlationID == full.correlationID, sourceLocation: sourceLocation)
        #expect(quick.rootID == full.rootID, sourceLocation: sourceLocation)
        #expect(quick.parentID == full.parentID, sourceLocation: sourceLocation)
        #expect(quick.groupID == full.groupID, sourceLocation: sourceLocation)
        #expect(quick.retries == full.retries, sourceLocation: sourceLocation)
        #expect(quick.hardTimeLimit == full.hardTimeLimit, sourceLocation: sourceLocation)
        #expect(quick.softTimeLimit == full.softTimeLimit, sourceLocation: sourceLocation)
        #expect(quick.ignoreResult == full.ignoreResult, sourceLocation: sourceLocation)
        #expect(quick.priority == full.priority, sourceLocation: sourceLocation)
        #expect(quick.embed == full.embed, sourceLocation: sourceLocation)
    }

    @Test func readsWhatTheFullDecoderReadsFromPythonCelery() throws {
        try expectSameFields(Array(Self.captured.utf8))
        let quick = try #require(TaskMessage.decodeForRun(Array(Self.captured.utf8)))
        #expect(quick.task == "capapp.add")
        #expect(quick.args == [2, 3])
        #expect(quick.queue == "add")
        #expect(quick.headers.isEmpty)   // unknown headers are not kept on this path
    }

    @Test func readsWhatTheFullDecoderReadsFromOurClient() throws {
        var m = TaskMessage(task: "t.x", args: [1, "two", [3]], kwargs: [JSONMember("k", .object([JSONMember("n", nil)]))], queue: "q",
                            priority: 4, replyTo: "reply-1", hardTimeLimit: 9, softTimeLimit: 4, ignoreResult: true, retries: 2,
                            parentID: "p-1")
        m.headers = [JSONMember("custom", .array([.object([JSONMember("deep", [true, false, nil, 1.5e3, "s\"q\\u0000"])])]))]
        try expectSameFields(m.encode())
    }

    @Test func skippedValuesOfEveryShapeAreCheckedButNotNeeded() throws {
        let text = Self.captured.replacingOccurrences(of: #""stamps": {}"#, with: #"""
            "stamps": {"x": [1, {"y": [true, null, "s\"q", -0.5e-3, [], {}]}], "z": "é😀", "w": [[[]]]}
            """#)
        try expectSameFields(Array(text.utf8))
    }

    @Test func anEscapedKeyIsStillRecognised() throws {
        let text = Self.captured.replacingOccurrences(of: #""task": "capapp.add""#, with: #""t\u0061sk": "capapp.add""#)
        try expectSameFields(Array(text.utf8))
    }

    @Test(arguments: [
        (#""eta": null"#, #""eta": "2026-11-25T10:00:00+00:00""#),
        (#""expires": null"#, #""expires": "2026-11-25T10:00:00+00:00""#),
        (#""lang": "py""#, #""lang": "py", "compression": "application/x-gzip""#),
    ])
    func messagesNeedingTheFullPathAreLeftToIt(from: String, to: String) throws {
        let text = Self.captured.replacingOccurrences(of: from, with: to)
        #expect(text != Self.captured)
        #expect(TaskMessage.decodeForRun(Array(text.utf8)) == nil)
    }

    @Test(arguments: [
        #""stamps": {"a" 1}"#,            // missing colon in a skipped object
        #""stamps": [1, 2"#,              // unterminated skipped array
        #""stamps": {"a": 1,}"#,          // trailing comma
        #""stamps": [1 2]"#,              // missing comma
        #""stamps": tru"#,                // bad literal
        #""stamps": "a\u00"#,             // bad escape
        #""stamps": 01"#,                 // bad number
        #""stamps": {"a": [1}]"#,         // crossed brackets
    ])
    func malformedSkippedPartsAreRejectedLikeTheFullDecoderDoes(broken: String) throws {
        let text = Self.captured.replacingOccurrences(of: #""stamps": {}"#, with: broken)
        #expect(text != Self.captured)
        let raw = Array(text.utf8)
        #expect(TaskMessage.decodeForRun(raw) == nil)
        #expect(throws: ProtocolError.self) { try TaskMessage.decode(raw) }
    }

    @Test func invalidUTF8AndControlCharactersInSkippedStringsAreRejected() throws {
        var raw = Array(Self.captured.utf8)
        let at = try #require(raw.firstRange(of: Array("(2, 3)".utf8)))
        raw[at.lowerBound] = 0xFF
        #expect(TaskMessage.decodeForRun(raw) == nil)
        #expect(throws: ProtocolError.self) { try TaskMessage.decode(raw) }
        raw[at.lowerBound] = 0x01
        #expect(TaskMessage.decodeForRun(raw) == nil)
        #expect(throws: ProtocolError.self) { try TaskMessage.decode(raw) }
    }

    @Test func truncatedOrTrailingInputIsRejected() {
        let raw = Array(Self.captured.utf8)
        for cut in [1, 10, raw.count / 2, raw.count - 1] {
            #expect(TaskMessage.decodeForRun(Array(raw.prefix(cut))) == nil)
        }
        #expect(TaskMessage.decodeForRun(raw + Array(" x".utf8)) == nil)
    }
}
