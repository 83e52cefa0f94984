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
    /// Ask the plugin to describe itself (one-shot and persistent) and check the document.
    public var checkDescribe = true
    /// Persistent mode: calls in flight are answered through `shutdown`, and a fresh process
    /// answers the same call the same way (what a reload does to a plugin).
    public var checkReload = true
    /// Whether the same call always gets the same answer; when not (random results), the
    /// reload check compares the kind of answer only.
    public var deterministic = true

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
        var description: JSONValue?
        if checkDescribe {
            let (finding, document) = await oneShotDescribe(exe)
            findings.append(finding)
            description = document
        }
        if mode != .persistent { findings += await oneShotChecks(exe) }
        if mode != .oneshot {
            let persistent = await persistentChecks(exe, description: description)
            findings += persistent
            if checkReload && persistent.count > 1 { findings += await reloadChecks(exe) }
        }
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

    func oneShot(_ exe: String, stdin: [UInt8], mode: String = "oneshot") async -> OneShotRun {
        let platform = PluginChecker.platformOptions()
        let limit = timeout
        let env: [Environment.Key: String] = ["CELERITY_PROTOCOL": "1", "CELERITY_MODE": .init(mode), "CELERITY_TASK_ID": "check-1",
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

    // MARK: Describe

    /// Keys of a description that tasks.yaml's task reader does not check here: the argument
    /// schema and its notes (their shape is checked by `describeProblems`).
    static let schemaKeys: Set<String> = ["doc", "params", "varargs", "varkwargs", "returns"]

    /// What is wrong with a describe document (empty when nothing): its shape, as discovery reads
    /// it (PluginDescription.parse); the policy values, read by the tasks.yaml reader as if the
    /// entry were written there with `plugin: argv`; `params` an object of schemas (objects or type
    /// names), `varargs`/`varkwargs` booleans or schemas, `doc` a string.
    public static func describeProblems(_ document: JSONValue, argv: [String], baseDirectory: String) -> [String] {
        let description: PluginDescription
        do { description = try PluginDescription.parse(document) } catch { return [error.message] }
        var problems: [String] = []
        if description.tasks.isEmpty { problems.append("\"tasks\" is empty: the plugin describes no task") }
        let typeNames: Set<String> = ["string", "integer", "number", "boolean", "array", "object", "null"]
        func isSchema(_ v: JSONValue) -> Bool {
            if let name = v.stringValue { return typeNames.contains(name) }
            return v.objectValue != nil
        }
        var entries: [JSONMember] = []
        for (name, entry) in description.tasks {
            let value = JSONValue.object(entry)
            if let params = value["params"], params != .null {
                if let list = params.objectValue {
                    for p in list where !isSchema(p.value) {
                        problems.append("tasks.\(name).params.\(p.key): a schema must be an object or a type name (\(typeNames.sorted().joined(separator: ", "))), got \(p.value.serialized())")
                    }
                } else {
                    problems.append("tasks.\(name).params must be an object (name -> schema), got \(params.serialized())")
                }
            }
            for key in ["varargs", "varkwargs", "returns"] {
                if let v = value[key], v != .null, !(key != "returns" && v.boolValue != nil), !isSchema(v) {
                    problems.append("tasks.\(name).\(key) must be \(key == "returns" ? "" : "true, false or ")a schema, got \(v.serialized())")
                }
            }
            if let doc = value["doc"], doc != .null, doc.stringValue == nil { problems.append("tasks.\(name).doc must be a string, got \(doc.serialized())") }
            var policy = entry.filter { !schemaKeys.contains($0.key) }
            if !policy.contains(where: { $0.key == "queue" }) { policy.insert(JSONMember("queue", "check"), at: 0) }
            policy.insert(JSONMember("plugin", .array(argv.map { .string($0) })), at: 0)
            entries.append(JSONMember(name, .object(policy)))
        }
        // JSON is YAML: the reader sees the entries as tasks.yaml would hold them.
        let manifest = JSONValue.object([JSONMember("tasks", .object(entries))]).serialized()
        do {
            _ = try Manifest.parse(manifest, path: "describe", baseDirectory: baseDirectory, discover: false)
        } catch {
            problems.append("as a tasks.yaml entry: \(error.message)")
        }
        return problems
    }

    static let describeRequest = Array(#"{"method": "describe", "protocol": 1}"#.utf8) + [10]

    /// Discovery's question: the program run with CELERITY_MODE=describe. Returns the finding and
    /// the document when it is one.
    func oneShotDescribe(_ exe: String) async -> (Finding, JSONValue?) {
        let check = "describe (one-shot, CELERITY_MODE=describe)"
        let hint = " (without a description, discovery cannot find this plugin: name it in tasks.yaml and pass --skip-describe)"
        let r = await oneShot(exe, stdin: PluginChecker.describeRequest, mode: "describe")
        if r.timedOut { return (Finding(passed: false, check: check, detail: "no answer within \(timeout) s" + hint), nil) }
        guard case let .exited(code)? = r.status, code == 0 else {
            return (Finding(passed: false, check: check, detail: "ended with \(r.status.map { "\($0)" } ?? "no status"), not 0 with the description on stdout\(hint); stderr: \(tail(r.stderr))"), nil)
        }
        guard let document = try? JSONValue(parsing: r.stdout) else {
            return (Finding(passed: false, check: check, detail: (r.stdout.isEmpty ? "nothing on stdout" : "stdout is not one JSON document: \(TaskMessage.preview(r.stdout, limit: 120))") + hint), nil)
        }
        if document["tasks"] == nil {
            return (Finding(passed: false, check: check, detail: "the answer has no \"tasks\": \(TaskMessage.preview(r.stdout, limit: 120))" + hint), nil)
        }
        let problems = PluginChecker.describeProblems(document, argv: [exe] + argv.dropFirst(), baseDirectory: FileManager.default.currentDirectoryPath)
        if !problems.isEmpty { return (Finding(passed: false, check: check, detail: problems.prefix(5).joined(separator: "; ")), document) }
        let names = document["tasks"]?.objectValue?.map(\.key) ?? []
        return (Finding(passed: true, check: check, detail: "describes \(names.joined(separator: ", "))"), document)
    }

    // MARK: Persistent

    /// One persistent process as the conversation sees it: what to send, what came back.
    final class Session {
        let send: @Sendable ([UInt8]) -> Void
        let answers: LineBuffer
        var stray: [String] = []

        init(send: @escaping @Sendable ([UInt8]) -> Void, answers: LineBuffer) {
            self.send = send
            self.answers = answers
        }

        static func rpc(_ id: JSONValue, _ method: String, _ params: JSONValue) -> [UInt8] {
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
    }

    /// Runs the program in persistent mode with `conversation` on its stdin and stdout; returns
    /// the conversation's findings and how the process ended (or why it could not start).
    func persistentProcess(_ exe: String, _ conversation: @escaping @Sendable (Session) async -> [Finding]) async -> (findings: [Finding], status: TerminationStatus?, error: String?) {
        let (lines, input) = AsyncStream<[UInt8]>.makeStream()
        let answers = LineBuffer()
        let platform = PluginChecker.platformOptions()
        let env: [Environment.Key: String] = ["CELERITY_PROTOCOL": "1", "CELERITY_MODE": "persistent",
                                              "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin",
                                              "HOME": ProcessInfo.processInfo.environment["HOME"] ?? "/"]
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
                        let f = await conversation(Session(send: { input.yield($0) }, answers: answers))
                        input.finish()
                        return f
                    }
                    var result: [Finding] = []
                    for await f in group { if let f { result = f } }
                    return result
                }
            }
            return (r.closureResult, r.terminationStatus, nil)
        } catch {
            return ([], nil, "\(error)")
        }
    }

    func persistentChecks(_ exe: String, description: JSONValue?) async -> [Finding] {
        let checker = self
        let run = await persistentProcess(exe) { session in await checker.persistentConversation(session, exe: exe, description: description) }
        if let error = run.error { return [Finding(passed: false, check: "persistent mode", detail: "cannot run the plugin: \(error)")] }
        var findings = run.findings
        guard findings.count > 1 else { return findings }   // no handshake: nothing more to say
        if case let .exited(code)? = run.status, code == 0 {
            findings.append(Finding(passed: true, check: "persistent: exits 0 after shutdown and exit", detail: ""))
        } else {
            findings.append(Finding(passed: false, check: "persistent: exits 0 after shutdown and exit", detail: "ended with \(run.status.map { "\($0)" } ?? "no status")"))
        }
        return findings
    }

    /// What a reload does to a plugin: calls in flight when `shutdown` comes are all answered
    /// before it is, the process exits, and a fresh one answers the same call the same way.
    func reloadChecks(_ exe: String) async -> [Finding] {
        let check = "persistent: reload survival (5 calls in flight, shutdown, a fresh process)"
        let calls = 5
        let checker = self
        let first = await persistentProcess(exe) { session in
            session.send(Session.rpc(0, "initialize", .object([JSONMember("protocol", 1)])))
            guard await session.answer(0, within: 10) != nil else { return [Finding(passed: false, check: check, detail: "no answer to initialize")] }
            for i in 1...calls { session.send(Session.rpc(.string("r\(i)"), "task/run", checker.request("r\(i)", task: checker.task, args: checker.args))) }
            session.send(Session.rpc("bye", "shutdown", .object([])))
            // Every call answered before shutdown is: read in the order they come.
            var answered: [String: JSONValue] = [:]
            var early: [String] = []
            let deadline = Date().addingTimeInterval(checker.timeout * Double(calls) + 5)
            var shutdownAnswered = false
            while Date() < deadline && !shutdownAnswered {
                guard let bytes = session.answers.take() else {
                    if session.answers.isClosed { break }
                    try? await Task.sleep(for: .milliseconds(10))
                    continue
                }
                guard let msg = try? JSONValue(parsing: bytes), let id = msg["id"]?.stringValue else { continue }
                if id == "bye" {
                    shutdownAnswered = true
                    early = (1...calls).map { "r\($0)" }.filter { answered[$0] == nil }
                } else {
                    answered[id] = msg
                }
            }
            session.send(JSONValue.object([JSONMember("jsonrpc", "2.0"), JSONMember("method", "exit")]).serializedBytes())
            if !shutdownAnswered { return [Finding(passed: false, check: check, detail: "no answer to shutdown (\(answered.count) of \(calls) calls answered)")] }
            if !early.isEmpty {
                return [Finding(passed: false, check: check, detail: "shutdown was answered before \(early.joined(separator: ", ")): calls in flight must be answered first, or a reload loses them")]
            }
            let outcomes = Set((1...calls).compactMap { answered["r\($0)"].map { checker.outcome($0) } })
            if checker.deterministic && outcomes.count > 1 {
                return [Finding(passed: false, check: check, detail: "the same call got different answers in one process: \(outcomes.sorted().prefix(2).joined(separator: " / ")) (pass --nondeterministic if that is expected)")]
            }
            return [Finding(passed: true, check: check, detail: answered["r1"].map { checker.outcome($0) } ?? "")]
        }
        if let error = first.error { return [Finding(passed: false, check: check, detail: "cannot run the plugin: \(error)")] }
        guard let before = first.findings.first, before.passed else { return first.findings }
        guard case .exited(0)? = first.status else {
            return [Finding(passed: false, check: check, detail: "after shutdown and exit the process ended with \(first.status.map { "\($0)" } ?? "no status")")]
        }
        let second = await persistentProcess(exe) { session in
            session.send(Session.rpc(0, "initialize", .object([JSONMember("protocol", 1)])))
            guard await session.answer(0, within: 10) != nil else { return [Finding(passed: false, check: check, detail: "the fresh process does not answer initialize")] }
            session.send(Session.rpc("r6", "task/run", checker.request("r6", task: checker.task, args: checker.args)))
            let again = await session.answer("r6", within: checker.timeout)
            session.send(Session.rpc("bye", "shutdown", .object([])))
            _ = await session.answer("bye", within: 5)
            session.send(JSONValue.object([JSONMember("jsonrpc", "2.0"), JSONMember("method", "exit")]).serializedBytes())
            guard let again else { return [Finding(passed: false, check: check, detail: "the fresh process does not answer the call within \(checker.timeout) s")] }
            return [Finding(passed: true, check: check, detail: checker.outcome(again))]
        }
        if let error = second.error { return [Finding(passed: false, check: check, detail: "cannot run the plugin again: \(error)")] }
        guard let after = second.findings.first, after.passed else { return second.findings }
        let same = deterministic ? before.detail == after.detail : kind(before.detail) == kind(after.detail)
        return [Finding(passed: same, check: check,
                        detail: same ? "the fresh process answers as the first did" : "the first process answered \(before.detail), the fresh one \(after.detail)")]
    }

    /// A JSON-RPC answer in words: the result's JSON text, or the error's code and type.
    func outcome(_ answer: JSONValue) -> String {
        if let result = answer["result"] { return "result \(TaskMessage.preview(result.serializedBytes(), limit: 200))" }
        let error = answer["error"]
        return "error \(error?["code"]?.serialized() ?? "?") \(error?["data"]?["type"]?.stringValue ?? "")"
    }

    func kind(_ outcome: String) -> String { outcome.hasPrefix("result") ? "result" : outcome }

    /// The scripted conversation; every stdout line must be a JSON-RPC message.
    func persistentConversation(_ session: Session, exe: String, description: JSONValue?) async -> [Finding] {
        var findings: [Finding] = []
        let send = session.send
        func rpc(_ id: JSONValue, _ method: String, _ params: JSONValue) -> [UInt8] { Session.rpc(id, method, params) }
        func answer(_ id: JSONValue, within seconds: Double) async -> JSONValue? { await session.answer(id, within: seconds) }
        // 1. Handshake.
        send(rpc(0, "initialize", .object([JSONMember("protocol", 1), JSONMember("tasks", .array([.string(task)]))])))
        guard let hello = await answer(0, within: 10) else {
            return [Finding(passed: false, check: "persistent: answers initialize within 10 s", detail: "no answer (is the plugin reading newline-delimited JSON-RPC from stdin in persistent mode?)")]
        }
        let proto = hello["result"]?["protocol"]?.intValue
        findings.append(Finding(passed: proto == 1, check: "persistent: handshake",
                                detail: proto == 1 ? "max_inflight \(hello["result"]?["max_inflight"]?.serialized() ?? "1 (default)")" : "initialize must answer {\"protocol\": 1, …}, got \(hello.serialized())"))
        // 1b. describe, which the plugin answers at any time.
        if checkDescribe {
            send(rpc("d1", "describe", .object([JSONMember("protocol", 1)])))
            let check = "persistent: describe"
            if let described = await answer("d1", within: 10), let document = described["result"] {
                let problems = PluginChecker.describeProblems(document, argv: [exe] + argv.dropFirst(), baseDirectory: FileManager.default.currentDirectoryPath)
                if !problems.isEmpty {
                    findings.append(Finding(passed: false, check: check, detail: problems.prefix(5).joined(separator: "; ")))
                } else if let description, description != document {
                    findings.append(Finding(passed: false, check: check, detail: "differs from the one-shot description: \(TaskMessage.preview(document.serializedBytes(), limit: 160))"))
                } else {
                    findings.append(Finding(passed: true, check: check, detail: description == nil ? "" : "the same document as in one-shot mode"))
                }
            } else {
                findings.append(Finding(passed: false, check: check, detail: "no result for {\"method\": \"describe\"} within 10 s (pass --skip-describe for a plugin that is only named in tasks.yaml)"))
            }
        }
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
        findings.append(Finding(passed: session.stray.isEmpty, check: "persistent: stdout carries only protocol messages",
                                detail: session.stray.prefix(3).joined(separator: "; ")))
        return findings
    }
}
