import Celerity
import Testing

/// The stored FAILURE of `id` (read from Redis) has its type, message and traceback cut to
/// 200 bytes, 64 KiB and 64 KiB (first and last 32 KiB), each saying how long it was; the worker's log stays small and
/// its "task failed" line is a few KB.
func expectStoredFailureIsCut(_ h: WorkerHarness, _ id: String, sourceLocation: SourceLocation = #_sourceLocation) async throws {
    let raw = try await h.redisClient().call("GET", Keys.resultMeta(id))
    let doc = try JSONValue(parsing: try #require(raw.bytes, sourceLocation: sourceLocation))
    #expect(doc["status"]?.stringValue == "FAILURE", sourceLocation: sourceLocation)
    #expect(raw.bytes!.count < 140_000, "stored document: \(raw.bytes!.count) bytes", sourceLocation: sourceLocation)
    let type = try #require(doc["result"]?["exc_type"]?.stringValue, sourceLocation: sourceLocation)
    #expect(type == String(repeating: "T", count: 200) + "… [cut: 100,000 bytes in all]", sourceLocation: sourceLocation)
    let message = try #require(doc["result"]?["exc_message"]?.arrayValue?.first?.stringValue, sourceLocation: sourceLocation)
    #expect(message == String(repeating: "m", count: 65_536) + "… [cut: 15,000,000 bytes in all]", "\(message.utf8.count) bytes", sourceLocation: sourceLocation)
    let traceback = try #require(doc["traceback"]?.stringValue, sourceLocation: sourceLocation)
    let half = String(repeating: "t", count: 32_768)
    #expect(traceback == half + "\n… [cut: 100,000 bytes in all, the middle left out] …\n" + half, "\(traceback.utf8.count) bytes", sourceLocation: sourceLocation)
    let log = h.worker.output
    #expect(log.utf8.count < 1_000_000, "worker log: \(log.utf8.count) bytes", sourceLocation: sourceLocation)
    let failed = log.split(separator: "\n").filter { $0.contains("task failed") && $0.contains(id) }
    #expect(failed.count == 1, sourceLocation: sourceLocation)
    for line in failed {
        #expect(line.utf8.count < 4_096, "log line: \(line.utf8.count) bytes", sourceLocation: sourceLocation)
        #expect(line.contains("… [cut: 15,000,000 bytes in all]"), sourceLocation: sourceLocation)
    }
}
