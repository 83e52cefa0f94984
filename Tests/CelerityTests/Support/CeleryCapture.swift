import Foundation
import Testing

/// A Python Celery client's call of `capapp.add(2, 3)` as it reached Redis, and the second its
/// dates were taken around: the protocol and fast-decoder tests read the same bytes.
enum CeleryCapture {
    /// 2026-11-25T09:15:04+00:00.
    static let second: TimeInterval = 1_795_598_104

    /// The task message, as Python Celery wrote it.
    static let message = #"""
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
}

/// Expects `date` within a microsecond of `expected` (seconds since 1970); nil fails.
func expectClose(_ date: Date?, _ expected: TimeInterval, sourceLocation: SourceLocation = #_sourceLocation) {
    guard let date else {
        Issue.record("expected a date near \(expected), got nil", sourceLocation: sourceLocation)
        return
    }
    #expect(abs(date.timeIntervalSince1970 - expected) < 1e-6, "\(date.timeIntervalSince1970) vs \(expected)", sourceLocation: sourceLocation)
}
