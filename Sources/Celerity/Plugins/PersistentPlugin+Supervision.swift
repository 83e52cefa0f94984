// PersistentPlugin, supervision: keeps `processes` instances running (spawn, handshake,
// restarts with backoff, the crash-loop pause), forwards their stderr to the log, and
// stops them (shutdown with a grace period, or at once).

import Foundation
import Logging
import RedisClient
import Subprocess
import Synchronization
import SystemPackage

extension PersistentPlugin {
    // MARK: - Supervision

    /// Keeps `processes` instances running until `shutdown()`; run it in a task of its own.
    /// A pool that `startsOnDemand` waits for its first call (or returns at the shutdown).
    public func supervise() async {
        if startsOnDemand {
            let go = await withTaskCancellationHandler { await demand.wait() } onCancel: { demand.fire(false) }
            guard go, !isStopping else { return }
        }
        await withDiscardingTaskGroup { group in
            for slot in 0..<options.processes {
                group.addTask { await self.runSlot(slot) }
            }
        }
    }

    /// Stops taking calls, asks every process to shut down (`shutdown`, `exit`, EOF), and
    /// SIGKILLs those still alive after the grace period.
    public func shutdown() async {
        let live = state.withLock { s in
            s.stopping = true
            return Array(s.live.values)
        }
        demand.fire(false)
        wakeWaiters()
        for p in live { p.drainAndExit() }
        let deadline = Date().addingTimeInterval(spec.gracePeriod)
        while Date() < deadline, state.withLock({ !$0.live.isEmpty }) {
            try? await Task.sleep(for: .milliseconds(50))
        }
        for p in state.withLock({ Array($0.live.values) }) { p.kill(reason: "shutdown grace period over") }
    }

    private var isStopping: Bool { state.withLock { $0.stopping } }

    /// No call is in flight in any of its processes, and none waits for one (a pool retired
    /// by a reload is shut down once this holds).
    var isIdle: Bool {
        let (live, waiting) = state.withLock { (Array($0.live.values), !$0.waiters.isEmpty) }
        return !waiting && live.allSatisfy { $0.load == 0 }
    }

    /// Cold stop: no restarts, every process group SIGKILLed now (calls in flight fail).
    public func stopNow() {
        let live = state.withLock { s in
            s.stopping = true
            return Array(s.live.values)
        }
        demand.fire(false)
        for p in live { p.kill(reason: "worker stopped") }
        wakeWaiters()
    }

    private func runSlot(_ slot: Int) async {
        var backoff = Backoff(first: 0.2, max: 10)
        while !isStopping {
            let outcome = await runProcess(slot)
            if isStopping { return }
            switch outcome {
            case .recycled:
                state.withLock { $0.recycles += 1 }
                backoff.reset()
            case let .crashed(why):
                let loop: Bool = state.withLock { s in
                    s.restarts += 1
                    let now = Date()
                    s.crashes = s.crashes.filter { now.timeIntervalSince($0) < crashWindow } + [now]
                    if s.crashes.count > crashLoopLimit {
                        s.unavailableUntil = now.addingTimeInterval(unavailableSeconds)
                        s.unavailableReason = "crash loop: \(s.crashes.count) crashes within \(Int(crashWindow)) s; last: \(why)"
                        s.crashes.removeAll()
                        return true
                    }
                    return false
                }
                if loop {
                    logger.error("plugin is in a crash loop: handler unavailable, its queue paused", metadata: [
                        "queue": .string(queue), "for_s": .stringConvertible(unavailableSeconds), "last_error": .string(why)])
                    wakeWaiters()
                    try? await Task.sleep(for: .milliseconds(Int(unavailableSeconds * 1000)))
                    backoff.reset()
                } else {
                    let delay = backoff.next()
                    logger.warning("plugin process ended; restarting", metadata: ["reason": .string(why), "restart_in_s": .stringConvertible(delay)])
                    try? await Task.sleep(for: .milliseconds(Int(delay * 1000)))
                }
            }
        }
    }

    enum Outcome { case recycled, crashed(String) }

    /// Starts one process, handshakes, serves calls until it ends.
    private func runProcess(_ slot: Int) async -> Outcome {
        var platform = PlatformOptions()
        platform.processGroupID = 0
        platform.teardownSequence = [.gracefulShutDown(toProcessGroup: true, allowedDurationToNextStep: .milliseconds(Int(spec.gracePeriod * 1000)))]
        var env = OneShotPlugin.baseEnvironment(spec)
        env["CELERITY_MODE"] = "persistent"
        env["CELERITY_WORKER"] = worker
        env["CELERITY_QUEUE"] = queue
        PipeWriter.ignoreSIGPIPE
        guard let toPlugin = makeCloexecPipe() else { return .crashed("cannot make a pipe for the plugin's stdin: \(String(cString: strerror(errno)))") }
        guard let fromPlugin = makeCloexecPipe() else {
            _ = close(toPlugin.read); _ = close(toPlugin.write)
            return .crashed("cannot make a pipe for the plugin's stdout: \(String(cString: strerror(errno)))")
        }
        let stdin = PipeWriter(fd: toPlugin.write)
        let readerStarted = Mutex(false)
        let started = Date()
        do {
            let result = try await Subprocess.run(
                .path(FilePath(spec.executable)),
                arguments: Arguments(Array(spec.argv.dropFirst())),
                environment: .custom(env),
                workingDirectory: FilePath(spec.workingDirectory),
                platformOptions: platform,
                input: .fileDescriptor(FileDescriptor(rawValue: toPlugin.read), closeAfterSpawningProcess: true),
                output: .fileDescriptor(FileDescriptor(rawValue: fromPlugin.write), closeAfterSpawningProcess: true),
                error: .sequence
            ) { execution -> Outcome in
                let process = LiveProcess(slot: slot, pid: execution.processIdentifier.value, stdin: stdin,
                                          maxOutputBytes: spec.maxOutputBytes, maxCalls: options.maxCalls, maxRSSBytes: options.maxRSSBytes)
                readerStarted.withLock { $0 = true }
                return await withTaskGroup(of: Void.self) { group -> Outcome in
                    group.addTask { await self.logStderr(execution.standardError) }
                    group.addTask {
                        await process.readResponses(fd: fromPlugin.read, logger: self.logger)
                        stdin.closeNow()   // nobody reads it any more
                    }
                    // Handshake.
                    let hello = JSONValue.object([
                        JSONMember("jsonrpc", "2.0"), JSONMember("id", 0), JSONMember("method", "initialize"),
                        JSONMember("params", .object([JSONMember("protocol", 1), JSONMember("tasks", .array(self.tasks.map { .string($0) }))])),
                    ])
                    let outcome: Outcome
                    switch await process.handshake(hello.serializedBytes(), timeout: self.options.handshakeTimeout, cap: self.options.maxInflight) {
                    case let .failed(why):
                        self.logger.error("plugin handshake failed", metadata: ["reason": .string(why)])
                        process.kill(reason: why)
                        outcome = .crashed("handshake failed: \(why)")
                    case let .ok(info):
                        self.logger.info("plugin process ready", metadata: ["pid": .stringConvertible(process.pid), "slot": .stringConvertible(slot),
                                                                             "max_inflight": .stringConvertible(process.maxInflight), "name": .string(info)])
                        self.state.withLock { $0.live[slot] = process }
                        self.wakeWaiters()
                        if self.isStopping { process.drainAndExit() }
                        await process.waitUntilEnded()
                        self.state.withLock { _ = $0.live.removeValue(forKey: slot) }
                        outcome = process.wasRecycled ? .recycled : .crashed(process.endReason)
                    }
                    stdin.finish()
                    await group.waitForAll()
                    return outcome
                }
            }
            var outcome = result.closureResult
            if case .crashed = outcome {
                let status = result.terminationStatus
                outcome = .crashed("\(outcomeText(outcome)) (\(status), ran \(String(format: "%.1f", Date().timeIntervalSince(started))) s)")
            }
            return outcome
        } catch {
            stdin.closeNow()
            // Not spawned: the reader never took its end of the pipe (the child's ends are
            // closed by swift-subprocess, as asked).
            if !readerStarted.withLock({ $0 }) { _ = close(fromPlugin.read) }
            state.withLock { _ = $0.live.removeValue(forKey: slot) }
            return .crashed("cannot start '\(name)': \(error)")
        }
    }

    private func outcomeText(_ o: Outcome) -> String {
        if case let .crashed(s) = o { return s }
        return "recycled"
    }

    private func logStderr(_ stream: SubprocessOutputSequence) async {
        var kept = 0
        var pending: [UInt8] = []
        let cap = spec.maxStderrBytes
        do {
            for try await chunk in stream {
                chunk.withUnsafeBytes { raw in
                    let bytes = raw.bindMemory(to: UInt8.self)
                    var start = 0
                    while start < bytes.count {
                        guard let nl = bytes[start...].firstIndex(of: 10) else {
                            if pending.count < 64 * 1024 { pending.append(contentsOf: bytes[start..<min(bytes.count, start + 64 * 1024)]) }
                            break
                        }
                        if kept < cap {
                            pending.append(contentsOf: bytes[start..<nl])
                            logger.info("plugin stderr", metadata: ["line": .string(String(decoding: pending, as: UTF8.self))])
                        }
                        kept += pending.count + (nl - start) + 1
                        pending.removeAll(keepingCapacity: true)
                        start = nl + 1
                    }
                }
            }
        } catch {}
        if !pending.isEmpty && kept < cap { logger.info("plugin stderr", metadata: ["line": .string(String(decoding: pending, as: UTF8.self))]) }
        if kept > cap { logger.warning("plugin stderr over the cap: lines dropped from the log", metadata: ["bytes": .stringConvertible(kept), "cap": .stringConvertible(cap)]) }
    }
}
