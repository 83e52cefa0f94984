import Testing
import Foundation
@testable import Celerity

@Suite struct CeleryDateTests {
    private static let captureSecond = CeleryCapture.second

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
}
