// How much of a failure is kept. A plugin's error answer may be as large as its stdout cap
// (16 MiB by default): a 15 MB message would be stored in Redis, sent to every waiting client
// and written to the log as one line. The worker cuts every failure once, where it settles
// it (Worker.settle), and logs a shorter form (`description`). Each cut says so, with the
// size of the whole: "… [cut: 15,000,000 bytes in all]".

import Foundation

extension TaskFailure {
    /// The longest exception type kept, in UTF-8 bytes. Class names are short (Python's
    /// longest built-in is 31 characters); 200 leaves room for a dotted path. A longer type is
    /// garbage, and Celery clients turn it into a class name.
    public static let maxTypeBytes = 200
    /// The longest message stored, in UTF-8 bytes: a long validation error fits many times
    /// over, and a failure document stays small next to Redis' defaults (a client reads the
    /// whole document on every `get`).
    public static let maxMessageBytes = 64 * 1024
    /// The longest traceback stored, in UTF-8 bytes: a few hundred frames. Its first and last
    /// halves are kept (Python puts the innermost frame and the exception last, Node first).
    public static let maxTracebackBytes = 64 * 1024
    /// The longest message in a log line (`description`), in UTF-8 bytes: one line a person
    /// can read, well below the line limits of log shippers (Docker splits at 16 KiB).
    public static let maxLoggedMessageBytes = 2 * 1024

    /// This failure with its type, message and traceback cut to the limits above.
    public func capped() -> TaskFailure {
        var f = self
        f.type = TaskFailure.cut(type, to: TaskFailure.maxTypeBytes)
        f.message = TaskFailure.cut(message, to: TaskFailure.maxMessageBytes)
        f.traceback = traceback.map { TaskFailure.cutMiddle($0, to: TaskFailure.maxTracebackBytes) }
        return f
    }

    /// `type: message` for a log line, the message cut to `maxLoggedMessageBytes`. A message
    /// already cut keeps its mark (with the size of the whole).
    public var description: String {
        let t = TaskFailure.cut(type, to: TaskFailure.maxTypeBytes)
        guard message.utf8.count > TaskFailure.maxLoggedMessageBytes else { return "\(t): \(message)" }
        if let mark = TaskFailure.cutMark(of: message) {
            return "\(t): \(TaskFailure.prefix(message, bytes: TaskFailure.maxLoggedMessageBytes))\(mark)"
        }
        return "\(t): \(TaskFailure.cut(message, to: TaskFailure.maxLoggedMessageBytes))"
    }

    /// `text` itself when it fits in `limit` UTF-8 bytes; else its start (cut at a character
    /// boundary) and "… [cut: N bytes in all]".
    static func cut(_ text: String, to limit: Int) -> String {
        let total = text.utf8.count
        guard total > limit else { return text }
        return prefix(text, bytes: limit) + "… [cut: \(grouped(total)) bytes in all]"
    }

    /// Like `cut`, but keeps the first and the last half and says what is missing between.
    static func cutMiddle(_ text: String, to limit: Int) -> String {
        let total = text.utf8.count
        guard total > limit else { return text }
        return prefix(text, bytes: limit / 2) + "\n… [cut: \(grouped(total)) bytes in all, the middle left out] …\n" + suffix(text, bytes: limit / 2)
    }

    /// The longest start of `text` of at most `bytes` UTF-8 bytes that ends between scalars.
    static func prefix(_ text: String, bytes: Int) -> String {
        let utf8 = text.utf8
        var end = utf8.index(utf8.startIndex, offsetBy: bytes)
        while end > utf8.startIndex && end < utf8.endIndex && utf8[end] & 0xC0 == 0x80 { end = utf8.index(before: end) }
        return String(decoding: utf8[..<end], as: UTF8.self)
    }

    /// The longest end of `text` of at most `bytes` UTF-8 bytes that starts on a scalar.
    static func suffix(_ text: String, bytes: Int) -> String {
        let utf8 = text.utf8
        var start = utf8.index(utf8.endIndex, offsetBy: -bytes)
        while start < utf8.endIndex && utf8[start] & 0xC0 == 0x80 { start = utf8.index(after: start) }
        return String(decoding: utf8[start...], as: UTF8.self)
    }

    /// The "… [cut: N bytes in all]" that ends `text`, if it does.
    static func cutMark(of text: String) -> Substring? {
        guard text.hasSuffix(" bytes in all]"), let r = text.range(of: "… [cut: ", options: .backwards) else { return nil }
        let mark = text[r.lowerBound...]
        let number = mark.dropFirst("… [cut: ".count).dropLast(" bytes in all]".count)
        return !number.isEmpty && number.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ",") }) ? mark : nil
    }

    /// 15000000 → "15,000,000".
    static func grouped(_ n: Int) -> String {
        var digits = Array(String(n))
        var i = digits.count - 3
        while i > 0 { digits.insert(",", at: i); i -= 3 }
        return String(digits)
    }
}
