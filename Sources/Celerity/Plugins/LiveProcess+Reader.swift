// LiveProcess, reader: the thread that reads a plugin's stdout, splits it into JSON-RPC
// lines (with the size cap), matches answers to calls in flight (or the handshake), and
// fails what is left in flight at EOF. On the hot path: every answer passes here.

import Foundation
import Logging
import Synchronization

extension LiveProcess {
    /// Reads stdout line by line (split on "\n" bytes only: JSON may hold U+2028), dispatching
    /// answers; returns at EOF, after failing every call still in flight.
    func readResponses(fd: Int32, logger: Logger) async {
        // A thread of its own: blocking reads never run on the cooperative pool, and an
        // answer resumes its caller straight from here (one hand-off).
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            let t = Thread {
                self.readResponsesBlocking(fd: fd, logger: logger)
                _ = close(fd)
                done.resume()
            }
            t.name = "celerity-plugin-stdout"
            t.start()
        }
    }

    private func readResponsesBlocking(fd: Int32, logger: Logger) {
        var line: [UInt8] = []
        var violated = false
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 1)
        defer { buffer.deallocate() }
        // EOF normally tells that the process is gone. A child the plugin started may keep
        // its stdout open after it died, though: so wait in slices and stop once the process
        // itself no longer exists (reaped), after taking what is already in the pipe.
        var processGone = false
        while true {
            if !processGone {
                var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                let ready = poll(&p, 1, 250)
                if ready < 0 && errno == EINTR { continue }
                if ready == 0 {
                    if LiveProcess.hasExited(pid) {
                        processGone = true
                        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
                    }
                    continue
                }
            }
            let n = read(fd, buffer.baseAddress, buffer.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            var lines: [[UInt8]] = []
            let bytes = UnsafeRawBufferPointer(rebasing: buffer[0..<n]).bindMemory(to: UInt8.self)
            var start = 0
            while start < bytes.count {
                if let nl = bytes[start...].firstIndex(of: 10) {
                    line.append(contentsOf: bytes[start..<nl])
                    lines.append(line)
                    line.removeAll(keepingCapacity: true)
                    start = nl + 1
                } else {
                    // Past the cap the rest of the line is not kept (it is a violation anyway).
                    if line.count <= maxOutputBytes { line.append(contentsOf: bytes[start...]) }
                    start = bytes.count
                }
            }
            for (i, l) in lines.enumerated() where !violated {
                // The last complete line with nothing more read: a quiet moment, when the
                // answer may be settled right here (see `call`).
                let quiet = i == lines.count - 1 && line.isEmpty
                if let v = handle(l, quiet: quiet) { violated = true; logger.error("plugin broke the protocol: killing it", metadata: ["reason": .string(v)]); kill(reason: v) }
            }
            if !violated && line.count > maxOutputBytes {
                violated = true
                kill(reason: "plugin wrote a line of more than \(maxOutputBytes) bytes on stdout", oversized: true)
            }
        }
        if !violated && !line.isEmpty {
            inner.withLock { s in if s.violation == nil { s.violation = "plugin died after writing half a line: \(TaskMessage.preview(line, limit: 80))" } }
        }
        // EOF: the process is gone (or has closed stdout). Fail whatever is in flight.
        let (calls, hs, waiters) = inner.withLock { s in
            s.ended = true
            defer { s.pending.removeAll(); s.handshake = nil; s.endWaiters.removeAll() }
            return (Array(s.pending.values), s.handshake, s.endWaiters)
        }
        let failure = crashFailure(inFlight: true)
        for c in calls { c.resolve(.failure(failure)) }
        hs?.resume(returning: .failure(TaskFailure(type: "PluginCrashed", message: "plugin exited before answering initialize: \(endReason)")))
        for w in waiters { w.resume() }
    }

    /// Handles one stdout line; returns a protocol-violation reason, or nil.
    private func handle(_ bytes: [UInt8], quiet: Bool = false) -> String? {
        if bytes.allSatisfy({ $0 == 32 || $0 == 13 || $0 == 9 }) { return nil }
        guard let msg = try? JSONValue(parsing: bytes), msg.objectValue != nil else {
            return "plugin wrote something that is not a JSON-RPC message on stdout (stdout is reserved for the protocol; log to stderr): \(TaskMessage.preview(bytes, limit: 120))"
        }
        if msg["method"] != nil { return nil }   // a notification from the plugin: ignored
        guard let idValue = msg["id"] else { return "plugin wrote a JSON-RPC message without an id: \(TaskMessage.preview(bytes, limit: 120))" }
        if idValue.isNull { return nil }   // an error about a line it could not parse: nothing to match
        let outcome: Result<JSONValue, TaskFailure>
        if let r = msg["result"] {
            outcome = .success(r)
        } else if let e = msg["error"] {
            let code = e["code"]?.intValue ?? -32000
            let data = e["data"] ?? .null
            let message = e["message"]?.stringValue ?? e.serialized()
            switch code {
            case -32800: outcome = .failure(TaskFailure(type: "TaskCancelled", message: message, module: "celerity"))
            case -32601:
                let type = data["type"]?.stringValue ?? "NotRegistered"
                outcome = .failure(TaskFailure(type: type, message: message, module: TaskFailure.pluginModule(type: type, declared: data["module"])))
            case -32602, -32600, -32700:
                let type = data["type"]?.stringValue ?? "TypeError"
                outcome = .failure(TaskFailure(type: type, message: message, module: TaskFailure.pluginModule(type: type, declared: data["module"])))
            default:
                let type = data["type"]?.stringValue ?? "PluginError"
                outcome = .failure(TaskFailure(type: type, message: message, module: TaskFailure.pluginModule(type: type, declared: data["module"]),
                                               traceback: data["traceback"]?.stringValue, retryable: data["retryable"]?.boolValue ?? false))
            }
        } else {
            return "plugin answered id \(idValue.serialized()) with neither 'result' nor 'error'"
        }
        if idValue == .int(0), let hs = inner.withLock({ s -> CheckedContinuation<Result<JSONValue, TaskFailure>, Never>? in defer { s.handshake = nil }; return s.handshake }) {
            hs.resume(returning: outcome)
            return nil
        }
        if idValue.stringValue == "shutdown" { return nil }
        enum Match { case call(PendingReply, settleHere: Bool), duplicate, unknown }
        let match: Match = inner.withLock { s in
            guard let id = idValue.stringValue else { return .unknown }
            if let c = s.pending.removeValue(forKey: id) {
                s.recent.append(id)
                if s.recent.count > 256 { s.recent.removeFirst(s.recent.count - 256) }
                // Counted here, with the call leaving `pending`: a call placed on this
                // process right after (its result may already be out) sees it draining.
                s.calls += 1
                if let m = maxCalls, s.calls >= m { s.draining = true }
                // Settled here only when no other call of this process is in flight: a
                // process that is kept busy (pipelined calls) leaves storing to the batches.
                guard quiet, s.pending.isEmpty, c.onSuccess != nil, case .success = outcome else { return .call(c, settleHere: false) }
                s.settling += 1
                return .call(c, settleHere: true)
            }
            return s.recent.contains(id) ? .duplicate : .unknown
        }
        switch match {
        case let .call(c, settleHere):
            if settleHere, let onSuccess = c.onSuccess, case let .success(value) = outcome {
                onSuccess(value)
                inner.withLock { $0.settling -= 1 }
            }
            c.resolve(outcome)
            return nil
        case .duplicate:
            // A second answer to a call already answered: harmless, the first one counts.
            return nil
        case .unknown:
            return "plugin answered id \(idValue.serialized()), which was never sent to it (a wrong id)"
        }
    }
}
