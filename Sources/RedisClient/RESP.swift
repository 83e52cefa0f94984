/// Commands written straight in the Redis protocol (RESP) by their producer, for writers of
/// many large commands (the worker's events and task history): the bytes of each argument
/// are written once, where they go, instead of into an argument array that `appendAll`
/// copies again (measured: with task events on, the envelopes' copies and allocations were
/// about a fifth of the event flusher's CPU).
public struct RESPBatch: Sendable {
    /// The commands, one after the other, as Redis reads them.
    public var bytes: [UInt8] = []
    /// How many commands `bytes` holds (as many replies come back).
    public private(set) var count = 0

    public init(capacity: Int = 0) { bytes.reserveCapacity(capacity) }

    public var isEmpty: Bool { count == 0 }

    /// Starts a command of `arguments` arguments (its name included); the caller then writes
    /// exactly that many, with `argument` or `bulkHeader` and `endBulk`.
    public mutating func command(arguments: Int) {
        number(UInt8(ascii: "*"), arguments)
        count += 1
    }

    /// One whole argument.
    public mutating func argument(_ value: [UInt8]) {
        bulkHeader(value.count)
        bytes.append(contentsOf: value)
        endBulk()
    }

    /// One whole argument from static text (a command's name).
    public mutating func argument(_ value: StaticString) {
        bulkHeader(value.utf8CodeUnitCount)
        value.withUTF8Buffer { bytes.append(contentsOf: $0) }
        endBulk()
    }

    /// The length line of an argument of exactly `length` bytes, which the caller appends to
    /// `bytes` next, then calls `endBulk`.
    public mutating func bulkHeader(_ length: Int) {
        number(UInt8(ascii: "$"), length)
    }

    public mutating func endBulk() {
        bytes.append(13)
        bytes.append(10)
    }

    public mutating func removeAll() {
        bytes.removeAll(keepingCapacity: true)
        count = 0
    }

    private mutating func number(_ prefix: UInt8, _ n: Int) {
        bytes.append(prefix)
        RESPBatch.appendDecimal(n, to: &bytes)
        bytes.append(13)
        bytes.append(10)
    }

    /// A non-negative decimal, digit by digit (no String).
    static func appendDecimal(_ n: Int, to out: inout [UInt8]) {
        precondition(n >= 0, "RESP lengths are not negative")
        var divisor = 1
        while divisor <= n / 10 { divisor *= 10 }
        var rest = n
        repeat {
            out.append(0x30 + UInt8(rest / divisor))
            rest %= divisor
            divisor /= 10
        } while divisor > 0
    }

    /// The commands again, each as its arguments (for tests and debugging: a RESP reader of
    /// what `command`/`argument` write, nothing more). Nil if `bytes` is not such a batch.
    public var commands: [RedisCommand]? {
        var out: [RedisCommand] = []
        var i = 0
        let b = bytes
        func line() -> Int? {
            guard let end = b[i...].firstIndex(of: 13), end + 1 < b.count, b[end + 1] == 10,
                  let n = Int(String(decoding: b[(i + 1)..<end], as: UTF8.self)) else { return nil }
            i = end + 2
            return n
        }
        while i < b.count {
            guard b[i] == UInt8(ascii: "*"), let argc = line() else { return nil }
            var args: [[UInt8]] = []
            for _ in 0..<argc {
                guard i < b.count, b[i] == UInt8(ascii: "$"), let len = line(), i + len + 2 <= b.count else { return nil }
                args.append(Array(b[i..<(i + len)]))
                i += len + 2
            }
            out.append(RedisCommand(args))
        }
        return out.count == count ? out : nil
    }
}
