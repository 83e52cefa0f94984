import Testing
@testable import Celerity

/// Cutting failures to size (TaskFailure+Limits): at scalar boundaries, saying how much there was.
@Suite struct FailureLimitsTests {
    @Test func shortFailuresAreLeftAlone() {
        let f = TaskFailure(type: "ValueError", message: "boom", traceback: "Traceback …")
        #expect(f.capped() == f)
        #expect(f.description == "ValueError: boom")
    }

    @Test func multiByteTextIsCutBetweenCharactersNeverInsideOne() {
        // "é" is 2 bytes, "🙂" 4: no limit may split them.
        let text = String(repeating: "é🙂", count: 40_000)   // 240,000 bytes
        let f = TaskFailure(type: String(repeating: "é", count: 150), message: text, traceback: text).capped()
        #expect(f.type == String(repeating: "é", count: 100) + "… [cut: 300 bytes in all]")
        #expect(f.message.hasSuffix("… [cut: 240,000 bytes in all]"))
        #expect(f.message.utf8.count <= TaskFailure.maxMessageBytes + 40)
        #expect(f.message.hasPrefix(String(repeating: "é🙂", count: 10_922)))   // 65,532 bytes; the next "é" fits, its "🙂" not
        #expect(f.traceback!.contains("\n… [cut: 240,000 bytes in all, the middle left out] …\n"))
        #expect(f.traceback!.utf8.count <= TaskFailure.maxTracebackBytes + 80)
        #expect(!f.message.unicodeScalars.contains("\u{FFFD}") && !f.traceback!.unicodeScalars.contains("\u{FFFD}"))
    }

    @Test func theLogLineKeepsTheSizeOfTheWhole() {
        let f = TaskFailure(type: "E", message: String(repeating: "m", count: 15_000_000)).capped()
        #expect(f.description == "E: " + String(repeating: "m", count: 2048) + "… [cut: 15,000,000 bytes in all]")
        let plain = TaskFailure(type: "E", message: String(repeating: "m", count: 3000))
        #expect(plain.description == "E: " + String(repeating: "m", count: 2048) + "… [cut: 3,000 bytes in all]")
        #expect(TaskFailure.grouped(0) == "0" && TaskFailure.grouped(999) == "999" && TaskFailure.grouped(1000) == "1,000")
    }
}
