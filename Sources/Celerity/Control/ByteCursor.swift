/// Writes bytes through a pointer into room measured beforehand (`RecordBuffer.append(upTo:_:)`):
/// how task events are written. An `[UInt8]` appended to piece by piece checks its uniqueness
/// and capacity at every call, a hundred calls per task announced (received, started and its
/// end: ~650 bytes): perf put writing them at ~2.5 µs per task of a draining worker with -E,
/// the largest part of the events' cost. Here a piece is one bounds check and one copy.
///
/// Every write checks the room left (`precondition`, also in release builds): a bound measured
/// too small stops the worker instead of writing past the buffer.
struct ByteCursor {
    private let base: UnsafeMutablePointer<UInt8>
    private let end: UnsafeMutablePointer<UInt8>
    private var p: UnsafeMutablePointer<UInt8>

    /// Writes from the start of `buffer` (its whole length is the room).
    init(_ buffer: UnsafeMutableBufferPointer<UInt8>) {
        base = buffer.baseAddress!
        end = base + buffer.count
        p = base
    }

    /// Bytes written so far.
    var count: Int { p - base }

    @inline(__always) private func room(_ n: Int) {
        precondition(end - p >= n, "ByteCursor: the room measured for an event was too small")
    }

    @inline(__always) mutating func put(_ byte: UInt8) {
        room(1)
        p.initialize(to: byte)
        p += 1
    }

    /// A literal (its bytes as compiled).
    @inline(__always) mutating func put(_ text: StaticString) {
        text.withUTF8Buffer { put($0) }
    }

    mutating func put(_ bytes: UnsafeBufferPointer<UInt8>) {
        guard let from = bytes.baseAddress else { return }
        room(bytes.count)
        p.update(from: from, count: bytes.count)
        p += bytes.count
    }

    mutating func put(_ bytes: [UInt8]) {
        bytes.withUnsafeBufferPointer { put($0) }
    }

    /// A word as it is in memory (8 bytes): a compact record's number.
    @inline(__always) mutating func putWord(_ v: UInt64) {
        room(8)
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: UInt64.self)
        p += 8
    }

    /// A compact record's field: its kind, its length (4 bytes), its bytes.
    mutating func putField(_ kind: UInt8, _ bytes: UnsafeBufferPointer<UInt8>) {
        room(5)
        p.initialize(to: kind)
        UnsafeMutableRawPointer(p + 1).storeBytes(of: UInt32(bytes.count), as: UInt32.self)
        p += 5
        put(bytes)
    }

    /// A decimal integer (at most 20 bytes).
    mutating func putInt(_ n: Int) {
        room(20)
        var v = n.magnitude
        if n < 0 {
            p.initialize(to: ASCII.minus)
            p += 1
        }
        // Digits from the end of a 20-byte window, then moved to the front.
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
        let written = withUnsafeMutableBytes(of: &digits) { d -> Int in
            var i = 20
            repeat {
                i -= 1
                d[i] = 0x30 + UInt8(truncatingIfNeeded: v % 10)
                v /= 10
            } while v > 0
            p.update(from: d.baseAddress!.assumingMemoryBound(to: UInt8.self) + i, count: 20 - i)
            return 20 - i
        }
        p += written
    }

    /// `whole.fraction`, the fraction `digits` wide less its trailing zeros (at least one
    /// digit): at most 20 + 1 + `digits` bytes.
    mutating func putFixed(_ whole: Int, fraction: Int, digits: Int) {
        putInt(whole)
        var f = fraction, width = digits
        while width > 1 && f % 10 == 0 {
            f /= 10
            width -= 1
        }
        room(width + 1)
        p.initialize(to: ASCII.dot)
        var i = width
        while i > 0 {
            p[i] = 0x30 + UInt8(truncatingIfNeeded: f % 10)
            f /= 10
            i -= 1
        }
        p += width + 1
    }

    /// `EventWire.writeSeconds(_: Double)`, here (at most 40 bytes).
    mutating func putSeconds(_ s: Double) {
        guard s >= 0, s < 1e12 else {
            put(Array(s.description.utf8))
            return
        }
        let micros = Int((s * 1e6).rounded())
        putFixed(micros / 1_000_000, fraction: micros % 1_000_000, digits: 6)
    }

    /// `EventWire.writeSeconds(_: Duration)`, here (at most 40 bytes).
    mutating func putSeconds(_ d: Duration) {
        let c = d.components
        guard c.seconds >= 0, c.attoseconds >= 0 else {
            put(Array(EventWire.seconds(d).description.utf8))
            return
        }
        putFixed(Int(c.seconds), fraction: Int(c.attoseconds / 1_000_000_000), digits: 9)
    }

    /// The most bytes `putJSONString(s)` writes: quotes, and each byte escaped as `\u00xx`.
    static func bound(_ s: String) -> Int { 2 + 6 * s.utf8.count }

    /// A JSON string, as `JSONValue.writeString` writes it: `"`, `\` and control characters
    /// escaped (`\n`, `\r`, `\t`, `\b`, `\f`, else `\u00xx`), the rest raw UTF-8.
    mutating func putJSONString(_ string: String) {
        var s = string
        s.withUTF8 { putJSONString($0) }
    }

    mutating func putJSONString(_ utf8: UnsafeBufferPointer<UInt8>) {
        room(2 + 6 * utf8.count)
        p.initialize(to: ASCII.quote)
        p += 1
        let n = utf8.count
        var run = 0, i = 0
        /// Copies the bytes since the last escape, up to `i`.
        func copyRun(_ p: inout UnsafeMutablePointer<UInt8>) {
            guard run < i else { return }
            p.update(from: utf8.baseAddress! + run, count: i - run)
            p += i - run
        }
        while i < n {
            let c = utf8[i]
            if c >= 0x20 && c != ASCII.quote && c != ASCII.backslash {
                i += 1
                continue
            }
            copyRun(&p)
            p.initialize(to: ASCII.backslash)
            p += 1
            switch c {
            case ASCII.quote, ASCII.backslash: p.initialize(to: c)
            case 0x0A: p.initialize(to: UInt8(ascii: "n"))
            case 0x0D: p.initialize(to: UInt8(ascii: "r"))
            case 0x09: p.initialize(to: UInt8(ascii: "t"))
            case 0x08: p.initialize(to: UInt8(ascii: "b"))
            case 0x0C: p.initialize(to: UInt8(ascii: "f"))
            default:
                let low = c & 0xF
                p[0] = UInt8(ascii: "u")
                p[1] = ASCII.zero
                p[2] = ASCII.zero
                p[3] = ASCII.zero + (c >> 4)
                p[4] = low < 10 ? ASCII.zero + low : UInt8(ascii: "a") + low - 10
                p += 4
            }
            p += 1
            i += 1
            run = i
        }
        copyRun(&p)
        p.initialize(to: ASCII.quote)
        p += 1
    }
}

/// Reads what `ByteCursor.putWord` and `putField` wrote (a compact record), in order.
struct ByteReader {
    private let bytes: UnsafeRawBufferPointer
    private var at = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    mutating func word() -> UInt64 {
        precondition(at + 8 <= bytes.count, "ByteReader: a compact record ends early")
        defer { at += 8 }
        return bytes.loadUnaligned(fromByteOffset: at, as: UInt64.self)
    }

    mutating func int() -> Int { Int(truncatingIfNeeded: word()) }

    mutating func field() -> (kind: UInt8, bytes: UnsafeBufferPointer<UInt8>) {
        precondition(at + 5 <= bytes.count, "ByteReader: a compact record ends early")
        let kind = bytes[at]
        let n = Int(bytes.loadUnaligned(fromByteOffset: at + 1, as: UInt32.self))
        precondition(at + 5 + n <= bytes.count, "ByteReader: a compact record ends early")
        defer { at += 5 + n }
        return (kind, UnsafeBufferPointer(start: bytes.baseAddress!.assumingMemoryBound(to: UInt8.self) + at + 5, count: n))
    }
}
