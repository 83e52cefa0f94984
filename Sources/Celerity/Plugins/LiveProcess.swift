// LiveProcess: one running plugin process: its calls in flight and room for more, the
// stdin side (calls, handshake, shutdown), recycling at max_calls or the RSS limit, kill.
// Its stdout reader thread and answer matching are in LiveProcess+Reader.swift.

import Foundation
import Logging
import Synchronization

/// The answer to one call: resolved once (by the reader thread, or by the process's end),
/// awaited by one task, in either order.
final class PendingReply: Sendable {
    /// What to do with a successful answer on the reader thread before resolving (see
    /// `LiveProcess.start`).
    let onSuccess: (@Sendable (JSONValue) -> Void)?
    init(onSuccess: (@Sendable (JSONValue) -> Void)?) { self.onSuccess = onSuccess }

    private let state = Mutex<(result: Result<JSONValue, TaskFailure>?, waiter: CheckedContinuation<Result<JSONValue, TaskFailure>, Never>?)>((nil, nil))

    func resolve(_ r: Result<JSONValue, TaskFailure>) {
        let waiter = state.withLock { s -> CheckedContinuation<Result<JSONValue, TaskFailure>, Never>? in
            guard s.result == nil else { return nil }
            s.result = r
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume(returning: r)
    }

    var value: Result<JSONValue, TaskFailure> {
        get async {
            await withCheckedContinuation { c in
                let ready = state.withLock { s -> Result<JSONValue, TaskFailure>? in
                    if let r = s.result { return r }
                    s.waiter = c
                    return nil
                }
                if let ready { c.resume(returning: ready) }
            }
        }
    }
}

/// One running plugin process: its outgoing lines, its calls in flight, its bookkeeping.
final class LiveProcess: Sendable {
    let slot: Int
    let pid: pid_t
    let stdin: PipeWriter
    let maxOutputBytes: Int
    let maxCalls: Int?
    let maxRSSBytes: Int?
    let inner = Mutex(Inner())

    struct Inner {
        var pending: [String: PendingReply] = [:]
        var reserved = 0
        /// Answers being settled on the reader thread right now (see `start`): they hold
        /// their room until done, so no call is placed here while the reader is busy.
        var settling = 0
        var maxInflight = 1
        var calls = 0
        var draining = false
        var recycled = false
        var ended = false
        var endReason = "process exited"
        var violation: String?
        /// The violation was a line over the size cap (typed: decides that a call is not retried).
        var oversized = false
        var handshake: CheckedContinuation<Result<JSONValue, TaskFailure>, Never>?
        var endWaiters: [CheckedContinuation<Void, Never>] = []
        var idCounter = 0
        /// Ids answered lately, to tell a second answer from a wrong id.
        var recent: [String] = []
    }

    init(slot: Int, pid: pid_t, stdin: PipeWriter, maxOutputBytes: Int, maxCalls: Int?, maxRSSBytes: Int?) {
        self.slot = slot
        self.pid = pid
        self.stdin = stdin
        self.maxOutputBytes = maxOutputBytes
        self.maxCalls = maxCalls
        self.maxRSSBytes = maxRSSBytes
    }

    var maxInflight: Int { inner.withLock { $0.maxInflight } }
    var load: Int { inner.withLock { $0.pending.count + $0.reserved + $0.settling } }
    var hasRoom: Bool { inner.withLock { !$0.draining && !$0.ended && $0.pending.count + $0.reserved + $0.settling < $0.maxInflight } }
    var wasRecycled: Bool { inner.withLock { $0.recycled } }
    var endReason: String { inner.withLock { $0.violation ?? $0.endReason } }

    func tryReserve() -> Bool {
        inner.withLock { s in
            guard !s.draining, !s.ended, s.pending.count + s.reserved + s.settling < s.maxInflight else { return false }
            s.reserved += 1
            return true
        }
    }

    /// The JSON-RPC id for a task: its task id, made unique among this process's calls.
    func reserveID(_ taskID: String) -> String {
        inner.withLock { s in
            if s.pending[taskID] == nil { return taskID }
            s.idCounter += 1
            return "\(taskID)#\(s.idCounter)"
        }
    }

    func send(_ line: [UInt8]) { stdin.send(line) }

    func isPending(_ id: String) -> Bool { inner.withLock { $0.pending[id] != nil } }

    /// Sends a call; its answer (or the process's end) resolves the reply. Synchronous: the
    /// line is written from the calling thread. `onSuccess` runs on the reader thread with a
    /// successful answer that came when no other line was waiting behind it and no other call
    /// was in flight, before the reply resolves.
    func start(_ id: String, _ line: [UInt8], onSuccess: (@Sendable (JSONValue) -> Void)? = nil) -> PendingReply {
        let reply = PendingReply(onSuccess: onSuccess)
        let accepted: Bool = inner.withLock { s in
            s.reserved = max(s.reserved - 1, 0)
            if s.ended { return false }
            s.pending[id] = reply
            return true
        }
        if accepted { stdin.send(line) } else { reply.resolve(.failure(crashFailure(inFlight: true))) }
        return reply
    }

    /// After a call: count it, recycle when due, wake callers waiting for room.
    func finished(_ id: String, pool: PersistentPlugin) {
        let recycle: Bool = inner.withLock { s in
            // (Answered calls are counted against max_calls where the answer is read.)
            if let limit = maxRSSBytes, let rss = LiveProcess.residentBytes(pid), rss > limit { s.draining = true }
            return s.draining && s.pending.isEmpty && s.reserved == 0 && !s.recycled
        }
        if recycle {
            pool.logger.info("recycling plugin process", metadata: ["pid": .stringConvertible(pid)])
            drainAndExit()
        }
        pool.wakeWaiters()
    }

    /// Marks the process as leaving on purpose: `shutdown`, then `exit`, then EOF on stdin.
    func drainAndExit() {
        let send: Bool = inner.withLock { s in
            s.draining = true
            if s.recycled || s.ended { return false }
            s.recycled = true
            return true
        }
        guard send else { return }
        stdin.send(JSONValue.object([JSONMember("jsonrpc", "2.0"), JSONMember("id", "shutdown"), JSONMember("method", "shutdown")]).serializedBytes())
        stdin.send(JSONValue.object([JSONMember("jsonrpc", "2.0"), JSONMember("method", "exit")]).serializedBytes())
        stdin.finish()
    }

    func kill(reason: String, oversized: Bool = false) {
        inner.withLock { s in if s.violation == nil { s.violation = reason; s.oversized = oversized } }
        _ = Glibc.kill(-pid, SIGKILL)
    }

    enum Handshake { case ok(String), failed(String) }

    func handshake(_ line: [UInt8], timeout: Double, cap: Int?) async -> Handshake {
        let answer: Result<JSONValue, TaskFailure>? = await withTaskGroup(of: Result<JSONValue, TaskFailure>?.self) { g in
            g.addTask {
                await withCheckedContinuation { c in
                    self.inner.withLock { $0.handshake = c }
                    self.stdin.send(line)
                }
            }
            g.addTask {
                try? await Task.sleep(for: .milliseconds(Int(timeout * 1000)))
                return nil
            }
            let first = await g.next()!
            if first == nil {
                // Time-out: resume the handshake waiter so the group can finish.
                if let c = inner.withLock({ s -> CheckedContinuation<Result<JSONValue, TaskFailure>, Never>? in defer { s.handshake = nil }; return s.handshake }) {
                    c.resume(returning: .failure(TaskFailure(type: "PluginProtocolError", message: "no answer to initialize within \(timeout) s")))
                }
            }
            g.cancelAll()
            return first
        }
        guard let answer else { return .failed("no answer to initialize within \(timeout) s") }
        switch answer {
        case let .failure(f): return .failed(f.message)
        case let .success(info):
            guard info["protocol"]?.intValue == 1 else {
                return .failed("plugin answered initialize with protocol \(info["protocol"]?.serialized() ?? "missing"), expected 1")
            }
            var n = info["max_inflight"]?.intValue ?? 1
            if n < 1 { n = 1 }
            if let cap { n = min(n, cap) }
            inner.withLock { $0.maxInflight = n }
            return .ok(info["name"]?.stringValue ?? "")
        }
    }

    func waitUntilEnded() async {
        await withCheckedContinuation { c in
            let ended: Bool = inner.withLock { s in
                if s.ended { return true }
                s.endWaiters.append(c)
                return false
            }
            if ended { c.resume() }
        }
    }

    func crashFailure(inFlight: Bool) -> TaskFailure {
        // An answer over the size cap would be just as big on a retry: not retryable.
        let (why, oversized) = inner.withLock { ($0.violation ?? $0.endReason, $0.oversized) }
        return TaskFailure(type: oversized ? "PluginProtocolError" : "PluginCrashed", message: "plugin process \(pid) ended with this call in flight: \(why)",
                           module: "celerity", retryable: !oversized)
    }

    /// Whether a process has ended: gone, or a zombie not reaped yet (swift-subprocess reaps
    /// it only once the body that serves it returns). From /proc (Linux).
    static func hasExited(_ pid: pid_t) -> Bool {
        if Glibc.kill(pid, 0) != 0 && errno == ESRCH { return true }
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        // "pid (comm) S ...": the state follows the last ')' (comm may hold parentheses).
        return stat[stat.index(after: close)...].dropFirst().first == "Z"
    }

    /// Resident memory of a process, from /proc (Linux).
    static func residentBytes(_ pid: pid_t) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let kb = line.split(separator: " ").dropFirst().first.flatMap { Int($0) }
            return kb.map { $0 * 1024 }
        }
        return nil
    }
}
