import Testing
@testable import Celerity

@Suite struct TaskParamsTests {
    private func params(_ json: String, varargs: String? = nil, varkwargs: String? = nil) throws -> TaskParams {
        try TaskParams.parse(try JSONValue(parsing: json), varargs: try varargs.map { try JSONValue(parsing: $0) },
                             varkwargs: try varkwargs.map { try JSONValue(parsing: $0) }, task: "greet")
    }

    private func schemaError(_ json: String, varargs: String? = nil) -> String? {
        do {
            _ = try params(json, varargs: varargs)
            return nil
        } catch let e as SchemaError {
            return e.message
        } catch {
            return "\(error)"
        }
    }

    private func check(_ p: TaskParams, _ args: String, _ kwargs: String = "{}") throws -> ArgumentProblem? {
        let a = try #require(try JSONValue(parsing: args).arrayValue)
        let k = try #require(try JSONValue(parsing: kwargs).objectValue)
        return p.validate(task: "greet", args: a, kwargs: k)
    }

    // MARK: binding (Python's rules and messages)

    @Test func bindsPositionalAndKeywordArgumentsAsPythonDoes() throws {
        let p = try params(#"{"name": "string", "times": {"type": "integer", "default": 1}}"#)
        #expect(try check(p, #"["ann"]"#) == nil)
        #expect(try check(p, #"["ann", 3]"#) == nil)
        #expect(try check(p, #"[]"#, #"{"name": "ann", "times": 2}"#) == nil)
        #expect(try check(p, #"["ann"]"#, #"{"times": 2}"#) == nil)
        #expect(try check(p, #"["ann", 1, 2]"#)?.message == "greet() takes from 1 to 2 positional arguments but 3 were given")
        #expect(try check(p, #"[]"#)?.message == "greet() missing 1 required argument: 'name'")
        #expect(try check(p, #"[]"#)?.path == "name")
        #expect(try check(p, #"["ann"]"#, #"{"z": 1}"#)?.message == "greet() got an unexpected keyword argument 'z'")
        #expect(try check(p, #"["ann"]"#, #"{"name": "bob"}"#)?.message == "greet() got multiple values for argument 'name'")

        let two = try params(#"{"x": "integer", "y": "integer"}"#)
        #expect(try check(two, "[1, 2, 3]")?.message == "greet() takes 2 positional arguments but 3 were given")
        #expect(try check(two, "[]")?.message == "greet() missing 2 required arguments: 'x', 'y'")
        #expect(try check(two, "[]")?.path == nil)
        let none = try params("{}")
        #expect(try check(none, "[]") == nil)
        #expect(try check(none, "[1]")?.message == "greet() takes 0 positional arguments but 1 was given")
        let one = try params(#"{"x": {}}"#)
        #expect(try check(one, "[1, 2]")?.message == "greet() takes 1 positional argument but 2 were given")
        #expect(try check(one, #"[{"any": [null]}]"#) == nil)
    }

    @Test func varargsAndVarkwargsAcceptExtrasAndCheckThem() throws {
        let p = try params(#"{"x": "integer"}"#, varargs: #"{"type": "number"}"#, varkwargs: #""string""#)
        #expect(try check(p, "[1, 2.5, 3]", #"{"a": "b"}"#) == nil)
        let bad = try #require(try check(p, #"[1, 2, 3, "four"]"#))
        #expect(bad.path == "args[3]")
        #expect(bad.message == #"greet: argument args[3]: expected number, got string "four""#)
        let badKw = try #require(try check(p, "[1]", #"{"z": 5}"#))
        #expect(badKw.path == "kwargs.z")
        #expect(badKw.message == "greet: argument kwargs.z: expected string, got integer 5")
        let odd = try #require(try check(p, "[1]", #"{"a b": 5}"#))
        #expect(odd.path == #"kwargs["a b"]"#)
        // `true`: anything; `false`/absent: none.
        let any = try params("{}", varargs: "true", varkwargs: "true")
        #expect(try check(any, #"[1, "x", null]"#, #"{"q": [1]}"#) == nil)
        #expect(any.usage == "greet(*args, **kwargs)")
        let closed = try params("{}", varargs: "false")
        #expect(try check(closed, "[1]")?.message == "greet() takes 0 positional arguments but 1 was given")
    }

    // MARK: keywords

    @Test func typeKeywordIncludingIntegersOfAnySizeAndIntegralFloats() throws {
        let p = try params(#"{"i": "integer", "n": "number", "s": "string", "b": "boolean", "a": "array", "o": "object", "z": "null"}"#)
        let huge = "9" + String(repeating: "0", count: 5000)
        #expect(try check(p, #"[\#(huge), 1.5, "s", true, [], {}, null]"#) == nil)
        #expect(try check(p, #"[5.0, 1, "s", false, [1], {"a": 1}, null]"#) == nil)
        #expect(try check(p, #"[1e3, 1e-3, "", false, [], {}, null]"#) == nil)
        #expect(try check(p, #"[1.5, 1, "s", true, [], {}, null]"#)?.message == "greet: argument i: expected integer, got number 1.5")
        #expect(try check(p, #"[true, 1, "s", true, [], {}, null]"#)?.message == "greet: argument i: expected integer, got boolean true")
        #expect(try check(p, #"[1, true, "s", true, [], {}, null]"#)?.message == "greet: argument n: expected number, got boolean true")
        #expect(try check(p, #"[1, "1", "s", true, [], {}, null]"#)?.message == #"greet: argument n: expected number, got string "1""#)
        #expect(try check(p, #"[NaN, 1, "s", true, [], {}, null]"#)?.path == "i")
        #expect(try check(p, #"[1, NaN, "s", true, [], {}, null]"#) == nil)   // number: any JSON number
        #expect(try check(p, #"[1, 1, 2, true, [], {}, null]"#)?.message == "greet: argument s: expected string, got integer 2")
        #expect(try check(p, #"[1, 1, "s", 0, [], {}, null]"#)?.message == "greet: argument b: expected boolean, got integer 0")
        #expect(try check(p, #"[1, 1, "s", true, {}, {}, null]"#)?.message == "greet: argument a: expected array, got object")
        #expect(try check(p, #"[1, 1, "s", true, [], [], null]"#)?.message == "greet: argument o: expected object, got array of 0 items")
        #expect(try check(p, #"[1, 1, "s", true, [], {}, 0]"#)?.message == "greet: argument z: expected null, got integer 0")
        let either = try params(#"{"x": {"type": ["integer", "null"]}}"#)
        #expect(try check(either, "[null]") == nil)
        #expect(try check(either, "[3]") == nil)
        #expect(try check(either, #"["3"]"#)?.message == #"greet: argument x: expected integer or null, got string "3""#)
    }

    @Test func numericBoundsAreExactForBigIntegersAndDecimals() throws {
        let p = try params(#"{"x": {"type": "integer", "minimum": 1, "maximum": 100000000000000000000000000000001}}"#)
        #expect(try check(p, "[1]") == nil)
        #expect(try check(p, "[100000000000000000000000000000001]") == nil)
        #expect(try check(p, "[100000000000000000000000000000002]")?.message.hasPrefix("greet: argument x: must be ≤ 100000000000000000000000000000001") == true)
        #expect(try check(p, "[0]")?.message == "greet: argument x: must be ≥ 1, got 0")
        #expect(try check(p, "[-100000000000000000000000000000002]")?.path == "x")
        let ex = try params(#"{"x": {"exclusiveMinimum": 0.1, "exclusiveMaximum": 1e2}}"#)
        #expect(try check(ex, "[0.1]")?.message == "greet: argument x: must be > 0.1, got 0.1")
        #expect(try check(ex, "[0.10000000000000000000001]") == nil)
        #expect(try check(ex, "[1e2]")?.message == "greet: argument x: must be < 1e2, got 1e2")
        #expect(try check(ex, "[99.99999999999999999999]") == nil)
        #expect(try check(ex, "[100.0]")?.path == "x")
        #expect(try check(ex, #"["text"]"#) == nil)   // bounds apply to numbers only (JSON Schema)
        let neg = try params(#"{"x": {"minimum": -5, "maximum": -0.5}}"#)
        #expect(try check(neg, "[-5]") == nil)
        #expect(try check(neg, "[-5.0000000000000000000000001]")?.path == "x")
        #expect(try check(neg, "[-0.5]") == nil)
        #expect(try check(neg, "[-0.4]")?.path == "x")
        #expect(try check(neg, "[0]")?.path == "x")
        #expect(try check(neg, "[-Infinity]")?.path == "x")
        #expect(try check(neg, "[NaN]")?.path == "x")
        #expect(try check(try params(#"{"x": {"maximum": 1e400}}"#), "[Infinity]")?.path == "x")
    }

    @Test func exactNumbersCompareByValue() throws {
        func n(_ s: String) throws -> ExactNumber { try #require(ExactNumber(s)) }
        #expect(try n("5") == n("5.0"))
        #expect(try n("5") == n("0.5e1"))
        #expect(try n("500") == n("5e2"))
        #expect(try n("0") == n("-0.0"))
        #expect(try n("0.05") == n("5e-2"))
        #expect(try n("0.05") < n("0.5"))
        #expect(try n("-1") < n("-0.999"))
        #expect(try n("12345678901234567890123") > n("12345678901234567890122.9"))
        #expect(try n("1e999999999999999999999") > n("9" + String(repeating: "9", count: 1000)))
        #expect(try n("1.5").isIntegral == false)
        #expect(try n("1.50e1").isIntegral)
        #expect(try !(n("NaN") == n("NaN")))
        #expect(ExactNumber("1x") == nil)
        #expect(ExactNumber("") == nil)
    }

    @Test func enumConstAndStringKeywords() throws {
        let p = try params(#"{"color": {"enum": ["red", "green", 3]}, "k": {"const": 5}, "s": {"type": "string", "minLength": 2, "maxLength": 3, "pattern": "^[a-zé]+$"}}"#)
        #expect(try check(p, #"["red", 5, "ab"]"#) == nil)
        #expect(try check(p, #"[3.0, 5.0, "abé"]"#) == nil)   // enum/const compare numbers by value
        #expect(try check(p, #"["blue", 5, "ab"]"#)?.message == #"greet: argument color: must be one of "red", "green", 3, got string "blue""#)
        #expect(try check(p, #"["red", 6, "ab"]"#)?.message == "greet: argument k: must be 5, got integer 6")
        #expect(try check(p, #"["red", 5, "a"]"#)?.message == #"greet: argument s: must have at least 2 characters, got string "a""#)
        #expect(try check(p, #"["red", 5, "abcd"]"#)?.message == "greet: argument s: must have at most 3 characters, got 4")
        // Unicode scalars, not bytes: "éé" is 2 (4 bytes in UTF-8).
        #expect(try check(p, #"["red", 5, "ééé"]"#) == nil)
        #expect(try check(p, #"["red", 5, "AB"]"#)?.message == #"greet: argument s: must match the pattern '^[a-zé]+$', got string "AB""#)
        // Unanchored search, as JSON Schema says.
        let search = try params(#"{"s": {"pattern": "b+"}}"#)
        #expect(try check(search, #"["abbc"]"#) == nil)
        #expect(try check(search, #"["ac"]"#)?.path == "s")
    }

    @Test func arraysAndObjectsNameThePathOfTheBadValue() throws {
        let p = try params(#"""
        {"rows": {"type": "array", "minItems": 1, "maxItems": 3, "items": {"type": "array", "items": "number"}},
         "user": {"type": "object", "required": ["name"], "additionalProperties": false,
                  "properties": {"name": {"type": "string", "minLength": 1},
                                 "tags": {"type": "array", "items": {"type": "object", "additionalProperties": "integer"}}}}}
        """#)
        #expect(try check(p, #"[[[1, 2], []], {"name": "a", "tags": [{"x": 1}]}]"#) == nil)
        let deep = try #require(try check(p, #"[[[1], [2], ["3"]], {"name": "a"}]"#))
        #expect(deep.path == "rows[2][0]")
        #expect(deep.message == #"greet: argument rows[2][0]: expected number, got string "3""#)
        #expect(try check(p, #"[[], {"name": "a"}]"#)?.message == "greet: argument rows: must have at least 1 item, got 0")
        #expect(try check(p, #"[[[], [], [], []], {"name": "a"}]"#)?.message == "greet: argument rows: must have at most 3 items, got 4")
        let name = try #require(try check(p, #"[[[1]], {"name": ""}]"#))
        #expect(name.path == "user.name")
        #expect(try check(p, #"[[[1]], {}]"#)?.message == "greet: argument user: missing required property 'name'")
        #expect(try check(p, #"[[[1]], {"name": "a", "age": 3}]"#)?.message == "greet: argument user: unexpected property 'age' (allowed: 'name', 'tags')")
        let tag = try #require(try check(p, #"[[[1]], {"name": "a", "tags": [{"x": 1}, {"y": "no"}]}]"#))
        #expect(tag.path == "user.tags[1].y")
        // By keyword, the path starts at the keyword's name.
        #expect(try check(p, "[]", #"{"rows": [[true]], "user": {"name": "a"}}"#)?.path == "rows[0][0]")
    }

    @Test func shorthandAnnotationsUsageAndEquivalentSchema() throws {
        let p = try params(#"{"name": {"type": "string", "description": "who", "title": "Name", "examples": ["ann"], "format": "x", "$comment": "c"}, "times": {"type": "integer", "default": 1}, "mode": {"enum": ["a", "b"], "default": "a"}, "xs": {"type": "array", "items": "integer"}}"#,
                           varargs: #""number""#)
        #expect(p.usage == #"greet(name: string, times: integer = 1, mode: "a" | "b" = "a", xs: array[integer], *args: number)"#)
        #expect(p.params.map(\.name) == ["name", "times", "mode", "xs"])
        #expect(p.params[0].schema.summary == "who")
        #expect(p.params[1].isOptional)
        #expect(p.jsonSchema == (try JSONValue(parsing: #"{"type":"object","properties":{"name":{"type":"string","description":"who","title":"Name","examples":["ann"],"format":"x","$comment":"c"},"times":{"type":"integer","default":1},"mode":{"enum":["a","b"],"default":"a"},"xs":{"type":"array","items":{"type":"integer"}}},"required":["name","xs"],"additionalProperties":false}"#)))
        // Shorthand == the long form.
        #expect(try params(#"{"x": "integer"}"#) == params(#"{"x": {"type": "integer"}}"#))
    }

    @Test func badSchemasAreRefusedNamingTheKeywordPath() throws {
        #expect(schemaError(#"{"times": {"type": "integer", "minimum": "one"}}"#) == "params.times.minimum must be a number")
        #expect(schemaError(#"{"times": {"minimun": 1}}"#)?.hasPrefix("params.times: unknown keyword 'minimun' (did you mean 'minimum'?)") == true)
        #expect(schemaError(#"{"x": "int"}"#)?.hasPrefix("params.x: unknown type 'int' (known: string, integer, number, boolean, array, object, null) (did you mean 'integer'?)") == true)
        #expect(schemaError(#"{"x": {"type": ["integer", "float"]}}"#)?.hasPrefix("params.x.type: unknown type 'float'") == true)
        #expect(schemaError(#"{"x": {"type": []}}"#) == "params.x.type must name at least one type")
        #expect(schemaError(#"{"x": 5}"#) == "params.x must be a schema (a mapping such as {type: integer}) or a type name, found integer 5")
        #expect(schemaError(#"{"x": {"enum": []}}"#) == "params.x.enum must be a non-empty list of values")
        #expect(schemaError(#"{"x": {"minLength": -1}}"#) == "params.x.minLength must be a non-negative integer")
        #expect(schemaError(#"{"x": {"maxItems": 1.5}}"#) == "params.x.maxItems must be a non-negative integer")
        #expect(schemaError(#"{"x": {"pattern": "("}}"#)?.hasPrefix("params.x.pattern: '(' is not a valid regular expression") == true)
        #expect(schemaError(#"{"x": {"items": {"type": "nope"}}}"#)?.hasPrefix("params.x.items.type: unknown type 'nope'") == true)
        #expect(schemaError(#"{"x": {"properties": {"a": {"maximum": []}}}}"#) == "params.x.properties.a.maximum must be a number")
        #expect(schemaError(#"{"x": {"properties": []}}"#) == "params.x.properties must be a mapping of property names to schemas")
        #expect(schemaError(#"{"x": {"required": [1]}}"#) == "params.x.required must be a list of property names, found integer 1 in it")
        #expect(schemaError(#"{"x": {"additionalProperties": 3}}"#)?.hasPrefix("params.x.additionalProperties must be a schema") == true)
        #expect(schemaError(#"{"x": {"minimum": 5, "maximum": 1}}"#) == "params.x: minimum 5 is above maximum 1: no value can pass")
        #expect(schemaError(#"{"x": {"description": 5}}"#) == "params.x.description must be a string")
        #expect(schemaError(#"{"x": "integer", "x": "string"}"#) == "params: duplicate parameter 'x'")
        #expect(schemaError(#"["x"]"#)?.hasPrefix("params must be a mapping of parameter names to schemas") == true)
        #expect(schemaError("{}", varargs: #"{"type": 1}"#) == "varargs.type must be a type name or a list of them, found integer 1")
        // The prefix names the task.
        let v = try JSONValue(parsing: #"{"n": {"maximum": null}}"#)
        do throws(SchemaError) {
            _ = try TaskParams.parse(v, prefix: "plugins.greet.")
            Issue.record("accepted")
        } catch {
            #expect(error.message == "plugins.greet.params.n.maximum must be a number")
        }
    }

    @Test func closeNamesFindTypos() {
        #expect(JSONSchema.closeNames("plugins.gret", among: ["plugins.greet", "plugins.add", "x"]) == ["plugins.greet"])
        #expect(JSONSchema.closeNames("add", among: ["add_module.tasks.add", "mul"]) == ["add_module.tasks.add"])
        #expect(JSONSchema.closeNames("zzzzzz", among: ["add"]).isEmpty)
    }

    @Test func validationIsCheapForTheAddTask() throws {
        // The add built-in's schema: two numbers. A million checks well under a second in -O
        // (the figure of record is scripts/bench.sh's drain; this only catches a gross slip).
        let p = try params(#"{"x": "number", "y": "number"}"#)
        let args: [JSONValue] = [.int(4), .int(6)]
        let clock = ContinuousClock()
        var failures = 0
        let elapsed = clock.measure {
            for _ in 0..<100_000 where p.validate(task: "add", args: args, kwargs: []) != nil { failures += 1 }
        }
        #expect(failures == 0)
        #expect(elapsed < .seconds(2))
    }
}
