// JSONValue: Celerity's own JSON reader and writer.
//
// Why not Foundation: JSONSerialization and JSONDecoder read numbers into Double/Decimal,
// which truncates integers past ~38 significant digits, folds 5 and 5.0 into one value,
// and rejects the NaN, Infinity and -Infinity tokens that Python's json module writes.
// Celery task arguments must survive a round trip exactly: a 77,338-digit integer has to
// come back digit for digit, 5 and 5.0 must stay distinct (Python sees int vs float), and
// Python's NaN/Infinity/-Infinity must be readable. So numbers are kept as their literal
// text, and Celerity parses and writes JSON itself over raw UTF-8 bytes.
//
// Grammar: RFC 8259, strict, plus the bare tokens NaN, Infinity and -Infinity (as Python
// reads and writes them). Strings must be valid UTF-8 with no raw control characters;
// \uXXXX escapes combine surrogate pairs and turn lone surrogates into U+FFFD. Nesting is
// limited to 512 arrays/objects. Error offsets are 0-based byte offsets into the input.
//
// Files: this one holds the value type, its accessors and literals, and the ASCII byte
// constants; JSONParser.swift (+Strings) reads a document, JSONValue+Writing.swift writes
// one, JSONReader.swift reads chosen object members without building the rest.

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
