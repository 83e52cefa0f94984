import Foundation
import Logging
import Subprocess
import SystemPackage

/// Runs a plugin in one-shot mode (docs/plugins.md): spawn the manifest's argv (never via
/// a shell) in its own process group, write the request to stdin, read one JSON response
/// from stdout, log stderr line by line, and kill the whole group at the time limit
/// (SIGTERM, then SIGKILL after the grace period).
public struct OneShotPlugin: TaskHandler {
    public let spec: PluginSpec
    public let logger: Logger
    /// The hard limit from the manifest; a call's own deadline wins when earlier.
    public let timeLimit: Double?

    public init(spec: PluginSpec, timeLimit: Double?, logger: Logger) {
        self.spec = spec
        self.timeLimit = timeLimit
        self.logger = logger
    }

    /// Only these variables pass through from the worker's environment, plus the ones the
    /// manifest lists; nothing in a message can add to them.
    static let passThrough = ["PATH", "HOME", "LANG"]

    /// PATH, HOME, LANG and the variables the manifest lists or sets; `CELERITY_PROTOCOL=1`.
    static func baseEnvironment(_ spec: PluginSpec) -> [Environment.Key: String] {
        let mine = ProcessInfo.processInfo.environment
        var env: [Environment.Key: String] = [:]
        for name in passThrough + spec.environment {
            if let v = mine[name], let k = Environment.Key(rawValue: name) { env[k] = v }
        }
        for (k, v) in spec.setEnvironment { if let key = Environment.Key(rawValue: k) { env[key] = v } }
        env["CELERITY_PROTOCOL"] = "1"
        return env
    }

    func environment(for call: TaskCall) -> [Environment.Key: String] {
        var env = OneShotPlugin.baseEnvironment(spec)
        env["CELERITY_MODE"] = "oneshot"
        env["CELERITY_WORKER"] = call.worker
        env["CELERITY_QUEUE"] = call.queue
        env["CELERITY_TASK_ID"] = call.id
        env["CELERITY_TASK_NAME"] = call.task
        env["CELERITY_ATTEMPT"] = String(call.attempt)
        if let d = call.deadline { env["CELERITY_DEADLINE"] = CeleryDate.format(d) }
        return env
    }

    static func request(_ call: TaskCall) -> [UInt8] { requestValue(call).serializedBytes() }

    /// The request document (persistent mode sends it as a call's params).
    static func requestValue(_ call: TaskCall) -> JSONValue {
        JSONValue.object([
            JSONMember("id", .string(call.id)),
            JSONMember("task", .string(call.task)),
            JSONMember("args", .array(call.args)),
            JSONMember("kwargs", .object(call.kwargs)),
            JSONMember("attempt", .int(call.attempt)),
            JSONMember("deadline", call.deadline.map { .string(CeleryDate.format($0)) } ?? .null),
            JSONMember("meta", .object([
                JSONMember("queue", .string(call.queue)),
                JSONMember("root_id", call.rootID.map { .string($0) } ?? .null),
                JSONMember("parent_id", call.parentID.map { .string($0) } ?? .null),
                JSONMember("retries", .int(call.retries)),
            ])),
        ])
    }

    private struct Outcome: Sendable {
        var status: TerminationStatus
        var stdout: [UInt8]
        var stderrTail: String
        var softFired = false
    }

    public func run(_ call: TaskCall) async throws -> JSONValue {
        var limit = timeLimit
        if let d = call.deadline {
            let left = d.timeIntervalSinceNow
            limit = min(limit ?? left, left)
        }
        let name = spec.argv.joined(separator: " ")
        let outcome: Outcome?
        do {
            if let limit {
                // On time-out this cancels the run: SIGTERM, then SIGKILL, to the group.
                outcome = try await withDeadline(.milliseconds(Int(max(limit, 0) * 1000))) { try await self.spawn(call) }
            } else {
                outcome = try await spawn(call)
            }
        } catch let e as SubprocessError {
            if e.code == .init(.outputLimitExceeded) {
                throw TaskFailure(type: "PluginError", message: "plugin '\(name)' wrote more than \(spec.maxOutputBytes) bytes on stdout", module: "celerity")
            }
            throw TaskFailure(type: "PluginError", message: "cannot run plugin '\(name)': \(e)", module: "celerity")
        }
        guard let outcome else {
            throw TaskFailure.timeLimit(limit ?? 0)
        }
        do {
            return try interpret(outcome, name: name)
        } catch let f as TaskFailure where outcome.softFired {
            // Stopped by the SIGTERM of the soft limit (or failed after it): say so.
            var soft = TaskFailure.softTimeLimit(call.softDeadline.map { _ in 0 } ?? 0)
            soft.message += " (plugin: \(f.message))"
            throw soft
        }
    }

    private func interpret(_ o: Outcome, name: String) throws -> JSONValue {
        switch o.status {
        case let .exited(code) where code == 0:
            let text = o.stdout
            guard !text.allSatisfy({ $0 == 32 || $0 == 10 || $0 == 13 || $0 == 9 }) else {
                throw TaskFailure(type: "PluginProtocolError", message: "plugin '\(name)' exited 0 but printed nothing on stdout (expected {\"result\": …} or {\"error\": …})", module: "celerity")
            }
            let response: JSONValue
            do { response = try JSONValue(parsing: text) } catch {
                throw TaskFailure(type: "PluginProtocolError", message: "plugin '\(name)' printed something that is not a JSON response (\(error.description)); it starts with: \(TaskMessage.preview(text, limit: 200))", module: "celerity")
            }
            if let r = response["result"], response.objectValue?.count == 1 { return r }
            if let e = response["error"] {
                let type = e["type"]?.stringValue ?? "PluginError"
                throw TaskFailure(type: type, message: e["message"]?.stringValue ?? e.serialized(),
                                  module: TaskFailure.pluginModule(type: type, declared: e["module"]), traceback: e["traceback"]?.stringValue,
                                  retryable: e["retryable"]?.boolValue ?? false)
            }
            throw TaskFailure(type: "PluginProtocolError", message: "plugin '\(name)' printed JSON without a 'result' or 'error' member: \(TaskMessage.preview(text, limit: 200))", module: "celerity")
        case let .exited(code) where code == 75:
            // The reason: an error response on stdout if there is one, else the end of stderr.
            let said = (try? JSONValue(parsing: o.stdout))?["error"].map { e in "\(e["type"]?.stringValue ?? "Error"): \(e["message"]?.stringValue ?? "")" }
            throw TaskFailure(type: "PluginTemporaryFailure", message: "plugin '\(name)' exited 75 (EX_TEMPFAIL): \(said ?? o.stderrTail)", module: "celerity", retryable: true)
        case let .exited(code):
            throw TaskFailure(type: "PluginExitError", message: "plugin '\(name)' exited with code \(code)" + (o.stderrTail.isEmpty ? "" : ": \(o.stderrTail)"), module: "celerity", retryable: true)
        case let .signaled(sig):
            throw TaskFailure(type: "PluginCrashed", message: "plugin '\(name)' was killed by signal \(sig)" + (o.stderrTail.isEmpty ? "" : ": \(o.stderrTail)"), module: "celerity", retryable: true)
        }
    }

    private func spawn(_ call: TaskCall) async throws -> Outcome {
        var options = PlatformOptions()
        options.processGroupID = 0   // its own group, so the whole tree can be signalled
        options.teardownSequence = [.gracefulShutDown(toProcessGroup: true, allowedDurationToNextStep: .milliseconds(Int(spec.gracePeriod * 1000)))]
        let request = OneShotPlugin.request(call)
        // The request goes through a pipe of our own, written without blocking (PipeWriter):
        // a plugin that exits without reading it (it failed at import, or ignores stdin) must
        // fail this call, not the worker. With the spawn library's own input writer, a request
        // larger than the pipe's buffer met EPIPE and the worker died of SIGPIPE or of the
        // library's fatal error about a descriptor left open.
        PipeWriter.ignoreSIGPIPE
        guard let pipe = makeCloexecPipe() else {
            throw TaskFailure(type: "PluginError", message: "cannot run plugin '\(spec.argv.joined(separator: " "))': no pipe for its stdin (errno \(errno))", module: "celerity")
        }
        let stdin = PipeWriter(fd: pipe.write)
        defer { stdin.closeNow() }
        let softFired = CancellationFlag()
        let cap = spec.maxStderrBytes
        let log = logger
        let id = call.id
        let result = try await Subprocess.run(
            .path(FilePath(spec.executable)),
            arguments: Arguments(Array(spec.argv.dropFirst())),
            environment: .custom(environment(for: call)),
            workingDirectory: FilePath(spec.workingDirectory),
            platformOptions: options,
            input: .fileDescriptor(FileDescriptor(rawValue: pipe.read), closeAfterSpawningProcess: true),
            output: .bytes(limit: spec.maxOutputBytes),
            error: .sequence
        ) { execution in
            stdin.send(request)
            stdin.finish()
            // Soft time limit: SIGTERM to the process group; the plugin may still answer.
            let pid = execution.processIdentifier.value
            // `revoke(terminate=True, signal=...)`: the signal goes to the whole process group.
            call.cancellation.whileRunning { signal in _ = kill(-pid, signal) }
            defer { call.cancellation.whileRunning(signal: nil) }
            let softTimer: Task<Void, Never>? = call.softDeadline.map { soft in
                Task {
                    try? await Task.sleep(for: .milliseconds(Int(max(soft.timeIntervalSinceNow, 0) * 1000)))
                    if Task.isCancelled { return }
                    softFired.set()
                    kill(-pid, SIGTERM)
                }
            }
            defer { softTimer?.cancel() }
            // Stream stderr into the log, line by line, tagged with the task id; keep a tail
            // for the failure message; past the cap, count and drop.
            var kept = 0
            var dropped = 0
            var pending: [UInt8] = []
            var tail: [String] = []
            func emit(_ line: [UInt8]) {
                let s = String(decoding: line, as: UTF8.self)
                log.info("plugin stderr", metadata: ["task_id": .string(id), "line": .string(s)])
                tail.append(s)
                if tail.count > 5 { tail.removeFirst() }
            }
            for try await chunk in execution.standardError {
                chunk.withUnsafeBytes { raw in
                    if kept >= cap { dropped += raw.count; return }
                    let take = min(raw.count, cap - kept)
                    kept += take
                    dropped += raw.count - take
                    for b in raw.prefix(take) {
                        if b == 10 { emit(pending); pending.removeAll(keepingCapacity: true) } else { pending.append(b) }
                    }
                }
            }
            if !pending.isEmpty { emit(pending) }
            if dropped > 0 { log.warning("plugin stderr over the cap: dropped bytes", metadata: ["task_id": .string(id), "dropped": .stringConvertible(dropped), "cap": .stringConvertible(cap)]) }
            return tail.joined(separator: " | ")
        }
        return Outcome(status: result.terminationStatus, stdout: result.standardOutput, stderrTail: result.closureResult, softFired: softFired.isSet)
    }
}
