import Celerity
import CelerityBuiltins
import Foundation

/// `celerity-bench schema [--calls N]`: what the worker's argument check costs per call, in
/// nanoseconds (best of 5 runs of N checks), for add's built-in schema, two bounded integers,
/// and a nested schema; one JSON line on stdout (scripts/bench.sh row j).
func schemaBenchmark() {
    let a = CommandLine.arguments
    let n = a.firstIndex(of: "--calls").flatMap { Int(a[$0 + 1]) } ?? 1_000_000
    func params(_ json: String) -> TaskParams {
        do { return try TaskParams.parse(try JSONValue(parsing: json)) } catch { fatalError("\(error)") }
    }
    let cases: [(String, TaskParams, [JSONValue], [JSONMember])] = [
        ("builtin_ns", Builtins.registry.params["add"]!, [.int(12345), .int(12345)], []),
        ("bounded_ns", params(#"{"x": {"type": "integer", "minimum": 0, "maximum": 1000000000}, "y": {"type": "integer", "minimum": 0, "maximum": 1000000000}}"#),
         [.int(12345), .int(12345)], []),
        ("nested_ns", params(#"{"name": {"type": "string", "minLength": 1}, "rows": {"type": "array", "items": {"type": "array", "items": "number"}}, "times": {"type": "integer", "default": 1}}"#),
         ["ann", [[1, 2.5], [3, 4]]], [JSONMember("times", 3)]),
    ]
    var out: [JSONMember] = [JSONMember("calls", .int(n))]
    for (name, p, args, kwargs) in cases {
        var best = Double.infinity
        var bad = 0
        for _ in 0..<5 {
            let t0 = ContinuousClock.now
            for _ in 0..<n where p.validate(task: "add", args: args, kwargs: kwargs) != nil { bad += 1 }
            let d = ContinuousClock.now - t0
            best = min(best, (Double(d.components.seconds) * 1e9 + Double(d.components.attoseconds) / 1e9) / Double(n))
        }
        precondition(bad == 0, "\(name): a good call was refused")
        out.append(JSONMember(name, .double((best * 10).rounded() / 10)))
    }
    print(JSONValue.object(out).serialized())
}
