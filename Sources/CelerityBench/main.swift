// celerity-bench: benchmarks, run in release builds.
//   swift run -c release celerity-bench compute [--repeat N]   built-ins vs the tutorial's Python code
//   swift run -c release celerity-bench plugins [--calls N]    plugin modes vs built-ins, through a worker on Redis
//   celerity-bench e2e|latency --broker URL [--calls N]          client side of scripts/bench.sh (a worker must be running)
//   celerity-bench workflow --broker URL --chain-steps N | --chord-parts N   the same, for a chain / a chord
//   celerity-bench schema [--calls N]                           the worker's argument check, ns per call
import BigInt
import Celerity
import CelerityBuiltins
import Foundation

let mode = CommandLine.arguments.dropFirst().first ?? "compute"
switch mode {
case "compute": computeBenchmarks()
case "plugins": await pluginBenchmarks()
case "e2e", "latency": await clientBenchmarks(mode)
case "workflow": await workflowBenchmark()
case "schema": schemaBenchmark()
default:
    print("usage: celerity-bench compute [--repeat N] | plugins [--calls N] | e2e|latency --broker URL [--calls N] | workflow --broker URL --chain-steps N|--chord-parts N | schema [--calls N]\n(the side-by-side run with Celery: scripts/bench.sh)")
    exit(2)
}

func computeBenchmarks() {
    let repeats = CommandLine.arguments.firstIndex(of: "--repeat").flatMap { i in Int(CommandLine.arguments[i + 1]) } ?? 5

    func best(_ n: Int, _ body: () throws -> Void) rethrows -> Double {
        var best = Double.infinity
        for _ in 0..<n {
            let t0 = ContinuousClock.now
            try body()
            let d = ContinuousClock.now - t0
            best = min(best, Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15)
        }
        return best
    }

    /// Runs a Python snippet that prints one number (milliseconds).
    func python(_ code: String) -> Double? {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-c", code]
        let out = Pipe()
        p.standardOutput = out
        do { try p.run() } catch { return nil }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Double(String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }

    func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
    func lpad(_ s: String, _ n: Int) -> String { s.count >= n ? s : String(repeating: " ", count: n - s.count) + s }

    func row(_ name: String, _ ours: Double, _ theirs: Double?, _ theirName: String) {
        let t = theirs.map { String(format: "%.1f ms", $0) } ?? "n/a"
        let ratio = theirs.map { String(format: "%.2f×", $0 / ours) } ?? "n/a"
        print(pad(name, 44) + lpad(String(format: "%.1f ms", ours), 12) + lpad(t, 12) + lpad(ratio, 9) + "   vs " + theirName)
    }

    print("best of \(repeats) runs, milliseconds; ratio = Python time / Celerity time (higher is better for Celerity)")
    print(pad("benchmark", 44) + lpad("Celerity", 12) + lpad("Python", 12) + lpad("ratio", 9))

    // factorial(20000): exact value and its decimal text.
    var digits = 0
    let factTotal = best(repeats) { digits = DecimalLimbs.decimalString(DecimalLimbs.factorial(20000)).count }
    let factCompute = best(repeats) { _ = DecimalLimbs.factorial(20000) }
    let pyFactTotal = python("""
    import sys, time
    sys.set_int_max_str_digits(0)
    best = 1e9
    for _ in range(\(repeats)):
        t = time.perf_counter()
        r = 1
        for i in range(1, 20001): r *= i
        s = str(r)
        best = min(best, time.perf_counter() - t)
    print(best * 1000)
    """)
    let pyFactCompute = python("""
    import time
    best = 1e9
    for _ in range(\(repeats)):
        t = time.perf_counter()
        r = 1
        for i in range(1, 20001): r *= i
        best = min(best, time.perf_counter() - t)
    print(best * 1000)
    """)
    precondition(digits == 77_338, "factorial(20000) has \(digits) digits")
    row("factorial(20000): value", factCompute, pyFactCompute, "tutorial's Python loop")
    row("factorial(20000): value + decimal text", factTotal, pyFactTotal, "Python loop + str()")

    // mat_mul(1000, 1000): random 1000×1000 matrices and their product.
    let mm = best(repeats) { _ = try! Builtins.multiplyRandom(m: 1000, n: 1000) }
    let pyMM = python("""
    import time, numpy as np
    best = 1e9
    for _ in range(\(repeats)):
        t = time.perf_counter()
        a = np.random.rand(1000, 1000); b = np.random.rand(1000, 1000)
        c = a @ b
        best = min(best, time.perf_counter() - t)
    print(best * 1000)
    """)
    row("mat_mul(1000, 1000): random + product", mm, pyMM, "numpy rand + @")
    var rng = SystemRandomNumberGenerator()
    let ma = (0..<1_000_000).map { _ in Double.random(in: 0..<1, using: &rng) }
    let mb = (0..<1_000_000).map { _ in Double.random(in: 0..<1, using: &rng) }
    let mmOnly = best(repeats) { _ = try! Builtins.multiply(ma, mb, m: 1000, n: 1000) }
    let pyMMOnly = python("""
    import time, numpy as np
    a = np.random.rand(1000, 1000); b = np.random.rand(1000, 1000)
    best = 1e9
    for _ in range(\(repeats)):
        t = time.perf_counter()
        c = a @ b
        best = min(best, time.perf_counter() - t)
    print(best * 1000)
    """)
    row("mat_mul(1000, 1000): product only (dgemm)", mmOnly, pyMMOnly, "numpy a @ b")
    let mmJSON = best(max(1, repeats / 2)) {
        _ = try! Builtins.matMul(TaskCall(id: "b", task: "mat_mul", args: [1000, 1000])).serializedBytes()
    }
    let pyMMJSON = python("""
    import time, json, numpy as np
    best = 1e9
    for _ in range(\(max(1, repeats / 2))):
        t = time.perf_counter()
        a = np.random.rand(1000, 1000); b = np.random.rand(1000, 1000)
        s = json.dumps((a @ b).tolist())
        best = min(best, time.perf_counter() - t)
    print(best * 1000)
    """)
    row("mat_mul(1000, 1000): + result as JSON text", mmJSON, pyMMJSON, "numpy + tolist + json.dumps")

}
