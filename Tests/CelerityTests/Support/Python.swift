import Foundation

enum Python {
    /// math.factorial(n) as decimal text, computed by Python itself.
    static func factorial(_ n: Int) async throws -> String {
        let r = try await ChildProcess.run(Paths.python3, ["-c", "import math,sys; sys.set_int_max_str_digits(0); print(math.factorial(\(n)))"])
        guard r.status == 0 else { throw TestFailure("python3 failed: \(r.output)") }
        return r.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
