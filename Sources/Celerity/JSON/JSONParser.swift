// JSONParser: reads one JSON document (the grammar is in JSONValue.swift's header) into a
// JSONValue, iteratively over raw UTF-8 bytes: the document loop, literals and numbers.
// Strings (UTF-8 checks, escapes) are in JSONParser+Strings.swift.

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

/// An array or object being filled while the parser reads its members.
private struct OpenContainer {
    var isObject: Bool
    var elements: [JSONValue] = []
    var members: [JSONMember] = []
    var pendingKey: String = ""
}

/// Iterative (non-recursive) parser over a byte buffer, so deep input cannot exhaust the
/// stack of a small concurrency thread.
struct JSONParser {
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
}
