// JSONValue, writing: compact JSON text or bytes; numbers verbatim (NaN and Infinity as bare
// tokens, as Python writes them); strings with only '"', '\' and control characters escaped.

// MARK: - Writing

extension JSONValue {
    /// Compact JSON text (no spaces). Numbers are written exactly as stored, so NaN and
    /// Infinity come out as those bare tokens, as Python writes them.
    public func serialized() -> String {
        String(decoding: serializedBytes(), as: UTF8.self)
    }

    /// Compact JSON as UTF-8 bytes.
    public func serializedBytes() -> [UInt8] {
        var buffer: [UInt8] = []
        buffer.reserveCapacity(64)
        write(into: &buffer)
        return buffer
    }

    /// Appends this value's compact JSON (UTF-8) to `buffer`.
    public func write(into buffer: inout [UInt8]) {
        switch self {
        case .null:
            buffer.append(contentsOf: "null".utf8)
        case .bool(let b):
            buffer.append(contentsOf: (b ? "true" : "false").utf8)
        case .number(let text):
            buffer.append(contentsOf: text.utf8)
        case .string(let s):
            JSONValue.writeString(s, into: &buffer)
        case .array(let elements):
            buffer.append(ASCII.openBracket)
            var first = true
            for element in elements {
                if !first { buffer.append(ASCII.comma) }
                first = false
                element.write(into: &buffer)
            }
            buffer.append(ASCII.closeBracket)
        case .object(let members):
            buffer.append(ASCII.openBrace)
            var first = true
            for member in members {
                if !first { buffer.append(ASCII.comma) }
                first = false
                JSONValue.writeString(member.key, into: &buffer)
                buffer.append(ASCII.colon)
                member.value.write(into: &buffer)
            }
            buffer.append(ASCII.closeBrace)
        }
    }

    /// Writes a quoted string: escapes '"', '\' and control characters; everything else,
    /// non-ASCII included, is copied as raw UTF-8.
    static func writeString(_ string: String, into buffer: inout [UInt8]) {
        buffer.append(ASCII.quote)
        var string = string
        string.withUTF8 { utf8 in
            let n = utf8.count
            var runStart = 0
            var i = 0
            while i < n {
                let c = utf8[i]
                if c >= 0x20 && c != ASCII.quote && c != ASCII.backslash {
                    i += 1
                    continue
                }
                if runStart < i {
                    buffer.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart ..< i]))
                }
                buffer.append(ASCII.backslash)
                switch c {
                case ASCII.quote: buffer.append(ASCII.quote)
                case ASCII.backslash: buffer.append(ASCII.backslash)
                case 0x0A: buffer.append(UInt8(ascii: "n"))
                case 0x0D: buffer.append(UInt8(ascii: "r"))
                case 0x09: buffer.append(UInt8(ascii: "t"))
                case 0x08: buffer.append(UInt8(ascii: "b"))
                case 0x0C: buffer.append(UInt8(ascii: "f"))
                default:
                    // Other control characters as \u00xx, lowercase hex like Python.
                    let low = c & 0xF
                    buffer.append(UInt8(ascii: "u"))
                    buffer.append(ASCII.zero)
                    buffer.append(ASCII.zero)
                    buffer.append(ASCII.zero + (c >> 4))
                    buffer.append(low < 10 ? ASCII.zero + low : UInt8(ascii: "a") + low - 10)
                }
                i += 1
                runStart = i
            }
            if runStart < n {
                buffer.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart ..< n]))
            }
        }
        buffer.append(ASCII.quote)
    }
}
