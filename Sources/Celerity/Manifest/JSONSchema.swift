// JSONSchema: the subset of JSON Schema that task argument schemas use (`params:` in
// tasks.yaml and in a plugin's `describe`), read once into a form that validates without
// allocating on success.
//
// Keywords: type (string | integer | number | boolean | array | object | null, or a list),
// enum, const, minimum, maximum, exclusiveMinimum, exclusiveMaximum, minLength, maxLength,
// pattern, items, minItems, maxItems, properties, required, additionalProperties; the
// annotations default, description, title, examples, format and $comment are accepted and
// do not constrain. Any other keyword is an error (a typo must not silently accept
// everything). A bare type name is shorthand: `integer` == `{type: integer}`; `true` accepts
// anything, `false` nothing.
//
// Numbers are compared exactly on their literal text (`ExactNumber`), so bounds hold for
// integers of any size; "integer" accepts an integer literal or a float with an integral
// value (5.0, 1e3), as JSON Schema says; a boolean is never a number.

import Foundation

/// The JSON types a schema's `type` may name.
public struct JSONTypes: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let string = JSONTypes(rawValue: 1)
    public static let integer = JSONTypes(rawValue: 2)
    public static let number = JSONTypes(rawValue: 4)
    public static let boolean = JSONTypes(rawValue: 8)
    public static let array = JSONTypes(rawValue: 16)
    public static let object = JSONTypes(rawValue: 32)
    public static let null = JSONTypes(rawValue: 64)

    /// In the order names are listed in messages.
    static let named: [(String, JSONTypes)] = [("string", .string), ("integer", .integer), ("number", .number), ("boolean", .boolean),
                                               ("array", .array), ("object", .object), ("null", .null)]
    public static func named(_ name: String) -> JSONTypes? { named.first { $0.0 == name }?.1 }
    /// "integer", or "integer or string" for several.
    public var names: [String] { Self.named.filter { contains($0.1) }.map(\.0) }
}

/// A schema problem found while reading one: `path` names the keyword, e.g.
/// "params.times.minimum must be a number".
public struct SchemaError: Error, Sendable, CustomStringConvertible, Hashable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// One schema, read and checked (see the file's header for the keywords).
public struct JSONSchema: Sendable, Hashable {
    /// The schema in JSON Schema's own form (shorthand expanded), for `describe --json`.
    public private(set) var json: JSONValue
    /// nil: any type.
    public private(set) var types: JSONTypes?
    public private(set) var enumValues: [JSONValue]?
    public private(set) var constValue: JSONValue?
    public private(set) var minimum: Bound?
    public private(set) var maximum: Bound?
    public private(set) var exclusiveMinimum: Bound?
    public private(set) var exclusiveMaximum: Bound?
    public private(set) var minLength: Int?
    public private(set) var maxLength: Int?
    public private(set) var pattern: Pattern?
    private var itemsBox: [JSONSchema] = []
    public var items: JSONSchema? { itemsBox.first }
    public private(set) var minItems: Int?
    public private(set) var maxItems: Int?
    /// `properties`, in the order given.
    public private(set) var properties: [Property] = []
    public private(set) var required: [String] = []
    public private(set) var additionalProperties: Additional = .allowed
    /// The `default` annotation (a parameter with one is optional).
    public private(set) var defaultValue: JSONValue?
    public private(set) var summary: String?
    /// `false`: nothing is accepted.
    public private(set) var acceptsNothing = false
    /// Set when `type` is the only constraint (the usual parameter): checked on its own.
    private var typeOnly: JSONTypes?

    public struct Property: Sendable, Hashable {
        public var name: String
        public var schema: JSONSchema
    }

    public enum Additional: Sendable, Hashable {
        case allowed, forbidden
        case schema([JSONSchema])   // one element (an array, so the enum may hold a schema)
    }

    /// A numeric bound, exact: its literal text and its value.
    public struct Bound: Sendable, Hashable {
        public var text: String
        var exact: ExactNumber
        /// The value when it is an integer that fits in Int (a fast comparison for most calls).
        var int: Int?
    }

    /// A `pattern`: its text and the compiled regex (searched, not anchored).
    public struct Pattern: Sendable, Hashable {
        public var text: String
        let regex: RegexBox
        public static func == (a: Pattern, b: Pattern) -> Bool { a.text == b.text }
        public func hash(into h: inout Hasher) { h.combine(text) }
    }

    /// Accepts anything.
    public static let any = JSONSchema(json: .object([]))
    private init(json: JSONValue) { self.json = json }

    public static let keywords: Set<String> = ["type", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                                               "minLength", "maxLength", "pattern", "items", "minItems", "maxItems", "properties",
                                               "required", "additionalProperties"]
    public static let annotations: Set<String> = ["default", "description", "title", "examples", "format", "$comment"]

    /// Reads a schema; `path` names it in errors ("params.times").
    public static func parse(_ v: JSONValue, path: String) throws(SchemaError) -> JSONSchema {
        switch v {
        case let .string(name):
            guard let t = JSONTypes.named(name) else {
                throw SchemaError("\(path): unknown type '\(name)' (known: \(JSONTypes.named.map(\.0).joined(separator: ", ")))\(Self.suggestion(name, among: JSONTypes.named.map(\.0)))")
            }
            var s = JSONSchema(json: .object([JSONMember("type", .string(name))]))
            s.types = t
            s.typeOnly = t
            return s
        case let .bool(b):
            var s = JSONSchema(json: .bool(b))
            s.acceptsNothing = !b
            return s
        case let .object(members):
            return try parseObject(members, path: path)
        default:
            throw SchemaError("\(path) must be a schema (a mapping such as {type: integer}) or a type name, found \(Self.describe(v))")
        }
    }

    private static func parseObject(_ members: [JSONMember], path: String) throws(SchemaError) -> JSONSchema {
        var s = JSONSchema(json: .object(members))
        var seen = Set<String>()
        var json: [JSONMember] = []
        for m in members {
            let (k, v) = (m.key, m.value)
            let at = "\(path).\(k)"
            guard seen.insert(k).inserted else { throw SchemaError("\(path): duplicate keyword '\(k)'") }
            var out = v
            switch k {
            case "type":
                var set = JSONTypes()
                let names: [JSONValue]
                if case .array(let list) = v { names = list } else { names = [v] }
                if names.isEmpty { throw SchemaError("\(at) must name at least one type") }
                for n in names {
                    guard case let .string(name) = n else { throw SchemaError("\(at) must be a type name or a list of them, found \(describe(n))") }
                    guard let t = JSONTypes.named(name) else {
                        throw SchemaError("\(at): unknown type '\(name)' (known: \(JSONTypes.named.map(\.0).joined(separator: ", ")))\(suggestion(name, among: JSONTypes.named.map(\.0)))")
                    }
                    set.insert(t)
                }
                s.types = set
            case "enum":
                guard case let .array(list) = v, !list.isEmpty else { throw SchemaError("\(at) must be a non-empty list of values") }
                s.enumValues = list
            case "const":
                s.constValue = v
            case "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum":
                guard case let .number(text) = v, let exact = ExactNumber(text), !exact.isNaN else { throw SchemaError("\(at) must be a number") }
                let b = Bound(text: text, exact: exact, int: v.intValue)
                switch k {
                case "minimum": s.minimum = b
                case "maximum": s.maximum = b
                case "exclusiveMinimum": s.exclusiveMinimum = b
                default: s.exclusiveMaximum = b
                }
            case "minLength", "maxLength", "minItems", "maxItems":
                guard let n = v.intValue, n >= 0 else { throw SchemaError("\(at) must be a non-negative integer") }
                switch k {
                case "minLength": s.minLength = n
                case "maxLength": s.maxLength = n
                case "minItems": s.minItems = n
                default: s.maxItems = n
                }
            case "pattern":
                guard case let .string(text) = v else { throw SchemaError("\(at) must be a string (a regular expression)") }
                do {
                    let r = try Regex(text)
                    _ = "".contains(r)   // compiled now, not on a worker's first call
                    s.pattern = Pattern(text: text, regex: RegexBox(r))
                } catch {
                    throw SchemaError("\(at): '\(text)' is not a valid regular expression: \(error)")
                }
            case "items":
                let item = try parse(v, path: "\(at)")
                s.itemsBox = [item]
                out = item.json
            case "properties":
                guard case let .object(props) = v else { throw SchemaError("\(at) must be a mapping of property names to schemas") }
                var names = Set<String>()
                var outProps: [JSONMember] = []
                for p in props {
                    guard names.insert(p.key).inserted else { throw SchemaError("\(at): duplicate property '\(p.key)'") }
                    let ps = try parse(p.value, path: "\(at).\(p.key)")
                    s.properties.append(Property(name: p.key, schema: ps))
                    outProps.append(JSONMember(p.key, ps.json))
                }
                out = .object(outProps)
            case "required":
                guard case let .array(list) = v else { throw SchemaError("\(at) must be a list of property names") }
                for n in list {
                    guard case let .string(name) = n else { throw SchemaError("\(at) must be a list of property names, found \(describe(n)) in it") }
                    s.required.append(name)
                }
            case "additionalProperties":
                if case let .bool(b) = v { s.additionalProperties = b ? .allowed : .forbidden } else {
                    let a = try parse(v, path: at)
                    s.additionalProperties = .schema([a])
                    out = a.json
                }
            case "default":
                s.defaultValue = v
            case "description", "title":
                guard case let .string(text) = v else { throw SchemaError("\(at) must be a string") }
                if k == "description" || s.summary == nil { s.summary = text }
            case "examples", "format", "$comment":
                break
            default:
                let known = keywords.union(annotations)
                throw SchemaError("\(path): unknown keyword '\(k)'\(suggestion(k, among: Array(known)))"
                                  + " (allowed: \(keywords.sorted().joined(separator: ", ")); annotations: \(annotations.sorted().joined(separator: ", ")))")
            }
            json.append(JSONMember(k, out))
        }
        if let lo = s.minimum, let hi = s.maximum, lo.exact > hi.exact {
            throw SchemaError("\(path): minimum \(lo.text) is above maximum \(hi.text): no value can pass")
        }
        if let lo = s.minLength, let hi = s.maxLength, lo > hi { throw SchemaError("\(path): minLength \(lo) is above maxLength \(hi)") }
        if let lo = s.minItems, let hi = s.maxItems, lo > hi { throw SchemaError("\(path): minItems \(lo) is above maxItems \(hi)") }
        s.json = .object(json)
        if let t = s.types {
            var bare = s
            bare.types = nil
            bare.defaultValue = nil
            bare.summary = nil
            if bare.isUnconstrained { s.typeOnly = t }
        }
        return s
    }

    // MARK: - Validation

    /// Where a bad value sits below the value checked: `[2][0]`, `.name`.
    enum Step: Sendable {
        case index(Int)
        case key(String)
    }

    /// The first problem with `v`, or nil when it passes: what is wrong, and the steps from
    /// `v` down to the bad value (innermost last). Nothing is allocated when it passes.
    func problem(_ v: JSONValue) -> (steps: [Step], message: String)? {
        if let typeOnly {
            return Self.matches(v, typeOnly) ? nil : ([], "expected \(typeOnly.names.joined(separator: " or ")), got \(Self.describe(v))")
        }
        if acceptsNothing { return ([], "no value is allowed here, got \(Self.describe(v))") }
        if let types, !Self.matches(v, types) {
            return ([], "expected \(types.names.joined(separator: " or ")), got \(Self.describe(v))")
        }
        if let constValue, !Self.equal(v, constValue) {
            return ([], "must be \(constValue.serialized().prefix(60)), got \(Self.describe(v))")
        }
        if let enumValues, !enumValues.contains(where: { Self.equal(v, $0) }) {
            let list = enumValues.map { String($0.serialized().prefix(40)) }.joined(separator: ", ")
            return ([], "must be one of \(list), got \(Self.describe(v))")
        }
        switch v {
        case let .number(text):
            if minimum != nil || maximum != nil || exclusiveMinimum != nil || exclusiveMaximum != nil {
                if let m = numberProblem(text, v) { return ([], m) }
            }
        case let .string(s):
            if minLength != nil || maxLength != nil {
                let n = s.unicodeScalars.count
                if let lo = minLength, n < lo { return ([], "must have at least \(lo) character\(lo == 1 ? "" : "s"), got \(Self.describe(v))") }
                if let hi = maxLength, n > hi { return ([], "must have at most \(hi) character\(hi == 1 ? "" : "s"), got \(n)") }
            }
            if let pattern, !s.contains(pattern.regex.regex) {
                return ([], "must match the pattern '\(pattern.text)', got \(Self.describe(v))")
            }
        case let .array(list):
            if let lo = minItems, list.count < lo { return ([], "must have at least \(lo) item\(lo == 1 ? "" : "s"), got \(list.count)") }
            if let hi = maxItems, list.count > hi { return ([], "must have at most \(hi) item\(hi == 1 ? "" : "s"), got \(list.count)") }
            if let item = itemsBox.first {
                for (i, x) in list.enumerated() {
                    if var p = item.problem(x) {
                        p.steps.append(.index(i))
                        return p
                    }
                }
            }
        case let .object(members):
            for r in required where !members.contains(where: { $0.key == r }) {
                return ([], "missing required property '\(r)'")
            }
            if properties.isEmpty, case .allowed = additionalProperties { break }
            for m in members {
                let sub: JSONSchema?
                if let p = properties.first(where: { $0.name == m.key }) { sub = p.schema } else {
                    switch additionalProperties {
                    case .allowed: sub = nil
                    case .forbidden:
                        let known = properties.map { "'\($0.name)'" }.joined(separator: ", ")
                        return ([], "unexpected property '\(m.key)'" + (known.isEmpty ? " (no properties allowed)" : " (allowed: \(known))"))
                    case let .schema(s): sub = s.first
                    }
                }
                if let sub, var p = sub.problem(m.value) {
                    p.steps.append(.key(m.key))
                    return p
                }
            }
        default:
            break
        }
        return nil
    }

    private func numberProblem(_ text: String, _ v: JSONValue) -> String? {
        // Most calls: integers that fit in Int against integer bounds.
        let i = v.intValue
        func below(_ b: Bound, orEqual: Bool) -> Bool {
            if let i, let bi = b.int { return orEqual ? i <= bi : i < bi }
            guard let x = ExactNumber(text), !x.isNaN else { return true }
            return orEqual ? x <= b.exact : x < b.exact
        }
        func above(_ b: Bound, orEqual: Bool) -> Bool {
            if let i, let bi = b.int { return orEqual ? i >= bi : i > bi }
            guard let x = ExactNumber(text), !x.isNaN else { return true }
            return orEqual ? x >= b.exact : x > b.exact
        }
        let shown = text.count > 40 ? "\(text.prefix(20))…(\(text.count) digits)" : text
        if let b = minimum, below(b, orEqual: false) { return "must be ≥ \(b.text), got \(shown)" }
        if let b = exclusiveMinimum, below(b, orEqual: true) { return "must be > \(b.text), got \(shown)" }
        if let b = maximum, above(b, orEqual: false) { return "must be ≤ \(b.text), got \(shown)" }
        if let b = exclusiveMaximum, above(b, orEqual: true) { return "must be < \(b.text), got \(shown)" }
        return nil
    }

    static func matches(_ v: JSONValue, _ types: JSONTypes) -> Bool {
        switch v {
        case .null: return types.contains(.null)
        case .bool: return types.contains(.boolean)
        case .string: return types.contains(.string)
        case .array: return types.contains(.array)
        case .object: return types.contains(.object)
        case let .number(text):
            if types.contains(.number) { return true }
            guard types.contains(.integer) else { return false }
            if v.isIntegerLiteral { return true }
            // A float with an integral value (5.0, 1e3) is an integer to JSON Schema.
            guard let x = ExactNumber(text) else { return false }
            return x.isIntegral
        }
    }

    /// JSON equality as JSON Schema has it: numbers by value (5 == 5.0), objects whatever
    /// their member order.
    static func equal(_ a: JSONValue, _ b: JSONValue) -> Bool {
        switch (a, b) {
        case let (.number(x), .number(y)):
            if x == y { return true }
            guard let ex = ExactNumber(x), let ey = ExactNumber(y), !ex.isNaN, !ey.isNaN else { return false }
            return ex == ey
        case let (.array(x), .array(y)):
            return x.count == y.count && zip(x, y).allSatisfy { equal($0, $1) }
        case let (.object(x), .object(y)):
            return x.count == y.count && x.allSatisfy { m in y.contains { $0.key == m.key && equal($0.value, m.value) } }
        default:
            return a == b
        }
    }

    /// `string "x"`, `integer 5`, `number 2.5`, `boolean true`, `null`, `array of 3 items`, `object`.
    static func describe(_ v: JSONValue) -> String {
        switch v {
        case .null: return "null"
        case let .bool(b): return "boolean \(b)"
        case let .number(t):
            let shown = t.count > 40 ? "\(t.prefix(20))…(\(t.count) digits)" : t
            return (v.isIntegerLiteral ? "integer " : "number ") + shown
        case let .string(s):
            let cut = s.unicodeScalars.count > 40 ? String(String.UnicodeScalarView(s.unicodeScalars.prefix(40))) + "…" : s
            return "string " + JSONValue.string(cut).serialized()
        case let .array(a): return "array of \(a.count) item\(a.count == 1 ? "" : "s")"
        case .object: return "object"
        }
    }

    /// " (did you mean 'minimum'?)" for a near miss, else "".
    static func suggestion(_ word: String, among candidates: [String]) -> String {
        guard let best = closeNames(word, among: candidates).first else { return "" }
        return " (did you mean '\(best)'?)"
    }

    /// Candidates within a small edit distance of `word` (case-insensitive), closest first;
    /// also those containing it or contained in it.
    public static func closeNames(_ word: String, among candidates: [String], limit: Int = 5) -> [String] {
        let w = Array(word.lowercased())
        let scored: [(String, Int)] = candidates.compactMap { c in
            let lc = c.lowercased()
            let d = editDistance(w, Array(lc))
            let tolerance = max(1, min(3, w.count / 4))
            if d <= tolerance { return (c, d) }
            if !w.isEmpty && w.count >= 3 && (lc.contains(word.lowercased()) || word.lowercased().contains(lc)) { return (c, tolerance + 1) }
            return nil
        }
        return scored.sorted { $0.1 != $1.1 ? $0.1 < $1.1 : $0.0 < $1.0 }.prefix(limit).map(\.0)
    }

    static func editDistance(_ a: [Character], _ b: [Character]) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var prev = Array(0...b.count)
        var cur = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            cur[0] = i
            for j in 1...b.count {
                cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            swap(&prev, &cur)
        }
        return prev[b.count]
    }

    /// A short form for usage lines: `integer`, `string | null`, `"a" | "b"`, `array[integer]`, `any`.
    public var shortType: String {
        if acceptsNothing { return "never" }
        if let c = constValue { return String(c.serialized().prefix(30)) }
        if let e = enumValues { return e.map { String($0.serialized().prefix(30)) }.joined(separator: " | ") }
        guard let types else { return "any" }
        return types.names.map { name in
            if name == "array", let item = itemsBox.first { return "array[\(item.shortType)]" }
            return name
        }.joined(separator: " | ")
    }
}

/// A compiled regex, shared (it is immutable once compiled).
final class RegexBox: @unchecked Sendable {
    let regex: Regex<AnyRegexOutput>
    init(_ regex: Regex<AnyRegexOutput>) { self.regex = regex }
}

/// A JSON number literal as an exact decimal: sign, significant digits and a power of ten
/// (digits × 10^exponent), so that comparisons hold for integers and decimals of any size.
/// NaN and ±Infinity are kept as such (NaN compares false with everything).
struct ExactNumber: Sendable, Hashable, Comparable {
    enum Kind: Sendable, Hashable { case finite, nan, infinity, minusInfinity }
    var kind: Kind
    var negative = false
    /// ASCII digits, no leading or trailing zeros; empty for zero.
    var digits: [UInt8] = []
    var exponent = 0

    var isNaN: Bool { kind == .nan }
    var isIntegral: Bool { kind == .finite && exponent >= 0 }

    init?(_ text: String) {
        switch text {
        case "NaN": kind = .nan; return
        case "Infinity": kind = .infinity; return
        case "-Infinity": kind = .minusInfinity; return
        default: kind = .finite
        }
        var bytes = Array(text.utf8)[...]
        if bytes.first == 0x2D { negative = true; bytes = bytes.dropFirst() }
        var mantissa: [UInt8] = []
        var fractionDigits = 0
        var sawDigit = false
        var inFraction = false
        var exp = 0
        var i = bytes.startIndex
        while i < bytes.endIndex {
            let c = bytes[i]
            if c >= 0x30 && c <= 0x39 {
                sawDigit = true
                if !(mantissa.isEmpty && c == 0x30) { mantissa.append(c) }
                else if inFraction { /* a leading zero of the fraction */ }
                if inFraction { fractionDigits += 1 }
            } else if c == 0x2E && !inFraction {
                inFraction = true
            } else if c == 0x65 || c == 0x45 {
                var j = bytes.index(after: i)
                var expNegative = false
                if j < bytes.endIndex, bytes[j] == 0x2D || bytes[j] == 0x2B { expNegative = bytes[j] == 0x2D; j = bytes.index(after: j) }
                guard j < bytes.endIndex else { return nil }
                var e = 0
                while j < bytes.endIndex {
                    let d = bytes[j]
                    guard d >= 0x30 && d <= 0x39 else { return nil }
                    // Clamped: 10^(±1e15) is beyond any literal's digits either way.
                    if e < 1_000_000_000_000_000 { e = e * 10 + Int(d - 0x30) }
                    j = bytes.index(after: j)
                }
                exp = expNegative ? -e : e
                break
            } else {
                return nil
            }
            i = bytes.index(after: i)
        }
        guard sawDigit else { return nil }
        // Leading zeros of the fraction were skipped but still count as fraction digits.
        var trailing = 0
        while let last = mantissa.last, last == 0x30 { mantissa.removeLast(); trailing += 1 }
        digits = mantissa
        exponent = mantissa.isEmpty ? 0 : exp - fractionDigits + trailing
        if digits.isEmpty { negative = false }
    }

    /// -1, 0 or 1 (NaN: nil).
    static func compare(_ a: ExactNumber, _ b: ExactNumber) -> Int? {
        if a.kind == .nan || b.kind == .nan { return nil }
        func rank(_ x: ExactNumber) -> Int { x.kind == .minusInfinity ? -1 : x.kind == .infinity ? 1 : 0 }
        let (ra, rb) = (rank(a), rank(b))
        if ra != 0 || rb != 0 { return ra == rb ? 0 : (ra < rb ? -1 : 1) }
        let sa = a.digits.isEmpty ? 0 : (a.negative ? -1 : 1)
        let sb = b.digits.isEmpty ? 0 : (b.negative ? -1 : 1)
        if sa != sb { return sa < sb ? -1 : 1 }
        if sa == 0 { return 0 }
        // Same sign: compare magnitudes, by the place of the leading digit, then digit by digit.
        var m: Int
        let la = a.exponent + a.digits.count, lb = b.exponent + b.digits.count
        if la != lb { m = la < lb ? -1 : 1 } else {
            m = 0
            for (x, y) in zip(a.digits, b.digits) where x != y { m = x < y ? -1 : 1; break }
            if m == 0 && a.digits.count != b.digits.count { m = a.digits.count < b.digits.count ? -1 : 1 }
        }
        return sa < 0 ? -m : m
    }

    static func < (a: ExactNumber, b: ExactNumber) -> Bool { compare(a, b) == -1 }
    static func <= (a: ExactNumber, b: ExactNumber) -> Bool { compare(a, b).map { $0 <= 0 } ?? false }
    static func > (a: ExactNumber, b: ExactNumber) -> Bool { compare(a, b) == 1 }
    static func >= (a: ExactNumber, b: ExactNumber) -> Bool { compare(a, b).map { $0 >= 0 } ?? false }
    static func == (a: ExactNumber, b: ExactNumber) -> Bool { compare(a, b) == 0 }
    func hash(into h: inout Hasher) {
        h.combine(kind)
        h.combine(negative)
        h.combine(digits)
        h.combine(exponent)
    }
}
