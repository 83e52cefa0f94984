// JSONValue: Celerity's own JSON reader and writer.
//
// Why not Foundation: JSONSerialization and JSONDecoder read numbers into Double/Decimal,
// which truncates integers past ~38 significant digits, folds 5 and 5.0 into one value,
// and rejects the NaN, Infinity and -Infinity tokens that Python's json module writes.
// Celery task arguments must survive a round trip exactly: a 77,338-digit integer has to
// come back digit for digit, 5 and 5.0 must stay distinct (Python sees int vs float), and
// Python's NaN/Infinity/-Infinity must be readable. So numbers are kept as their literal
// text, and this file parses and writes JSON itself over raw UTF-8 bytes.
//
// Grammar: RFC 8259, strict, plus the bare tokens NaN, Infinity and -Infinity (as Python
// reads and writes them). Strings must be valid UTF-8 with no raw control characters;
// \uXXXX escapes combine surrogate pairs and turn lone surrogates into U+FFFD. Nesting is
// limited to 512 arrays/objects. Error offsets are 0-based byte offsets into the input.

/// A JSON value. Numbers keep their literal text, objects keep their member order.
public enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    /// The number's literal text exactly as read, e.g. "5", "5.0", "-1e10", "NaN",
    /// "Infinity", "-Infinity". Written back verbatim.
    case number(String)
    case string(String)
    case array([JSONValue])
    /// Members in the order read (or given); duplicate keys are kept as they are.
    case object([JSONMember])
}

/// One key/value pair of a JSON object.
public struct JSONMember: Sendable, Hashable {
    public var key: String
    public var value: JSONValue

    public init(_ key: String, _ value: JSONValue) {
        self.key = key
        self.value = value
    }
}

/// A parse failure: what was expected, and the 0-based byte offset where it went wrong.
public struct JSONError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var offset: Int

    public init(message: String, offset: Int) {
        self.message = message
        self.offset = offset
    }

    public var description: String { "invalid JSON at byte \(offset): \(message)" }
}

// MARK: - Parsing

extension JSONValue {
    /// Maximum number of nested arrays/objects the parser accepts.
    static let maximumNestingDepth = 512

    /// Parses one JSON document from UTF-8 bytes. Contiguous collections ([UInt8],
    /// ArraySlice, Data, String.UTF8View of a native string, …) are read in place.
    public init(parsing bytes: some Collection<UInt8>) throws(JSONError) {
        let result = bytes.withContiguousStorageIfAvailable { buffer in
            Result { () throws(JSONError) -> JSONValue in try JSONValue.parse(buffer) }
        }
        if let result {
            self = try result.get()
        } else {
            let copy = Array(bytes)
            self = try copy.withUnsafeBufferPointer { buffer in
                Result { () throws(JSONError) -> JSONValue in try JSONValue.parse(buffer) }
            }.get()
        }
    }

    /// Parses one JSON document from a string.
    public init(parsing text: String) throws(JSONError) {
        var text = text
        self = try text.withUTF8 { buffer in
            Result { () throws(JSONError) -> JSONValue in try JSONValue.parse(buffer) }
        }.get()
    }

    static func parse(_ buffer: UnsafeBufferPointer<UInt8>) throws(JSONError) -> JSONValue {
        var parser = JSONParser(buffer)
        return try parser.parseDocument()
    }
}

enum ASCII {
    static let quote: UInt8 = 0x22        // "
    static let backslash: UInt8 = 0x5C    // \
    static let slash: UInt8 = 0x2F        // /
    static let comma: UInt8 = 0x2C        // ,
    static let colon: UInt8 = 0x3A        // :
    static let openBracket: UInt8 = 0x5B  // [
    static let closeBracket: UInt8 = 0x5D // ]
    static let openBrace: UInt8 = 0x7B    // {
    static let closeBrace: UInt8 = 0x7D   // }
    static let minus: UInt8 = 0x2D        // -
    static let plus: UInt8 = 0x2B         // +
    static let dot: UInt8 = 0x2E          // .
    static let zero: UInt8 = 0x30         // 0
    static let lowerE: UInt8 = 0x65       // e
    static let upperE: UInt8 = 0x45       // E
    static let space: UInt8 = 0x20
    static let tab: UInt8 = 0x09
    static let newline: UInt8 = 0x0A
    static let carriageReturn: UInt8 = 0x0D
}

/// An array or object being filled while the parser reads its members.
private struct OpenContainer {
    var isObject: Bool
    var elements: [JSONValue] = []
    var members: [JSONMember] = []
    var pendingKey: String = ""
}

/// Iterative (non-recursive) parser over a byte buffer, so deep input cannot exhaust the
/// stack of a small concurrency thread.
private struct JSONParser {
    let bytes: UnsafeBufferPointer<UInt8>
    let count: Int
    var index: Int = 0

    init(_ bytes: UnsafeBufferPointer<UInt8>) {
        self.bytes = bytes
        self.count = bytes.count
    }

    // MARK: errors

    func fail(_ message: String, at offset: Int) -> JSONError {
        JSONError(message: message, offset: offset)
    }

    /// "expected X" at the current index, noting when the input ran out instead.
    func expected(_ what: String) -> JSONError {
        if index >= count {
            return JSONError(message: "unexpected end of input, expected \(what)", offset: index)
        }
        return JSONError(message: "expected \(what)", offset: index)
    }

    // MARK: helpers

    @inline(__always)
    mutating func skipWhitespace() {
        while index < count {
            let c = bytes[index]
            if c == ASCII.space || c == ASCII.newline || c == ASCII.carriageReturn || c == ASCII.tab {
                index += 1
            } else {
                return
            }
        }
    }

    @inline(__always)
    func peek() -> UInt8? {
        index < count ? bytes[index] : nil
    }

    func text(_ range: Range<Int>) -> String {
        String(decoding: UnsafeBufferPointer(rebasing: bytes[range]), as: UTF8.self)
    }

    /// Consumes `word` (ASCII) at the current index or throws "expected 'word'".
    mutating func consumeLiteral(_ word: StaticString) throws(JSONError) {
        let start = index
        let length = word.utf8CodeUnitCount
        let w = word.utf8Start
        var k = 0
        while k < length {
            guard start + k < count, bytes[start + k] == w[k] else {
                index = start + k
                throw expected("'\(word)'")
            }
            k += 1
        }
        index = start + length
    }

    // MARK: document

    /// Parses one value; `whole`: it must be the entire input (else parsing stops after it).
    mutating func parseDocument(whole: Bool = true) throws(JSONError) -> JSONValue {
        var stack: [OpenContainer] = []
        var value: JSONValue

        parseValue: while true {
            skipWhitespace()
            guard index < count else { throw expected("a value") }
            let c = bytes[index]
            switch c {
            case ASCII.openBracket, ASCII.openBrace:
                guard stack.count < JSONValue.maximumNestingDepth else {
                    throw fail("nesting deeper than \(JSONValue.maximumNestingDepth) levels", at: index)
                }
                index += 1
                skipWhitespace()
                if c == ASCII.openBracket {
                    if peek() == ASCII.closeBracket {
                        index += 1
                        value = .array([])
                    } else {
                        stack.append(OpenContainer(isObject: false))
                        continue parseValue
                    }
                } else {
                    if peek() == ASCII.closeBrace {
                        index += 1
                        value = .object([])
                    } else {
                        guard peek() == ASCII.quote else { throw expected("'\"' (a string key) or '}'") }
                        let key = try parseString()
                        try parseColon()
                        stack.append(OpenContainer(isObject: true, pendingKey: key))
                        continue parseValue
                    }
                }
            case ASCII.quote:
                value = .string(try parseString())
            case ASCII.minus, ASCII.zero ... ASCII.zero + 9:
                value = try parseNumber()
            case UInt8(ascii: "t"):
                try consumeLiteral("true")
                value = .bool(true)
            case UInt8(ascii: "f"):
                try consumeLiteral("false")
                value = .bool(false)
            case UInt8(ascii: "n"):
                try consumeLiteral("null")
                value = .null
            case UInt8(ascii: "N"):
                try consumeLiteral("NaN")
                value = .number("NaN")
            case UInt8(ascii: "I"):
                try consumeLiteral("Infinity")
                value = .number("Infinity")
            default:
                throw expected("a value")
            }

            // A value is complete: hand it to the enclosing containers, closing as many as
            // the input closes, until one wants another value or the document ends.
            while true {
                guard !stack.isEmpty else {
                    skipWhitespace()
                    guard index == count || !whole else { throw expected("end of input after the JSON value") }
                    return value
                }
                let top = stack.count - 1
                skipWhitespace()
                if stack[top].isObject {
                    let key = stack[top].pendingKey
                    stack[top].members.append(JSONMember(key, value))
                    switch peek() {
                    case ASCII.comma:
                        index += 1
                        skipWhitespace()
                        guard peek() == ASCII.quote else { throw expected("'\"' (a string key)") }
                        stack[top].pendingKey = try parseString()
                        try parseColon()
                        continue parseValue
                    case ASCII.closeBrace:
                        index += 1
                        value = .object(stack.removeLast().members)
                    default:
                        throw expected("',' or '}'")
                    }
                } else {
                    stack[top].elements.append(value)
                    switch peek() {
                    case ASCII.comma:
                        index += 1
                        continue parseValue
                    case ASCII.closeBracket:
                        index += 1
                        value = .array(stack.removeLast().elements)
                    default:
                        throw expected("',' or ']'")
                    }
                }
            }
        }
    }

    mutating func parseColon() throws(JSONError) {
        skipWhitespace()
        guard peek() == ASCII.colon else { throw expected("':'") }
        index += 1
    }

    // MARK: numbers

    /// -?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)? or -Infinity; keeps the exact text.
    mutating func parseNumber() throws(JSONError) -> JSONValue {
        let start = index
        if bytes[index] == ASCII.minus {
            index += 1
            if peek() == UInt8(ascii: "I") {
                try consumeLiteral("Infinity")
                return .number("-Infinity")
            }
            guard index < count, bytes[index] &- ASCII.zero < 10 else {
                throw expected("a digit or 'Infinity' after '-'")
            }
        }
        if bytes[index] == ASCII.zero {
            index += 1
            if index < count, bytes[index] &- ASCII.zero < 10 {
                throw fail("leading zeros are not allowed in numbers", at: index)
            }
        } else {
            skipDigits()
        }
        if index < count, bytes[index] == ASCII.dot {
            index += 1
            guard index < count, bytes[index] &- ASCII.zero < 10 else {
                throw expected("a digit after '.'")
            }
            skipDigits()
        }
        if index < count, bytes[index] == ASCII.lowerE || bytes[index] == ASCII.upperE {
            index += 1
            if index < count, bytes[index] == ASCII.plus || bytes[index] == ASCII.minus {
                index += 1
            }
            guard index < count, bytes[index] &- ASCII.zero < 10 else {
                throw expected("a digit in the exponent")
            }
            skipDigits()
        }
        return .number(text(start ..< index))
    }

    @inline(__always)
    mutating func skipDigits() {
        while index < count, bytes[index] &- ASCII.zero < 10 {
            index += 1
        }
    }

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

// MARK: - Convenience

extension JSONValue {
    /// An integer number, e.g. `.int(42)` is `.number("42")`.
    public static func int(_ v: Int) -> JSONValue {
        .number(String(v))
    }

    /// A float number in its shortest round-trip text, always reading back as a float:
    /// 5.0 -> "5.0", 1e300 -> "1e+300", nan -> "NaN", inf -> "Infinity", -inf -> "-Infinity".
    public static func double(_ v: Double) -> JSONValue {
        if v.isNaN { return .number("NaN") }
        if v.isInfinite { return .number(v < 0 ? "-Infinity" : "Infinity") }
        var text = v.description  // shortest digits that round-trip, e.g. "5.0", "1e-05"
        if !text.utf8.contains(where: { $0 == ASCII.dot || $0 == ASCII.lowerE || $0 == ASCII.upperE }) {
            text += ".0"
        }
        return .number(text)
    }

    /// The value of an integer literal that fits in `Int`; nil for anything else
    /// (including "5.0" and "1e3").
    public var intValue: Int? {
        guard case .number(let text) = self, isIntegerLiteral else { return nil }
        return Int(text)
    }

    /// The value of any number literal as a Double (NaN/Infinity included; integers too
    /// large for Double give ±infinity).
    public var doubleValue: Double? {
        guard case .number(let text) = self else { return nil }
        switch text {
        case "NaN": return .nan
        case "Infinity": return .infinity
        case "-Infinity": return -.infinity
        default: return Double(text)
        }
    }

    /// True for a number whose text has no '.', 'e' or 'E' and is not NaN/Infinity.
    public var isIntegerLiteral: Bool {
        guard case .number(let text) = self else { return false }
        if text == "NaN" || text == "Infinity" || text == "-Infinity" { return false }
        return !text.utf8.contains { $0 == ASCII.dot || $0 == ASCII.lowerE || $0 == ASCII.upperE }
    }

    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    public var boolValue: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }

    public var arrayValue: [JSONValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    public var objectValue: [JSONMember]? {
        if case .object(let members) = self { return members }
        return nil
    }

    /// The value of the first member named `key`; nil if absent or if this is not an object.
    public subscript(key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        return members.first { $0.key == key }?.value
    }

    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }
}

// MARK: - Literals

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral,
    ExpressibleByBooleanLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral,
    ExpressibleByNilLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .int(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    /// Members keep the literal's order.
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(elements.map { JSONMember($0.0, $0.1) })
    }
    public init(nilLiteral: ()) { self = .null }
}

extension JSONValue: CustomStringConvertible {
    public var description: String { serialized() }
}

// MARK: - Reading selected members without building the rest

/// The key of an object member, as bytes of the input (keys with escapes are decoded).
struct JSONKey {
    fileprivate let bytes: UnsafeBufferPointer<UInt8>
    fileprivate let range: Range<Int>
    fileprivate let decoded: String?

    /// Whether the key is exactly `name` (ASCII).
    func `is`(_ name: StaticString) -> Bool {
        if let decoded { return decoded == name.description }
        guard range.count == name.utf8CodeUnitCount else { return false }
        let p = name.utf8Start
        var i = 0
        for b in range { if bytes[b] != p[i] { return false }; i += 1 }
        return true
    }
}

/// Walks JSON objects member by member: the caller builds the values it wants and skips the
/// others, which are still checked (structure, strings, UTF-8, numbers) but never built.
/// Why: the worker reads a handful of a task envelope's ~30 fields; building all of them was
/// a third of its CPU time per task (profiled with perf).
struct JSONReader {
    private var p: JSONParser

    /// Reads `bytes`, which must hold one JSON object, calling `member` for each member.
    static func readObject(_ bytes: UnsafeBufferPointer<UInt8>, _ member: (JSONKey, inout JSONReader) throws(JSONError) -> Void) throws(JSONError) {
        var r = JSONReader(p: JSONParser(bytes))
        try r.object(member)
        r.p.skipWhitespace()
        guard r.p.index == r.p.count else { throw r.p.expected("end of input after the JSON value") }
    }

    /// True when the next value is `null` (not consumed).
    mutating func isNull() -> Bool {
        p.skipWhitespace()
        return p.peek() == UInt8(ascii: "n")
    }

    /// Builds the next value.
    mutating func value() throws(JSONError) -> JSONValue {
        try p.parseDocument(whole: false)
    }

    /// Reads the next value, which must be an object, member by member.
    mutating func object(_ member: (JSONKey, inout JSONReader) throws(JSONError) -> Void) throws(JSONError) {
        p.skipWhitespace()
        guard p.peek() == ASCII.openBrace else { throw p.expected("'{'") }
        p.index += 1
        p.skipWhitespace()
        if p.peek() == ASCII.closeBrace { p.index += 1; return }
        while true {
            p.skipWhitespace()
            guard p.peek() == ASCII.quote else { throw p.expected("'\"' (a string key)") }
            let open = p.index
            p.index += 1
            let start = p.index
            try p.scanRun(open: open)
            let key: JSONKey
            if p.bytes[p.index] == ASCII.quote {
                key = JSONKey(bytes: p.bytes, range: start ..< p.index, decoded: nil)
                p.index += 1
            } else {
                p.index = open
                key = JSONKey(bytes: p.bytes, range: 0 ..< 0, decoded: try p.parseString())
            }
            try p.parseColon()
            p.skipWhitespace()
            let before = p.index
            try member(key, &self)
            if p.index == before { try skip() }   // the caller did not want it
            p.skipWhitespace()
            switch p.peek() {
            case ASCII.comma: p.index += 1
            case ASCII.closeBrace: p.index += 1; return
            default: throw p.expected("',' or '}'")
            }
        }
    }

    /// Checks and passes over the next value without building it.
    mutating func skip() throws(JSONError) {
        var open: [Bool] = []   // the enclosing containers: true for an object
        while true {
            p.skipWhitespace()
            guard p.index < p.count else { throw p.expected("a value") }
            let c = p.bytes[p.index]
            switch c {
            case ASCII.openBracket, ASCII.openBrace:
                guard open.count < JSONValue.maximumNestingDepth else { throw p.fail("nesting deeper than \(JSONValue.maximumNestingDepth) levels", at: p.index) }
                p.index += 1
                p.skipWhitespace()
                if c == ASCII.openBrace {
                    if p.peek() == ASCII.closeBrace { p.index += 1; break }
                    try skipKey()
                    open.append(true)
                } else {
                    if p.peek() == ASCII.closeBracket { p.index += 1; break }
                    open.append(false)
                }
                continue
            case ASCII.quote:
                try skipString()
            case ASCII.minus, ASCII.zero ... ASCII.zero + 9:
                _ = try p.parseNumber()
            case UInt8(ascii: "t"): try p.consumeLiteral("true")
            case UInt8(ascii: "f"): try p.consumeLiteral("false")
            case UInt8(ascii: "n"): try p.consumeLiteral("null")
            case UInt8(ascii: "N"): try p.consumeLiteral("NaN")
            case UInt8(ascii: "I"): try p.consumeLiteral("Infinity")
            default: throw p.expected("a value")
            }
            // A value is done: close containers, or go on to the next element or member.
            while let isObject = open.last {
                p.skipWhitespace()
                let d = p.peek()
                if d == (isObject ? ASCII.closeBrace : ASCII.closeBracket) {
                    p.index += 1
                    open.removeLast()
                    continue
                }
                guard d == ASCII.comma else { throw p.expected(isObject ? "',' or '}'" : "',' or ']'") }
                p.index += 1
                if isObject { try skipKey() }
                break
            }
            if open.isEmpty { return }
        }
    }

    private mutating func skipKey() throws(JSONError) {
        p.skipWhitespace()
        guard p.peek() == ASCII.quote else { throw p.expected("'\"' (a string key)") }
        try skipString()
        try p.parseColon()
    }

    private mutating func skipString() throws(JSONError) {
        let open = p.index
        p.index += 1
        try p.scanRun(open: open)
        if p.bytes[p.index] == ASCII.quote { p.index += 1; return }
        p.index = open
        _ = try p.parseString()
    }
}
