import Foundation

/// Python's `repr` of JSON values, as Celery's events carry arguments, results and exceptions
/// (`saferepr(args)`, `saferepr(retval)`, `safe_repr(exc)`: strings for monitors to show).
/// Cut at `maxSize` characters (Celery's `argsrepr_maxsize` / `resultrepr_maxsize`: 1024),
/// with "..." in place of the rest.
enum PythonRepr {
    static let maxSize = 1024

    /// `repr(value)`: `None`, `True`, `3`, `2.5`, `'text'`, `[1, 'a']`, `{'k': None}`.
    static func of(_ value: JSONValue, maxSize: Int = maxSize) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(16)
        write(value, into: &out, budget: maxSize)
        return cut(out, maxSize)
    }

    /// `repr(list(args))`, as a Python worker shows a message's positional arguments.
    static func args(_ args: [JSONValue]) -> String { of(.array(args)) }

    /// `repr(tuple(items))`: `(1, 'a')`, `(1,)`, `()`.
    static func tuple(_ items: [JSONValue], maxSize: Int = maxSize) -> String {
        var out: [UInt8] = [UInt8(ascii: "(")]
        out.reserveCapacity(16)
        for (i, item) in items.enumerated() {
            if i > 0 { out.append(contentsOf: ", ".utf8) }
            write(item, into: &out, budget: maxSize)
            if out.count > maxSize { break }
        }
        if items.count == 1 { out.append(ASCII.comma) }
        out.append(UInt8(ascii: ")"))
        return cut(out, maxSize)
    }

    /// `repr(kwargs)`.
    static func kwargs(_ kwargs: [JSONMember]) -> String { of(.object(kwargs)) }

    /// `repr(exc)` of the exception a failure stands for: `ValueError('kaput')`, `KeyError()`.
    static func exception(type: String, message: String) -> String {
        guard !message.isEmpty else { return type + "()" }
        var out = Array(type.utf8)
        out.append(UInt8(ascii: "("))
        writeString(message, into: &out)
        out.append(UInt8(ascii: ")"))
        return cut(out, maxSize)
    }

    /// `of(value)` as a JSON string, written straight into `out` (an event's args, kwargs and
    /// result): no String in between, and nothing to escape but the `"` and `\` the repr holds
    /// (a repr has no control characters: it escapes them itself).
    static func writeJSONString(_ value: JSONValue, into out: inout [UInt8], maxSize: Int = maxSize) {
        let start = out.count
        out.append(ASCII.quote)
        let from = out.count
        write(value, into: &out, budget: from + maxSize)
        if out.count - from > maxSize {
            let text = cut(Array(out[from...]), maxSize)
            out.removeSubrange(start...)
            JSONValue.writeString(text, into: &out)
            return
        }
        let end = out.count
        let specials = out.withUnsafeBufferPointer { b in
            var n = 0
            for i in from..<end where b[i] == ASCII.quote || b[i] == ASCII.backslash { n += 1 }
            return n
        }
        if specials > 0 {
            // Escape in place, from the end: each `"` or `\` gains a backslash before it.
            out.append(contentsOf: repeatElement(0, count: specials))
            out.withUnsafeMutableBufferPointer { b in
                var to = end + specials
                var i = end
                while i > from {
                    i -= 1
                    to -= 1
                    let c = b[i]
                    b[to] = c
                    if c == ASCII.quote || c == ASCII.backslash {
                        to -= 1
                        b[to] = ASCII.backslash
                    }
                }
            }
        }
        out.append(ASCII.quote)
    }

    /// `text` cut as a repr is (at most `maxSize` bytes, "..." at the end): a repr a sender wrote.
    static func clip(_ text: String) -> String {
        text.utf8.count <= maxSize ? text : cut(Array(text.utf8), maxSize)
    }

    private static func cut(_ out: [UInt8], _ maxSize: Int) -> String {
        if out.count <= maxSize { return String(decoding: out, as: UTF8.self) }
        // Cut on a character boundary (never inside a UTF-8 sequence).
        var end = maxSize - 3
        while end > 0 && out[end] & 0xC0 == 0x80 { end -= 1 }
        return String(decoding: out[..<end], as: UTF8.self) + "..."
    }

    /// Writes until `out` holds more than `budget` bytes (the rest would be cut anyway).
    static func write(_ value: JSONValue, into out: inout [UInt8], budget: Int) {
        guard out.count <= budget else { return }
        switch value {
        case .null: out.append(contentsOf: "None".utf8)
        case let .bool(b): out.append(contentsOf: (b ? "True" : "False").utf8)
        case let .number(text): writeNumber(text, into: &out)
        case let .string(s): writeString(s, into: &out)
        case let .array(items):
            out.append(UInt8(ascii: "["))
            for (i, item) in items.enumerated() {
                if i > 0 { out.append(contentsOf: ", ".utf8) }
                write(item, into: &out, budget: budget)
                if out.count > budget { return }
            }
            out.append(UInt8(ascii: "]"))
        case let .object(members):
            out.append(UInt8(ascii: "{"))
            for (i, m) in members.enumerated() {
                if i > 0 { out.append(contentsOf: ", ".utf8) }
                writeString(m.key, into: &out)
                out.append(contentsOf: ": ".utf8)
                write(m.value, into: &out, budget: budget)
                if out.count > budget { return }
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    /// Whether `writeNumber` writes this number as it is (an integer, any size).
    static func isInteger(_ text: String) -> Bool {
        var text = text
        return text.withUTF8 { b in
            !b.contains { $0 == ASCII.dot || $0 == ASCII.lowerE || $0 == ASCII.upperE || $0 == UInt8(ascii: "N") || $0 == UInt8(ascii: "I") }
        }
    }

    /// Integers as written (any size); floats as Python prints them (`1e10` is `10000000000.0`,
    /// `NaN` is `nan`): Swift's shortest round-trip form is Python's for finite doubles.
    static func writeNumber(_ text: String, into out: inout [UInt8]) {
        guard !isInteger(text) else {
            out.append(contentsOf: text.utf8)
            return
        }
        switch text {
        case "NaN": out.append(contentsOf: "nan".utf8)
        case "Infinity": out.append(contentsOf: "inf".utf8)
        case "-Infinity": out.append(contentsOf: "-inf".utf8)
        default:
            guard let d = Double(text) else { out.append(contentsOf: text.utf8); return }
            if d.isInfinite { out.append(contentsOf: (d < 0 ? "-inf" : "inf").utf8); return }
            out.append(contentsOf: d.description.utf8)
        }
    }

    /// A Python string literal: single quotes unless the text has one and no double quote;
    /// backslash escapes for the quote, `\`, tab, newline, carriage return and other controls.
    static func writeString(_ s: String, into out: inout [UInt8]) {
        let utf8 = s.utf8
        let quote: UInt8 = utf8.contains(UInt8(ascii: "'")) && !utf8.contains(UInt8(ascii: "\"")) ? UInt8(ascii: "\"") : UInt8(ascii: "'")
        out.append(quote)
        for scalar in s.unicodeScalars {
            let v = scalar.value
            switch v {
            case UInt32(quote), 0x5C:
                out.append(ASCII.backslash)
                out.append(UInt8(v))
            case 0x09: out.append(contentsOf: "\\t".utf8)
            case 0x0A: out.append(contentsOf: "\\n".utf8)
            case 0x0D: out.append(contentsOf: "\\r".utf8)
            case 0..<0x20, 0x7F..<0xA0:
                out.append(contentsOf: "\\x".utf8)
                out.append(hexDigit(v >> 4))
                out.append(hexDigit(v & 0xF))
            case 0..<0x80:
                out.append(UInt8(v))
            default:
                out.append(contentsOf: UTF8.encode(scalar)!)
            }
        }
        out.append(quote)
    }

    private static func hexDigit(_ v: UInt32) -> UInt8 {
        UInt8(truncatingIfNeeded: v < 10 ? 0x30 + v : 0x57 + v)
    }
}

/// A repr field of a task event (args, kwargs, result) as a JSON string, chosen and measured
/// before the event is written through a `ByteCursor`: the usual ones (a message's `argsrepr`
/// header, an integer, None) without a byte array in between.
enum ReprText {
    /// Text to escape into a JSON string (a header's `argsrepr`, as the sender wrote it).
    case escaped(String)
    /// An integer's digits, written between quotes as they are (nothing to escape).
    case integer(String)
    /// A JSON string literal, quotes included (`"None"`, `"{}"`).
    case literal(StaticString)
    /// `PythonRepr.writeJSONString`'s bytes, quotes included.
    case written([UInt8])

    /// `repr(value)`, cut at `PythonRepr.maxSize`.
    init(_ value: JSONValue) {
        switch value {
        case .null: self = .literal(#""None""#)
        case let .bool(b): self = .literal(b ? #""True""# : #""False""#)
        case let .number(text) where text.utf8.count <= PythonRepr.maxSize && Self.isDigits(text): self = .integer(text)
        default:
            var out: [UInt8] = []
            PythonRepr.writeJSONString(value, into: &out)
            self = .written(out)
        }
    }

    /// Only `-` and digits (an integer's text: nothing in it to escape).
    private static func isDigits(_ text: String) -> Bool {
        var text = text
        return text.withUTF8 { b in !b.isEmpty && b.allSatisfy { $0 == ASCII.minus || ($0 >= ASCII.zero && $0 <= ASCII.zero + 9) } }
    }

    /// The most bytes `put` writes.
    var bound: Int {
        switch self {
        case let .escaped(s): ByteCursor.bound(s)
        case let .integer(s): s.utf8.count + 2
        case let .literal(s): s.utf8CodeUnitCount
        case let .written(b): b.count
        }
    }

    /// Into a compact record (`EventWire.putCompact` writes it out as `put` would).
    func putField(into c: inout ByteCursor) {
        switch self {
        case let .escaped(s): EventWire.putField(EventWire.Field.escape, s, into: &c)
        case let .integer(s): EventWire.putField(EventWire.Field.quote, s, into: &c)
        case let .literal(s): s.withUTF8Buffer { c.putField(EventWire.Field.json, $0) }
        case let .written(b): b.withUnsafeBufferPointer { c.putField(EventWire.Field.json, $0) }
        }
    }

    func put(into c: inout ByteCursor) {
        switch self {
        case let .escaped(s): c.putJSONString(s)
        case let .integer(s):
            c.put(ASCII.quote)
            var s = s
            s.withUTF8 { c.put($0) }
            c.put(ASCII.quote)
        case let .literal(s): c.put(s)
        case let .written(b): c.put(b)
        }
    }
}
