import BigInt
import Foundation
import Celerity
import COpenBLAS
#if canImport(Glibc)
import Glibc
#endif

/// The built-in Swift handlers, by the names tasks.yaml uses in `builtin:`.
public enum Builtins {
    /// Every built-in: `add`, `factorial`, `mat_mul`, `echo`, `sleep`, `fail`, `sum`.
    public static var registry: BuiltinRegistry {
        var r = BuiltinRegistry()
        r.register("add", inline: true, params: schema(#"{"x": "number", "y": "number"}"#, doc: "x + y: exact for integers of any size; floats add as doubles.")) { call in try add(call) }
        r.register("factorial", params: schema(#"{"n": {"type": "integer", "description": "0 ≤ n ≤ 1000000"}}"#, doc: "n!, exact.")) { call in try factorial(call) }
        r.register("mat_mul", params: schema(#"{"m": {"type": "integer", "description": "≥ 1"}, "n": {"type": "integer", "description": "≥ 1"}}"#, doc: "The m×m product of a random m×n and a random n×m matrix (OpenBLAS), as m rows of m floats.")) { call in try matMul(call) }
        r.register("echo", inline: true, params: schema("{}", varargs: true, varkwargs: true, doc: "Returns {\"args\": args, \"kwargs\": kwargs}.")) { call in .object([JSONMember("args", .array(call.args)), JSONMember("kwargs", .object(call.kwargs))]) }
        r.register("sleep", params: schema(#"{"seconds": {"type": "number", "description": "≥ 0 (at most 3600 are slept)"}}"#, doc: "Sleeps, then returns seconds.")) { call in
            let v = try call.bind(["seconds"])
            guard let s = v[0].doubleValue, s >= 0 else { throw TaskFailure(type: "ValueError", message: "seconds must be a non-negative number") }
            // Sleeps in small steps so that a soft time limit (call.isCancelled) can stop it.
            let until = Date().addingTimeInterval(min(s, 3600))
            while Date() < until {
                if call.isCancelled { throw TaskFailure.softTimeLimit(0) }
                usleep(useconds_t(min(until.timeIntervalSinceNow, 0.02) * 1_000_000))
            }
            return v[0]
        }
        // sum(numbers): a chord's usual body (`chord(parts, sum.s())`), exact like add.
        r.register("sum", inline: true, params: schema(#"{"numbers": {"type": "array", "items": "number"}}"#, doc: "The exact sum of a list of numbers (a chord's usual body).")) { call in
            let v = try call.bind(["numbers"])
            guard let items = v[0].arrayValue else { throw TaskFailure(type: "TypeError", message: "sum() takes a list of numbers, got \(v[0].serialized().prefix(80))") }
            var total: JSONValue = .int(0)
            for x in items { total = try add(TaskCall(id: call.id, task: call.task, args: [total, x])) }
            return total
        }
        r.register("fail", params: schema(#"{"message": {"default": "failed on purpose", "description": "the error message when a string"}}"#, varargs: true, varkwargs: true, doc: "Raises ValueError(message).")) { call in
            let message = call.args.first?.stringValue ?? "failed on purpose"
            throw TaskFailure(type: "ValueError", message: message)
        }
        return r
    }

    /// A built-in's argument schema, from its JSON text (fixed at build time: a bad one is a
    /// programming error, caught by BuiltinsTests).
    static func schema(_ params: String, varargs: Bool = false, varkwargs: Bool = false, doc: String) -> TaskParams {
        do {
            return try TaskParams.parse(try JSONValue(parsing: params), varargs: .bool(varargs), varkwargs: .bool(varkwargs), doc: doc)
        } catch {
            preconditionFailure("built-in schema \(params): \(error)")
        }
    }

    /// add(x, y): exact for integers of any size; floats (or a float and an int) add as doubles.
    public static func add(_ call: TaskCall) throws -> JSONValue {
        let v = try call.bind(["x", "y"])
        let (x, y) = (v[0], v[1])
        guard case let .number(a) = x, case let .number(b) = y else {
            throw TaskFailure(type: "TypeError", message: "add() needs two numbers, got \(kind(x)) and \(kind(y))")
        }
        if x.isIntegerLiteral && y.isIntegerLiteral {
            if let i = x.intValue, let j = y.intValue {
                let (s, overflow) = i.addingReportingOverflow(j)
                if !overflow { return .int(s) }
            }
            guard let bi = BigInt(a), let bj = BigInt(b) else { throw TaskFailure(type: "ValueError", message: "add(): cannot read integers \(a.prefix(40)) and \(b.prefix(40))") }
            let s = bi + bj
            let text = BigMath.decimalString(s.magnitude)
            return .number(s.sign == .minus && !s.magnitude.isZero ? "-" + text : text)
        }
        guard let d1 = x.doubleValue, let d2 = y.doubleValue else { throw TaskFailure(type: "ValueError", message: "add(): unreadable numbers") }
        return .double(d1 + d2)
    }

    /// factorial(n): exact n! for 0 ≤ n ≤ 1,000,000.
    public static func factorial(_ call: TaskCall) throws -> JSONValue {
        let v = try call.bind(["n"])
        guard v[0].isIntegerLiteral, let n = v[0].intValue else {
            throw TaskFailure(type: "TypeError", message: "factorial() needs an integer n, got \(kind(v[0]))")
        }
        guard n >= 0 else { throw TaskFailure(type: "ValueError", message: "factorial() not defined for negative values (n = \(n))") }
        guard n <= 1_000_000 else { throw TaskFailure(type: "ValueError", message: "factorial(): n = \(n) is above the limit of 1,000,000") }
        return .number(DecimalLimbs.decimalString(DecimalLimbs.factorial(n)))
    }

    /// mat_mul(m, n): the product of a random m×n and a random n×m matrix (uniform [0, 1)),
    /// by OpenBLAS's dgemm, as m rows of m floats.
    public static func matMul(_ call: TaskCall) throws -> JSONValue {
        let v = try call.bind(["m", "n"])
        guard v[0].isIntegerLiteral, v[1].isIntegerLiteral, let m = v[0].intValue, let n = v[1].intValue else {
            throw TaskFailure(type: "TypeError", message: "mat_mul() needs integers m and n, got \(kind(v[0])) and \(kind(v[1]))")
        }
        guard m >= 1, n >= 1 else { throw TaskFailure(type: "ValueError", message: "mat_mul(): m and n must be ≥ 1 (got \(m), \(n))") }
        guard m <= 16_000_000, n <= 16_000_000, m * n <= 16_000_000, m * m <= 16_000_000 else { throw TaskFailure(type: "ValueError", message: "mat_mul(): \(m)×\(n) is too large (at most 16M elements per matrix)") }
        let c = try multiplyRandom(m: m, n: n)
        var rows: [JSONValue] = []
        rows.reserveCapacity(m)
        for i in 0..<m {
            var row: [JSONValue] = []
            row.reserveCapacity(m)
            for j in 0..<m { row.append(.double(c[i * m + j])) }
            rows.append(.array(row))
        }
        return .array(rows)
    }

    /// The m×m product of random m×n and n×m matrices, row-major.
    public static func multiplyRandom(m: Int, n: Int) throws(TaskFailure) -> [Double] {
        var rng = SplitMix64(seed: UInt64.random(in: .min ... .max))
        func randomMatrix(_ count: Int) -> [Double] {
            [Double](unsafeUninitializedCapacity: count) { buf, initialized in
                for i in 0..<count { buf[i] = rng.nextUnitDouble() }
                initialized = count
            }
        }
        let a = randomMatrix(m * n)
        let b = randomMatrix(n * m)
        return try multiply(a, b, m: m, n: n)
    }

    /// C (m×m) = A (m×n) · B (n×m), row-major, with OpenBLAS's cblas_dgemm.
    public static func multiply(_ a: [Double], _ b: [Double], m: Int, n: Int) throws(TaskFailure) -> [Double] {
        guard let dgemm = OpenBLAS.dgemm else {
            throw TaskFailure(type: "RuntimeError", message: "mat_mul needs OpenBLAS, which could not be loaded: \(OpenBLAS.loadError) (apt-get install libopenblas0)")
        }
        var c = [Double](repeating: 0, count: m * m)
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                c.withUnsafeMutableBufferPointer { pc in
                    dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, blasint(m), blasint(m), blasint(n),
                          1.0, pa.baseAddress, blasint(n), pb.baseAddress, blasint(m), 0.0, pc.baseAddress, blasint(m))
                }
            }
        }
        return c
    }

    static func kind(_ v: JSONValue) -> String {
        switch v {
        case .null: return "null"
        case .bool: return "a boolean"
        case let .number(t): return "the number \(t.prefix(30))"
        case .string: return "a string"
        case .array: return "a list"
        case .object: return "an object"
        }
    }
}

/// A small fast PRNG for test matrices (not for secrets): 2M draws cost ~2 ms instead of
/// tens with the system generator.
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func nextUnitDouble() -> Double { Double(next() >> 11) * 0x1.0p-53 }
}

/// OpenBLAS, loaded the first time a matrix is multiplied rather than when the program
/// starts: a worker that never runs mat_mul does not map it, nor the libraries it pulls in
/// (libgfortran, libquadmath), nor start its threads. Measured on the reference machine:
/// ~2.5 MB less resident memory for an idle worker. (The header still comes from
/// libopenblas-dev through COpenBLAS, without linking the library.)
enum OpenBLAS {
    typealias Dgemm = @convention(c) (CBLAS_ORDER, CBLAS_TRANSPOSE, CBLAS_TRANSPOSE, blasint, blasint, blasint, Double,
                                      UnsafePointer<Double>?, blasint, UnsafePointer<Double>?, blasint, Double,
                                      UnsafeMutablePointer<Double>?, blasint) -> Void
    private static let loaded: (Dgemm?, String) = {
        var why = ""
        for name in ["libopenblas.so.0", "libopenblas.so"] {
            guard let handle = dlopen(name, RTLD_NOW | RTLD_LOCAL) else {
                why = dlerror().map { String(cString: $0) } ?? "\(name) not found"
                continue
            }
            guard let symbol = dlsym(handle, "cblas_dgemm") else { return (nil, "\(name) has no cblas_dgemm") }
            return (unsafeBitCast(symbol, to: Dgemm.self), "")
        }
        return (nil, why)
    }()
    static var dgemm: Dgemm? { loaded.0 }
    static var loadError: String { loaded.1 }
}
