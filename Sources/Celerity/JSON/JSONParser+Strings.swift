// JSONParser, strings: scanning string content (UTF-8 validation, no raw control
// characters) and decoding escapes, \uXXXX and surrogate pairs included.

extension JSONParser {
    // MARK: strings

    /// Parses a string starting at the opening quote. Runs without escapes are sliced and
    /// decoded in one go; escapes go through a byte buffer.
    mutating func parseString() throws(JSONError) -> String {
        let open = index
        index += 1
        var runStart = index
        try scanRun(open: open)
        if bytes[index] == ASCII.quote {
            let s = text(runStart ..< index)
            index += 1
            return s
        }
        var out: [UInt8] = []
        out.reserveCapacity(index - runStart + 32)
        while true {
            if runStart < index {
                out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart ..< index]))
            }
            if bytes[index] == ASCII.quote {
                index += 1
                return String(decoding: out, as: UTF8.self)
            }
            try parseEscape(into: &out, open: open)
            runStart = index
            try scanRun(open: open)
        }
    }

    /// Advances over string content up to the next '"' or '\', validating UTF-8 and
    /// rejecting raw control characters. Leaves `index` on that quote or backslash.
    @inline(__always)
    mutating func scanRun(open: Int) throws(JSONError) {
        while index < count {
            let c = bytes[index]
            if c < 0x80 {
                if c == ASCII.quote || c == ASCII.backslash { return }
                if c < 0x20 {
                    throw fail("unescaped control character \(hexByte(c)) in string", at: index)
                }
                index += 1
            } else {
                try skipMultiByteScalar(lead: c)
            }
        }
        throw fail("unterminated string starting at byte \(open), expected '\"'", at: index)
    }

    func hexByte(_ c: UInt8) -> String {
        let digits: [Character] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "A", "B", "C", "D", "E", "F"]
        return "0x" + String(digits[Int(c >> 4)]) + String(digits[Int(c & 0xF)])
    }

    /// Validates one well-formed multi-byte UTF-8 sequence (Unicode Table 3-7).
    @inline(__always)
    mutating func skipMultiByteScalar(lead: UInt8) throws(JSONError) {
        let start = index
        var length: Int
        var low: UInt8 = 0x80
        var high: UInt8 = 0xBF
        switch lead {
        case 0xC2 ... 0xDF: length = 2
        case 0xE0: length = 3; low = 0xA0
        case 0xE1 ... 0xEC, 0xEE ... 0xEF: length = 3
        case 0xED: length = 3; high = 0x9F
        case 0xF0: length = 4; low = 0x90
        case 0xF1 ... 0xF3: length = 4
        case 0xF4: length = 4; high = 0x8F
        default:
            throw fail("invalid UTF-8 in string", at: start)
        }
        guard start + length <= count else {
            throw fail("invalid UTF-8 in string (truncated sequence)", at: start)
        }
        let second = bytes[start + 1]
        guard second >= low, second <= high else { throw fail("invalid UTF-8 in string", at: start) }
        var k = 2
        while k < length {
            guard bytes[start + k] & 0xC0 == 0x80 else { throw fail("invalid UTF-8 in string", at: start) }
            k += 1
        }
        index = start + length
    }

    /// Decodes the escape at `index` (a backslash) and appends its UTF-8 to `out`.
    mutating func parseEscape(into out: inout [UInt8], open: Int) throws(JSONError) {
        let escapeStart = index
        index += 1
        guard index < count else {
            throw fail("unterminated string starting at byte \(open), expected '\"'", at: index)
        }
        let c = bytes[index]
        index += 1
        switch c {
        case ASCII.quote, ASCII.backslash, ASCII.slash: out.append(c)
        case UInt8(ascii: "b"): out.append(0x08)
        case UInt8(ascii: "f"): out.append(0x0C)
        case UInt8(ascii: "n"): out.append(0x0A)
        case UInt8(ascii: "r"): out.append(0x0D)
        case UInt8(ascii: "t"): out.append(0x09)
        case UInt8(ascii: "u"):
            let unit = try hex4()
            switch unit {
            case 0xD800 ... 0xDBFF:
                // High surrogate: combine with a following \uDC00-\uDFFF, else U+FFFD.
                if index + 6 <= count, bytes[index] == ASCII.backslash, bytes[index + 1] == UInt8(ascii: "u"),
                   let next = peekHex4(at: index + 2), (0xDC00 ... 0xDFFF).contains(next) {
                    index += 6
                    let scalar = 0x10000 + ((unit - 0xD800) << 10) + (next - 0xDC00)
                    appendUTF8(scalar, to: &out)
                } else {
                    appendUTF8(0xFFFD, to: &out)
                }
            case 0xDC00 ... 0xDFFF:
                appendUTF8(0xFFFD, to: &out)
            default:
                appendUTF8(unit, to: &out)
            }
        default:
            index = escapeStart
            throw fail("invalid escape sequence, expected one of \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX", at: escapeStart)
        }
    }

    /// Reads four hex digits at `index` (just after "\u").
    mutating func hex4() throws(JSONError) -> UInt32 {
        var value: UInt32 = 0
        for _ in 0 ..< 4 {
            guard index < count, let d = hexValue(bytes[index]) else {
                throw expected("4 hex digits after \\u")
            }
            value = value << 4 | d
            index += 1
        }
        return value
    }

    func peekHex4(at offset: Int) -> UInt32? {
        guard offset + 4 <= count else { return nil }
        var value: UInt32 = 0
        for k in 0 ..< 4 {
            guard let d = hexValue(bytes[offset + k]) else { return nil }
            value = value << 4 | d
        }
        return value
    }

    @inline(__always)
    func hexValue(_ c: UInt8) -> UInt32? {
        switch c {
        case 0x30 ... 0x39: return UInt32(c - 0x30)
        case 0x41 ... 0x46: return UInt32(c - 0x41 + 10)
        case 0x61 ... 0x66: return UInt32(c - 0x61 + 10)
        default: return nil
        }
    }

    func appendUTF8(_ scalar: UInt32, to out: inout [UInt8]) {
        switch scalar {
        case 0 ..< 0x80:
            out.append(UInt8(scalar))
        case 0x80 ..< 0x800:
            out.append(UInt8(0xC0 | (scalar >> 6)))
            out.append(UInt8(0x80 | (scalar & 0x3F)))
        case 0x800 ..< 0x10000:
            out.append(UInt8(0xE0 | (scalar >> 12)))
            out.append(UInt8(0x80 | ((scalar >> 6) & 0x3F)))
            out.append(UInt8(0x80 | (scalar & 0x3F)))
        default:
            out.append(UInt8(0xF0 | (scalar >> 18)))
            out.append(UInt8(0x80 | ((scalar >> 12) & 0x3F)))
            out.append(UInt8(0x80 | ((scalar >> 6) & 0x3F)))
            out.append(UInt8(0x80 | (scalar & 0x3F)))
        }
    }
}
