import Foundation
import Testing
@testable import Celerity
import CelerityBuiltins

/// `params:` / `varargs:` / `varkwargs:` / `doc:` in tasks.yaml, and the built-ins' own schemas.
@Suite struct TaskParamsManifestTests: ManifestTesting {
    @Test func paramsInTasksYamlKeepOrderShorthandAndBigIntegers() throws {
        try withTemporaryDirectory { dir in
            let m = try parse("""
            tasks:
              greet:
                builtin: add
                doc: Greets someone.
                params:
                  name: {type: string, minLength: 1}
                  times: {type: integer, minimum: 1, maximum: 123456789012345678901234567890, default: 1}
                  tags: {type: array, items: string}
                varargs: number
                varkwargs: true
            """, in: dir)
            let t = try #require(m.tasks["greet"])
            #expect(t.paramsDeclared)
            #expect(t.doc == "Greets someone.")
            let p = try #require(t.params)
            #expect(p.params.map(\.name) == ["name", "times", "tags"])
            #expect(p.usage == "greet(name: string, times: integer = 1, tags: array[string], *args: number, **kwargs)")
            #expect(p.params[1].schema.maximum?.text == "123456789012345678901234567890")
            #expect(p.validate(task: "greet", args: ["ann", .number("123456789012345678901234567890"), ["a"], 2.5], kwargs: [JSONMember("z", nil)]) == nil)
            #expect(p.validate(task: "greet", args: ["ann", .number("123456789012345678901234567891"), []], kwargs: [])?.path == "times")
            #expect(p.validate(task: "greet", args: ["ann", 1, [1]], kwargs: [])?.message == "greet: argument tags[0]: expected string, got integer 1")
            // Quoted scalars stay strings: "5" is not a number.
            let q = try parse("tasks:\n  t: {builtin: add, params: {x: {enum: ['5', 5]}}}\n", in: dir)
            let e = try #require(q.tasks["t"]?.params?.params.first?.schema.enumValues)
            #expect(e == [.string("5"), .int(5)])
        }
    }

    @Test func badSchemasInTasksYamlNameTheTaskAndTheKeyword() throws {
        try withTemporaryDirectory { dir in
            expectError("tasks:\n  greet:\n    builtin: add\n    params:\n      times: {type: integer, minimum: one}\n", in: dir, at: "5:7",
                        ["greet.params.times.minimum must be a number"])
            expectError("tasks:\n  greet:\n    builtin: add\n    params: {x: {minimun: 1}}\n", in: dir, at: "4:13",
                        ["greet.params.x: unknown keyword 'minimun'", "did you mean 'minimum'?"])
            expectError("tasks:\n  greet:\n    builtin: add\n    params: [x, y]\n", in: dir, at: "4:13",
                        ["greet.params must be a mapping of parameter names to schemas"])
            expectError("tasks:\n  greet:\n    builtin: add\n    varargs: {type: nope}\n", in: dir, at: "4:14",
                        ["greet.varargs.type: unknown type 'nope'"])
            expectError("tasks:\n  greet:\n    builtin: add\n    params: null\n    varargs: true\n", in: dir, at: "5:14",
                        ["'params: null' turns it off"])
            expectError("tasks:\n  greet:\n    builtin: add\n    doc: [a]\n", in: dir, at: "4:10", ["greet.doc must be a string"])
            expectError("tasks:\n  greet:\n    builtin: add\n    parms: {}\n", in: dir, at: "4:5", ["unknown key 'parms'"])
        }
    }

    @Test func builtinsDeclareTheirSchemasAndTasksYamlMayOverrideOrTurnThemOff() throws {
        try withTemporaryDirectory { dir in
            let m = try Manifest.parse("""
            tasks:
              a: {builtin: add}
              b: {builtin: add, params: {x: integer, y: integer}}
              c: {builtin: add, params: null}
              d: {builtin: echo}
              f: {builtin: fail}
              s: {builtin: sum}
            """, path: "t.yaml", baseDirectory: dir.path, builtins: Builtins.registry.names).withBuiltinSchemas(Builtins.registry)
            #expect(m.tasks["a"]?.params?.usage == "a(x: number, y: number)")
            #expect(m.tasks["a"]?.doc != nil)
            #expect(m.tasks["a"]?.params?.validate(task: "a", args: [1, 2.5], kwargs: []) == nil)
            #expect(m.tasks["a"]?.params?.validate(task: "a", args: [.number("1" + String(repeating: "0", count: 100)), 2], kwargs: []) == nil)
            #expect(m.tasks["a"]?.params?.validate(task: "a", args: [1, "2"], kwargs: [])?.message == #"a: argument y: expected number, got string "2""#)
            #expect(m.tasks["a"]?.params?.validate(task: "a", args: [1], kwargs: [])?.message == "a() missing 1 required argument: 'y'")
            #expect(m.tasks["b"]?.params?.validate(task: "b", args: [1, 2.5], kwargs: [])?.path == "y")
            #expect(m.tasks["c"]?.params == nil && m.tasks["c"]?.paramsDeclared == true)
            #expect(m.tasks["d"]?.params?.validate(task: "d", args: [1, "x", nil], kwargs: [JSONMember("k", [1])]) == nil)
            // fail: anything, as before (a non-string message falls back to the default).
            #expect(m.tasks["f"]?.params?.validate(task: "f", args: [123, 4], kwargs: [JSONMember("k", 1)]) == nil)
            #expect(m.tasks["s"]?.params?.validate(task: "s", args: [[1, 2.5, .number("99999999999999999999999")]], kwargs: []) == nil)
            #expect(m.tasks["s"]?.params?.validate(task: "s", args: [[1, "2"]], kwargs: [])?.path == "numbers[1]")
        }
    }

    @Test func everyBuiltinAcceptsWhatItAcceptedBeforeSchemas() throws {
        // Valid Celery calls, as Python clients send them (ints, floats, kwargs).
        let r = Builtins.registry
        let good: [(String, [JSONValue], [JSONMember])] = [
            ("add", [4, 6], []), ("add", [4.5, 6], []), ("add", [], [JSONMember("x", 1), JSONMember("y", 2)]),
            ("factorial", [10], []), ("factorial", [], [JSONMember("n", 5)]),
            ("mat_mul", [3, 4], []), ("mat_mul", [], [JSONMember("m", 2), JSONMember("n", 1)]),
            ("sleep", [0.01], []), ("sleep", [0], []),
            ("sum", [[1, 2, 3.5]], []), ("echo", [], []), ("echo", [1, "a"], [JSONMember("b", nil)]),
            ("fail", [], []), ("fail", ["boom"], []),
        ]
        for (name, args, kwargs) in good {
            let p = try #require(r.params[name], "\(name) declares no schema")
            #expect(p.validate(task: name, args: args, kwargs: kwargs) == nil, "\(name) \(args) \(kwargs)")
        }
        #expect(Set(r.params.keys) == r.names, "every built-in declares its schema")
    }
}
