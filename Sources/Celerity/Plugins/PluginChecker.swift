import Foundation
import Subprocess
import Synchronization
import SystemPackage

/// Lines read from a plugin's stdout, taken in order.
final class LineBuffer: Sendable {
    private let state = Mutex<(lines: [[UInt8]], closed: Bool)>(([], false))
    func append(_ line: [UInt8]) { state.withLock { $0.lines.append(line) } }
    func close() { state.withLock { $0.closed = true } }
    func take() -> [UInt8]? { state.withLock { $0.lines.isEmpty ? nil : $0.lines.removeFirst() } }
    var isClosed: Bool { state.withLock { $0.closed && $0.lines.isEmpty } }
}

/// Drives a plugin executable through the protocol, both modes, and says in plain words what
/// it got wrong (`celerity plugin check`).
public struct PluginChecker: Sendable {
    public enum Mode: String, Sendable, CaseIterable { case oneshot, persistent, both }

    public struct Finding: Sendable, CustomStringConvertible {
        public var passed: Bool
        public var check: String
        public var detail: String
        public var description: String { "\(passed ? "PASS" : "FAIL")  \(check)\(detail.isEmpty ? "" : ": \(detail)")" }
    }

    public var argv: [String]
    public var task: String
    public var args: [JSONValue]
    /// A task that sleeps for its first argument (seconds), to test cancellation; nil skips it.
    public var slowTask: String?
    public var mode: Mode
    public var timeout: Double = 10

    public init(argv: [String], task: String, args: [JSONValue], slowTask: String?, mode: Mode) {
        self.argv = argv
        self.task = task
        self.args = args
        self.slowTask = slowTask
        self.mode = mode
    }

    /// A 100-digit integer, beyond every fixed-width type.
    static let bigInteger = JSONValue.number("1" + String(repeating: "2345678901", count: 9) + "234567890")

    public func run() async -> [Finding] {
        var findings: [Finding] = []
        guard let exe = Executables.find(argv[0]) else {
            return [Finding(passed: false, check: "program", detail: "'\(argv[0])' not found, not executable, or a directory")]
        }
        if mode != .persistent { findings += await oneShotChecks(exe) }
        if mode != .oneshot { findings += await persistentChecks(exe) }
        return findings
    }

    /// Its own process group, SIGKILLed as a whole when a run is cancelled.
    static func platformOptions() -> PlatformOptions {
        var platform = PlatformOptions()
        platform.processGroupID = 0
        platform.teardownSequence = [.send(signal: .kill, toProcessGroup: true, allowedDurationToNextStep: .seconds(1))]
        return platform
    }


    func request(_ id: String, task: String, args: [JSONValue]) -> JSONValue {
        .object([JSONMember("id", .string(id)), JSONMember("task", .string(task)), JSONMember("args", .array(args)),
                 JSONMember("kwargs", .object([])), JSONMember("attempt", 1), JSONMember("deadline", .null),
                 JSONMember("meta", .object([JSONMember("queue", "check"), JSONMember("root_id", .string(id)), JSONMember("parent_id", .null), JSONMember("retries", 0)]))])
    }

    // MARK: One-shot

    struct OneShotRun { var status: TerminationStatus?; var stdout: [UInt8]; var stderr: [UInt8]; var timedOut: Bool }

    func oneShot(_ exe: String, stdin: [UInt8]) async -> OneShotRun {
        let platform = PluginChecker.platformOptions()
        let limit = timeout
        let env: [Environment.Key: String] = ["CELERITY_PROTOCOL": "1", "CELERITY_MODE": "oneshot", "CELERITY_TASK_ID": "check-1",
                                              "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin",
                                              "HOME": ProcessInfo.processInfo.environment["HOME"] ?? "/"]
        do {
            let run = try await withDeadline(.milliseconds(Int(limit * 1000))) {
                let r = try await Subprocess.run(.path(FilePath(exe)), arguments: Arguments(Array(argv.dropFirst())), environment: .custom(env),
                                                 platformOptions: platform, input: .array(stdin), output: .bytes(limit: 64 << 20), error: .bytes(limit: 8 << 20))
                return OneShotRun(status: r.terminationStatus, stdout: r.standardOutput, stderr: r.standardError, timedOut: false)
            }
            return run ?? OneShotRun(status: nil, stdout: [], stderr: [], timedOut: true)
        } catch {
            return OneShotRun(status: nil, stdout: Array("\(error)".utf8), stderr: [], timedOut: false)
        }
    }

    /// Checks a one-shot answer has the protocol's shape; returns nil when it does.
    func oneShotProblem(_ r: OneShotRun, expectError: Bool) -> String? {
        if r.timedOut { return "no answer within \(timeout) s (a one-shot plugin must read stdin to EOF, answer, and exit)" }
        guard case let .exited(code)? = r.status else {
            return "the process was killed by a signal (\(r.status.map { "\($0)" } ?? "did not start")): stderr: \(tail(r.stderr))"
        }
        guard code == 0 else { return "exit code \(code) (0 is expected with an answer on stdout; 75 asks for a retry); stderr: \(tail(r.stderr))" }
        guard let v = try? JSONValue(parsing: r.stdout) else {
            return r.stdout.isEmpty ? "nothing on stdout" : "stdout is not one JSON document (logs belong on stderr): \(TaskMessage.preview(r.stdout, limit: 120))"
        }
        let keys = Set(v.objectValue?.map(\.key) ?? [])
        if keys == ["result"] { return expectError ? "answered with a result where an error was expected: \(TaskMessage.preview(r.stdout, limit: 120))" : nil }
        if keys == ["error"] {
            guard let e = v["error"], e["type"]?.stringValue != nil, e["message"]?.stringValue != nil else {
                return "the error object needs a string 'type' and a string 'message': \(TaskMessage.preview(r.stdout, limit: 120))"
            }
            return nil
        }
        return "the answer must be {\"result\": …} or {\"error\": {…}}, got: \(TaskMessage.preview(r.stdout, limit: 120))"
    }

    func tail(_ bytes: [UInt8]) -> String {
        let s = String(decoding: bytes.suffix(300), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return s.isEmpty ? "(empty)" : s
    }

    func oneShotChecks(_ exe: String) async -> [Finding] {
        var out: [Finding] = []
        let normal = await oneShot(exe, stdin: request("check-1", task: task, args: args).serializedBytes())
        out.append(Finding(passed: oneShotProblem(normal, expectError: false) == nil, check: "one-shot: a normal call of \(task)",
                           detail: oneShotProblem(normal, expectError: false) ?? "answered \(String(decoding: normal.stdout.prefix(80), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))"))
        let bad = await oneShot(exe, stdin: Array("this is not JSON".utf8))
        let badProblem = oneShotProblem(bad, expectError: true)
        out.append(Finding(passed: badProblem == nil, check: "one-shot: input that is not JSON",
                           detail: badProblem.map { "should be answered with {\"error\": …} and exit 0; instead: \($0)" } ?? ""))
        let big = await oneShot(exe, stdin: request("check-3", task: task, args: [PluginChecker.bigInteger] + args.dropFirst()).serializedBytes())
        out.append(Finding(passed: oneShotProblem(big, expectError: false) == nil || (try? JSONValue(parsing: big.stdout))?["error"] != nil,
                           check: "one-shot: a 100-digit integer argument",
                           detail: oneShotProblem(big, expectError: false).map { "must not crash the plugin: \($0)" } ?? ""))
        // A plugin with one catch-all function may serve any name: a valid answer of either kind passes.
        let unknown = await oneShot(exe, stdin: request("check-4", task: "celerity.check.no-such-task", args: []).serializedBytes())
        let unknownProblem = oneShotProblem(unknown, expectError: false)
        out.append(Finding(passed: unknownProblem == nil, check: "one-shot: an unknown task name",
                           detail: unknownProblem.map { "should be answered with {\"error\": …} (or served by a catch-all): \($0)" } ?? ""))
        return out
    }

    // MARK: Persistent

    func persistentChecks(_ exe: String) async -> [Finding] {
        let (lines, input) = AsyncStream<[UInt8]>.makeStream()
        let answers = LineBuffer()
        let platform = PluginChecker.platformOptions()
        let env: [Environment.Key: String] = ["CELERITY_PROTOCOL": "1", "CELERITY_MODE": "persistent",
                                              "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin",
                                              "HOME": ProcessInfo.processInfo.environment["HOME"] ?? "/"]
        let checker = self
        do {
            let r = try await Subprocess.run(.path(FilePath(exe)), arguments: Arguments(Array(argv.dropFirst())), environment: .custom(env),
                                             platformOptions: platform, input: .inputWriter, output: .sequence, error: .discarded) { execution -> [Finding] in
                let writer = execution.standardInputWriter
                return await withTaskGroup(of: [Finding]?.self) { group in
                    group.addTask {
                        for await l in lines { _ = try? await writer.write(l + [10]) }
                        try? await writer.finish()
                        return nil
                    }
                    group.addTask {
                        var buffer: [UInt8] = []
                        do {
                            for try await chunk in execution.standardOutput {
                                chunk.withUnsafeBytes { raw in
                                    for b in raw { if b == 10 { answers.append(buffer); buffer.removeAll() } else { buffer.append(b) } }
                                }
                            }
                        } catch {}
                        answers.close()
                        return nil
                    }
                    group.addTask {
                        let f = await checker.persistentConversation(send: { input.yield($0) }, answers: answers)
                        input.finish()
                        return f
                    }
                    var result: [Finding] = []
                    for await f in group { if let f { result = f } }
                    return result
                }
            }
            var findings = r.closureResult
            guard findings.count > 1 else { return findings }   // no handshake: nothing more to say
            if case let .exited(code) = r.terminationStatus, code == 0 {
                findings.append(Finding(passed: true, check: "persistent: exits 0 after shutdown and exit", detail: ""))
            } else {
                findings.append(Finding(passed: false, check: "persistent: exits 0 after shutdown and exit", detail: "ended with \(r.terminationStatus)"))
            }
            return findings
        } catch {
            return [Finding(passed: false, check: "persistent mode", detail: "cannot run the plugin: \(error)")]
        }
    }

    /// The scripted conversation; every stdout line must be a JSON-RPC message.
    func persistentConversation(send: @Sendable ([UInt8]) -> Void, answers: LineBuffer) async -> [Finding] {
        var findings: [Finding] = []
        var stray: [String] = []
        func rpc(_ id: JSONValue, _ method: String, _ params: JSONValue) -> [UInt8] {
            JSONValue.object([JSONMember("jsonrpc", "2.0"), JSONMember("id", id), JSONMember("method", .string(method)), JSONMember("params", params)]).serializedBytes()
        }
        /// Next message whose id is `id` (others are noted as stray), or nil on EOF / time-out.
        /// (Polling: this is a one-off conformance tool, not a hot path.)
        func answer(_ id: JSONValue, within seconds: Double) async -> JSONValue? {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                guard let bytes = answers.take() else {
                    if answers.isClosed { return nil }
                    try? await Task.sleep(for: .milliseconds(10))
                    continue
                }
                if bytes.isEmpty { continue }
                guard let msg = try? JSONValue(parsing: bytes), msg.objectValue != nil else {
                    stray.append("not JSON-RPC: \(TaskMessage.preview(bytes, limit: 80))")
                    continue
                }
                if msg["id"] == id { return msg }
                stray.append("unexpected message: \(TaskMessage.preview(bytes, limit: 80))")
            }
            return nil
        }
        // 1. Handshake.
        send(rpc(0, "initialize", .object([JSONMember("protocol", 1), JSONMember("tasks", .array([.string(task)]))])))
        guard let hello = await answer(0, within: 10) else {
            return [Finding(passed: false, check: "persistent: answers initialize within 10 s", detail: "no answer (is the plugin reading newline-delimited JSON-RPC from stdin in persistent mode?)")]
        }
        let proto = hello["result"]?["protocol"]?.intValue
        findings.append(Finding(passed: proto == 1, check: "persistent: handshake",
                                detail: proto == 1 ? "max_inflight \(hello["result"]?["max_inflight"]?.serialized() ?? "1 (default)")" : "initialize must answer {\"protocol\": 1, …}, got \(hello.serialized())"))
        // 2. A normal call.
        send(rpc("c1", "task/run", request("c1", task: task, args: args)))
        let normal = await answer("c1", within: timeout)
        findings.append(Finding(passed: normal?["result"] != nil || normal?["error"] != nil, check: "persistent: a normal call of \(task)",
                                detail: normal.map { "answered \(TaskMessage.preview($0.serializedBytes(), limit: 80))" } ?? "no answer with id \"c1\" within \(timeout) s"))
        // 3. Input that is not JSON: -32700, and the process keeps serving.
        send(Array("this is not JSON".utf8))
        let parse = await answer(.null, within: 5)
        findings.append(Finding(passed: parse?["error"]?["code"]?.intValue == -32700, check: "persistent: a line that is not JSON",
                                detail: parse == nil ? "should be answered with error -32700 (id null), and the plugin must keep running" : ""))
        // 4. A big integer.
        send(rpc("c2", "task/run", request("c2", task: task, args: [PluginChecker.bigInteger] + args.dropFirst())))
        let big = await answer("c2", within: timeout)
        findings.append(Finding(passed: big != nil, check: "persistent: a 100-digit integer argument", detail: big == nil ? "no answer: the plugin must not die on big numbers" : ""))
        // 5. An error: unknown task and unknown method.
        send(rpc("c3", "task/run", request("c3", task: "celerity.check.no-such-task", args: [])))
        let unknown = await answer("c3", within: timeout)
        findings.append(Finding(passed: unknown?["error"] != nil || unknown?["result"] != nil, check: "persistent: an unknown task name",
                                detail: unknown == nil ? "no answer: should be an error (code -32601), or served by a catch-all" : ""))
        send(rpc("c4", "celerity/no-such-method", .object([])))
        let method = await answer("c4", within: 5)
        findings.append(Finding(passed: method?["error"]?["code"]?.intValue == -32601, check: "persistent: an unknown method",
                                detail: method?["error"]?["code"]?.intValue == -32601 ? "" : "should be answered with error -32601, got \(method?.serialized() ?? "nothing")"))
        // 6. Cancellation.
        if let slowTask {
            send(rpc("c5", "task/run", request("c5", task: slowTask, args: [30])))
            try? await Task.sleep(for: .milliseconds(300))
            send(JSONValue.object([JSONMember("jsonrpc", "2.0"), JSONMember("method", "$/cancel"), JSONMember("params", .object([JSONMember("id", "c5"), JSONMember("reason", "timeout")]))]).serializedBytes())
            let cancelled = await answer("c5", within: 5)
            findings.append(Finding(passed: cancelled?["error"]?["code"]?.intValue == -32800, check: "persistent: $/cancel of a running call (\(slowTask) 30)",
                                    detail: cancelled == nil ? "no answer within 5 s of $/cancel: the worker would kill the process" : (cancelled?["error"]?["code"]?.intValue == -32800 ? "" : "should be answered with error -32800, got \(cancelled!.serialized())")))
        }
        // 7. Shutdown.
        send(rpc("bye", "shutdown", .object([])))
        let bye = await answer("bye", within: 5)
        findings.append(Finding(passed: bye?["result"] != nil, check: "persistent: shutdown", detail: bye == nil ? "no answer to shutdown within 5 s" : ""))
        send(JSONValue.object([JSONMember("jsonrpc", "2.0"), JSONMember("method", "exit")]).serializedBytes())
        findings.append(Finding(passed: stray.isEmpty, check: "persistent: stdout carries only protocol messages",
                                detail: stray.prefix(3).joined(separator: "; ")))
        return findings
    }
}
