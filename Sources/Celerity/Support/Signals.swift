import Foundation

/// Signal names and numbers as Celery's `revoke(..., signal=...)` takes them ("SIGKILL",
/// "KILL", "9"; celery/platforms.py `signum`). Written here: Foundation has no table of them.
enum Signals {
    static let table: [(String, Int32)] = [
        ("HUP", SIGHUP), ("INT", SIGINT), ("QUIT", SIGQUIT), ("ABRT", SIGABRT), ("KILL", SIGKILL), ("USR1", SIGUSR1),
        ("USR2", SIGUSR2), ("ALRM", SIGALRM), ("TERM", SIGTERM), ("CONT", SIGCONT), ("STOP", SIGSTOP), ("TSTP", SIGTSTP),
    ]

    /// The number of a signal given by name (with or without SIG, any case) or number; nil if unknown.
    static func number(_ text: String) -> Int32? {
        let t = text.trimmingCharacters(in: .whitespaces)
        if let n = Int32(t) { return n > 0 && n < 65 ? n : nil }
        var name = t.uppercased()
        if name.hasPrefix("SIG") { name.removeFirst(3) }
        return table.first { $0.0 == name }?.1
    }

    /// "SIGUSR1", or "signal 40" for one without a name here.
    static func name(_ n: Int32) -> String { table.first { $0.1 == n }.map { "SIG" + $0.0 } ?? "signal \(n)" }
}

extension TaskFailure {
    /// The signal of a revocation that stopped the task while it ran (`revoke --terminate`):
    /// SIGTERM unless another was named; nil when it did not stop a running task.
    var terminationSignal: Int32? {
        guard type == "TaskRevokedError" else { return nil }
        if message.hasSuffix("(terminated)") { return SIGTERM }
        guard message.hasSuffix(")"), let r = message.range(of: "(terminated by ") else { return nil }
        return Signals.number(String(message[r.upperBound..<message.index(before: message.endIndex)]))
    }
}
