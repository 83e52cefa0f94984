// JSONReader: walks a JSON object member by member over the parser, building only the
// members the caller asks for and checking-but-skipping the rest.

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
