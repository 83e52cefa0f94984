import Foundation

/// Dates as Celery writes and reads them: ISO 8601 with an explicit offset, microseconds
/// that are omitted when zero (Python's `isoformat()`), e.g. `2026-11-25T09:15:04.488298+00:00`.
public enum CeleryDate {
    /// Formats `date` in UTC the way Python's `datetime.isoformat()` does (`+00:00`, never `Z`).
    public static func format(_ date: Date) -> String {
        let t = date.timeIntervalSince1970
        var secs = floor(t)
        var micros = Int(((t - secs) * 1_000_000).rounded())
        if micros >= 1_000_000 { micros -= 1_000_000; secs += 1 }
        var tt = time_t(secs)
        var tmv = tm()
        gmtime_r(&tt, &tmv)
        // Digits written by hand: String(format:) costs microseconds, and every result has a date.
        var out: [UInt8] = []
        out.reserveCapacity(32)
        func put(_ v: Int, _ width: Int) {
            var div = 1
            for _ in 1..<width { div *= 10 }
            while div > 0 { out.append(UInt8(48 + (v / div) % 10)); div /= 10 }
        }
        put(Int(tmv.tm_year) + 1900, 4); out.append(45)
        put(Int(tmv.tm_mon) + 1, 2); out.append(45)
        put(Int(tmv.tm_mday), 2); out.append(84)
        put(Int(tmv.tm_hour), 2); out.append(58)
        put(Int(tmv.tm_min), 2); out.append(58)
        put(Int(tmv.tm_sec), 2)
        if micros != 0 { out.append(46); put(micros, 6) }
        out.append(contentsOf: Array("+00:00".utf8))
        return String(decoding: out, as: UTF8.self)
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.ffffff][Z|±HH:MM]` (a space may replace `T`). A naive time
    /// (no offset) is read as UTC. Returns nil when the text is not such a date.
    public static func parse(_ text: String) -> Date? {
        let b = Array(text.utf8)
        func num(_ from: Int, _ len: Int) -> Int? {
            guard from + len <= b.count else { return nil }
            var v = 0
            for i in from..<(from + len) {
                let c = b[i]
                guard c >= 48 && c <= 57 else { return nil }
                v = v * 10 + Int(c - 48)
            }
            return v
        }
        guard b.count >= 19, let year = num(0, 4), b[4] == 45, let month = num(5, 2), b[7] == 45,
              let day = num(8, 2), b[10] == 84 || b[10] == 32 || b[10] == 116, let hour = num(11, 2), b[13] == 58,
              let minute = num(14, 2), b[16] == 58, let second = num(17, 2),
              (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 61
        else { return nil }
        var i = 19
        var fraction = 0.0
        if i < b.count && b[i] == 46 {
            i += 1
            var scale = 0.1
            let start = i
            while i < b.count, b[i] >= 48, b[i] <= 57 {
                fraction += Double(b[i] - 48) * scale
                scale /= 10
                i += 1
            }
            if i == start { return nil }
        }
        var offset = 0
        if i < b.count {
            if b[i] == 90 || b[i] == 122 { i += 1 }
            else if b[i] == 43 || b[i] == 45 {
                let sign = b[i] == 45 ? -1 : 1
                guard let oh = num(i + 1, 2) else { return nil }
                var om = 0
                if i + 3 < b.count {
                    if b[i + 3] == 58 { guard let m = num(i + 4, 2) else { return nil }; om = m; i += 6 }
                    else { guard let m = num(i + 3, 2) else { return nil }; om = m; i += 5 }
                } else { i += 3 }
                offset = sign * (oh * 3600 + om * 60)
            } else { return nil }
        }
        guard i == b.count else { return nil }
        var tmv = tm()
        tmv.tm_year = Int32(year - 1900)
        tmv.tm_mon = Int32(month - 1)
        tmv.tm_mday = Int32(day)
        tmv.tm_hour = Int32(hour)
        tmv.tm_min = Int32(minute)
        tmv.tm_sec = Int32(second)
        let epoch = timegm(&tmv)
        return Date(timeIntervalSince1970: Double(epoch) - Double(offset) + fraction)
    }
}
