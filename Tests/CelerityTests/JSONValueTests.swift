import Testing
@testable import Celerity

@Suite struct JSONValueTests {
    /// Parses `text`, returning the error it throws (nil if it parses).
    private func parseError(_ text: String) -> JSONError? {
        do throws(JSONError) {
            _ = try JSONValue(parsing: text)
            return nil
        } catch {
            return error
        }
    }

    private func parseError(_ bytes: [UInt8]) -> JSONError? {
        do throws(JSONError) {
            _ = try JSONValue(parsing: bytes)
            return nil
        } catch {
            return error
        }
    }

    private func roundTrip(_ text: String) throws -> String {
        try JSONValue(parsing: text).serialized()
    }

    // MARK: numbers

    @Test func hugeIntegerRoundTripsExactly() throws {
        // 77,338 digits, no two neighbouring runs alike at the ends.
        let digits = "9" + String(repeating: "1234567890", count: 7733) + "1234567"
        #expect(digits.utf8.count == 77_338)
        for literal in [digits, "-" + digits] {
            let clock = ContinuousClock()
            var value = JSONValue.null
            let elapsed = try clock.measure { value = try JSONValue(parsing: literal) }
            #expect(value == .number(literal))
            #expect(value.isIntegerLiteral)
            #expect(value.intValue == nil)
            #expect(value.serialized() == literal)
            // Generous bound: the -O build takes well under a millisecond.
            #expect(elapsed < .seconds(1))
        }
        let wrapped = "[" + digits + ",{\"n\":-" + digits + "}]"
        #expect(try roundTrip(wrapped) == wrapped)
        #expect(try JSONValue(parsing: Array(wrapped.utf8)).serializedBytes() == Array(wrapped.utf8))
    }

    @Test func integerAndFloatStayDistinct() throws {
        let five = try JSONValue(parsing: "5")
        let fivePointZero = try JSONValue(parsing: "5.0")
        #expect(five == .number("5"))
        #expect(fivePointZero == .number("5.0"))
        #expect(five != fivePointZero)
        #expect(five.serialized() == "5")
        #expect(fivePointZero.serialized() == "5.0")
        #expect(JSONValue.double(5.0) == .number("5.0"))
        #expect(JSONValue.double(5.0) != JSONValue.int(5))
        #expect(JSONValue.int(5) == five)
        #expect(try roundTrip("[5,5.0,-0,-0.0,1E3,1e-3,2.5e+10]") == "[5,5.0,-0,-0.0,1E3,1e-3,2.5e+10]")
        let literals: JSONValue = [5, 5.0]
        #expect(literals == .array([.number("5"), .number("5.0")]))
    }

    @Test func doubleTextIsShortestAndReadsBackAsFloat() {
        #expect(JSONValue.double(5.0) == .number("5.0"))
        #expect(JSONValue.double(-0.0) == .number("-0.0"))
        #expect(JSONValue.double(0.1) == .number("0.1"))
        #expect(JSONValue.double(1e300) == .number("1e+300"))
        #expect(JSONValue.double(1e-5) == .number("1e-05"))
        #expect(JSONValue.double(.nan) == .number("NaN"))
        #expect(JSONValue.double(.infinity) == .number("Infinity"))
        #expect(JSONValue.double(-.infinity) == .number("-Infinity"))
        for d in [5.0, 0.1, 1e300, 1e-5, 123456789012345678.0, .greatestFiniteMagnitude, .leastNonzeroMagnitude] {
            let value = JSONValue.double(d)
            #expect(!value.isIntegerLiteral)
            #expect(value.doubleValue == d)
        }
    }

    @Test func pythonNonFiniteTokensParse() throws {
        let value = try JSONValue(parsing: "[NaN, Infinity, -Infinity]")
        let items = try #require(value.arrayValue)
        #expect(items == [.number("NaN"), .number("Infinity"), .number("-Infinity")])
        #expect(try #require(items[0].doubleValue).isNaN)
        #expect(items[1].doubleValue == .infinity)
        #expect(items[2].doubleValue == -.infinity)
        #expect(items.allSatisfy { !$0.isIntegerLiteral && $0.intValue == nil })
        #expect(value.serialized() == "[NaN,Infinity,-Infinity]")
        #expect(try JSONValue(parsing: " NaN ") == .number("NaN"))
    }

    @Test func numericAccessors() throws {
        #expect(JSONValue.number("42").intValue == 42)
        #expect(JSONValue.number("-42").intValue == -42)
        #expect(JSONValue.number("42").doubleValue == 42.0)
        #expect(JSONValue.number("42").isIntegerLiteral)
        #expect(JSONValue.number("42.0").intValue == nil)
        #expect(JSONValue.number("42.0").doubleValue == 42.0)
        #expect(!JSONValue.number("42.0").isIntegerLiteral)
        #expect(!JSONValue.number("4e2").isIntegerLiteral)
        #expect(!JSONValue.number("4E2").isIntegerLiteral)
        #expect(JSONValue.number("4e2").intValue == nil)
        #expect(JSONValue.number("4e2").doubleValue == 400.0)
        #expect(JSONValue.number("9223372036854775807").intValue == Int.max)
        #expect(JSONValue.number("9223372036854775808").intValue == nil)
        #expect(JSONValue.number("9223372036854775808").isIntegerLiteral)
        #expect(JSONValue.string("5").intValue == nil)
        #expect(JSONValue.string("5").doubleValue == nil)
        #expect(!JSONValue.string("5").isIntegerLiteral)
        #expect(JSONValue.int(-7) == .number("-7"))
        let parsed = try JSONValue(parsing: "-1e10")
        #expect(parsed == .number("-1e10"))
        #expect(parsed.doubleValue == -1e10)
    }

    // MARK: strings

    @Test func unicodeEscapesAndSurrogatePairs() throws {
        #expect(try JSONValue(parsing: #""\u00e9\u00E9""#) == .string("éé"))
        #expect(try JSONValue(parsing: #""\ud83d\ude00""#) == .string("😀"))
        #expect(try JSONValue(parsing: #""a\"b\\c\/d\b\f\n\r\t""#) == .string("a\"b\\c/d\u{8}\u{c}\n\r\t"))
        #expect(try JSONValue(parsing: #""\u0000""#) == .string("\u{0}"))
        // Lone surrogates become U+FFFD; a high surrogate followed by a non-low escape
        // does not swallow that escape.
        #expect(try JSONValue(parsing: #""\ud800""#) == .string("\u{FFFD}"))
        #expect(try JSONValue(parsing: #""\udc00x""#) == .string("\u{FFFD}x"))
        #expect(try JSONValue(parsing: #""\ud800\u0041""#) == .string("\u{FFFD}A"))
        #expect(try JSONValue(parsing: #""\ud800\ud83d\ude00""#) == .string("\u{FFFD}😀"))
        // Raw UTF-8 passes through.
        #expect(try JSONValue(parsing: "\"héllo 😀\"") == .string("héllo 😀"))
        #expect(try JSONValue(parsing: [0x22, 0xC3, 0xA9, 0x22] as [UInt8]) == .string("é"))
    }

    @Test func invalidStrings() throws {
        let control = try #require(parseError("\"a\nb\""))
        #expect(control.offset == 2)
        let escape = try #require(parseError(#""a\qb""#))
        #expect(escape.offset == 2)
        let hex = try #require(parseError(#""\u12g4""#))
        #expect(hex.offset == 5)
        let unterminated = try #require(parseError("\"abc"))
        #expect(unterminated.offset == 4)
        // Invalid UTF-8: bad continuation, encoded surrogate, overlong, truncated.
        for bytes: [UInt8] in [[0x22, 0xC3, 0x28, 0x22], [0x22, 0xED, 0xA0, 0x80, 0x22],
                               [0x22, 0xC0, 0xAF, 0x22], [0x22, 0xF0, 0x9F, 0x98]] {
            #expect(throws: JSONError.self) { try JSONValue(parsing: bytes) }
            let error = try #require(parseError(bytes))
            #expect(error.offset == 1)
            #expect(error.message.contains("UTF-8"))
        }
    }

    @Test func writerEscapesControlCharacters() throws {
        let value = JSONValue.string("q\"b\\n\n r\r t\t b\u{8} f\u{c} x\u{1} y\u{1f} z\u{7f} é😀")
        #expect(value.serialized() == #""q\"b\\n\n r\r t\t b\b f\f x\u0001 y\u001f z"# + "\u{7f} é😀\"")
        #expect(JSONValue.string("\u{0}").serialized() == #""\u0000""#)
        let object: JSONValue = ["k\"ey\n": "v"]
        #expect(object.serialized() == #"{"k\"ey\n":"v"}"#)
        // Everything the writer escapes reads back unchanged.
        var all = ""
        for scalar in 0 ..< 0x80 { all.unicodeScalars.append(Unicode.Scalar(UInt8(scalar))) }
        all += "é😀\u{2028}"
        let text = JSONValue.string(all).serialized()
        #expect(try JSONValue(parsing: text) == .string(all))
    }

    // MARK: errors

    @Test func truncatedInput() throws {
        for text in ["", "   ", "[", "[1", "[1,", "{", "{\"a\"", "{\"a\":", "{\"a\":1", "\"abc", "tru", "nul", "-Inf"] {
            let error = try #require(parseError(text), "\(text) should fail")
            #expect(error.offset == text.utf8.count, "\(text)")
            #expect(error.message.contains("end of input") || error.message.contains("unterminated"), "\(text)")
        }
    }

    @Test func trailingGarbage() throws {
        let error = try #require(parseError("[1,2] x"))
        #expect(error.offset == 6)
        #expect(error.message.contains("expected end of input"))
        #expect(try #require(parseError("1 2")).offset == 2)
        #expect(try #require(parseError("{}}")).offset == 2)
        #expect(try JSONValue(parsing: " \t\r\n[1] \n") == [1])
    }

    @Test func badNumbers() throws {
        let leadingZero = try #require(parseError("01"))
        #expect(leadingZero.offset == 1)
        let negativeLeadingZero = try #require(parseError("-01"))
        #expect(negativeLeadingZero.offset == 2)
        let noFraction = try #require(parseError("1."))
        #expect(noFraction.offset == 2)
        #expect(noFraction.message.contains("expected"))
        let minus = try #require(parseError("-"))
        #expect(minus.offset == 1)
        let plus = try #require(parseError("+1"))
        #expect(plus.offset == 0)
        #expect(plus.message.contains("expected a value"))
        #expect(try #require(parseError("1e")).offset == 2)
        #expect(try #require(parseError("1e+")).offset == 3)
        #expect(try #require(parseError(".5")).offset == 0)
        #expect(try #require(parseError("1.e5")).offset == 2)
        #expect(try #require(parseError("[1.]")).offset == 3)
        #expect(try #require(parseError("-a")).offset == 1)
        #expect(try #require(parseError("nan")).offset == 1)  // where it stops matching "null"
        #expect(try #require(parseError("infinity")).offset == 0)
        #expect(try #require(parseError("0x10")).offset == 1)
    }

    @Test func structuralErrorsSayWhatWasExpected() throws {
        let array = try #require(parseError("[1 2]"))
        #expect(array.offset == 3)
        #expect(array.message == "expected ',' or ']'")
        #expect(array.description == "invalid JSON at byte 3: expected ',' or ']'")
        let object = try #require(parseError(#"{"a":1 "b":2}"#))
        #expect(object.offset == 7)
        #expect(object.message == "expected ',' or '}'")
        let colon = try #require(parseError(#"{"a" 1}"#))
        #expect(colon.offset == 5)
        #expect(colon.message.contains("':'"))
        #expect(try #require(parseError("[1,]")).offset == 3)
        #expect(try #require(parseError(#"{"a":1,}"#)).offset == 7)
        #expect(try #require(parseError("{1:2}")).offset == 1)
        #expect(try #require(parseError("[trUe]")).offset == 3)
    }

    @Test func nestingDepthLimit() throws {
        let ok = String(repeating: "[", count: 512) + String(repeating: "]", count: 512)
        #expect(try roundTrip(ok) == ok)
        let tooDeep = String(repeating: "[", count: 513) + String(repeating: "]", count: 513)
        let error = try #require(parseError(tooDeep))
        #expect(error.offset == 512)
        #expect(error.message.contains("512"))
        let objects = String(repeating: #"{"a":"#, count: 600) + "1" + String(repeating: "}", count: 600)
        #expect(try #require(parseError(objects)).offset == 512 * 5)
        // Far deeper than any stack would allow recursively: still a clean error.
        #expect(parseError(String(repeating: "[", count: 100_000)) != nil)
    }

    // MARK: structure

    @Test func celeryMessageBodyRoundTrips() throws {
        let text = #"[[2, 3], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#
        let value = try JSONValue(parsing: text)
        let expected: JSONValue = [[2, 3], [:], ["callbacks": nil, "errbacks": nil, "chain": nil, "chord": nil]]
        #expect(value == expected)
        let compact = #"[[2,3],{},{"callbacks":null,"errbacks":null,"chain":null,"chord":null}]"#
        #expect(value.serialized() == compact)
        #expect(value.description == compact)
        #expect(try JSONValue(parsing: compact) == value)
        let body = try #require(value.arrayValue)
        #expect(body.count == 3)
        #expect(body[0].arrayValue?.compactMap(\.intValue) == [2, 3])
        #expect(body[1].objectValue?.isEmpty == true)
        let embed = body[2]
        #expect(embed.objectValue?.map(\.key) == ["callbacks", "errbacks", "chain", "chord"])
        #expect(embed["chord"]?.isNull == true)
        #expect(embed["missing"] == nil)
        #expect(body[0]["callbacks"] == nil)
    }

    @Test func objectsKeepOrderAndDuplicates() throws {
        let value = try JSONValue(parsing: #"{"b":1,"a":2,"b":3}"#)
        #expect(value.objectValue == [JSONMember("b", 1), JSONMember("a", 2), JSONMember("b", 3)])
        #expect(value["b"] == 1)
        #expect(value.serialized() == #"{"b":1,"a":2,"b":3}"#)
    }

    @Test func accessorsAndLiterals() throws {
        let value: JSONValue = ["s": "text", "t": true, "n": nil, "i": 1, "d": 1.5, "a": [1, "x"]]
        #expect(value["s"]?.stringValue == "text")
        #expect(value["t"]?.boolValue == true)
        #expect(value["n"]?.isNull == true)
        #expect(value["i"]?.intValue == 1)
        #expect(value["d"]?.doubleValue == 1.5)
        #expect(value["a"]?.arrayValue == [.number("1"), .string("x")])
        #expect(value["s"]?.boolValue == nil)
        #expect(value["t"]?.stringValue == nil)
        #expect(!JSONValue.bool(false).isNull)
        #expect(value.serialized() == #"{"s":"text","t":true,"n":null,"i":1,"d":1.5,"a":[1,"x"]}"#)
        #expect(try JSONValue(parsing: value.serialized()) == value)
        #expect(try JSONValue(parsing: value.serializedBytes()) == value)
        var buffer: [UInt8] = Array("prefix:".utf8)
        JSONValue.bool(false).write(into: &buffer)
        #expect(String(decoding: buffer, as: UTF8.self) == "prefix:false")
    }

    @Test func parsesNonContiguousCollections() throws {
        let text = #"{"k":[1,"é"]}"#
        let value = try JSONValue(parsing: AnyCollection(text.utf8))
        #expect(value == ["k": [1, "é"]])
        #expect(try JSONValue(parsing: Array(text.utf8)[...]) == value)
        #expect(try JSONValue(parsing: text.utf8) == value)
    }
}
