import Celerity
import Foundation
import Synchronization

/// A child process for tests (redis-server, a worker, Python Celery), awaited without
/// blocking Swift's cooperative pool (the termination handler resumes a continuation).
final class ChildProcess: Sendable {
    let process: Process
    let name: String
    /// Combined stdout+stderr, kept in a file so a failing test can show it.
    let logPath: String
    private let box = ExitBox()

    init(name: String, executable: String, arguments: [String], environment: [String: String]? = nil, directory: String? = nil) throws {
        self.name = name
        let p = Process()
        // Children spawned from test threads inherit their blocked-signal mask (SIGTERM blocked):
        // a small launcher clears it and execs the program, so children see signals as in real use.
        p.executableURL = URL(fileURLWithPath: Paths.python3)
        p.arguments = ["-c", "import os, signal, sys; signal.pthread_sigmask(signal.SIG_SETMASK, []); os.execv(sys.argv[1], sys.argv[1:])",
                       executable] + arguments
        if let environment {
            p.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        }
        if let directory { p.currentDirectoryURL = URL(fileURLWithPath: directory) }
        let log = NSTemporaryDirectory() + "celerity-test-\(name)-\(UUID().uuidString.prefix(8)).log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        p.standardOutput = handle
        p.standardError = handle
        p.standardInput = FileHandle.nullDevice
        logPath = log
        process = p
        p.terminationHandler = { [box] proc in
            box.exit.withLock { $0 = (proc.terminationStatus, proc.terminationReason) }
            let ws = box.waiters.withLock { w in defer { w.removeAll() }; return w }
            for w in ws { w.resume(returning: proc.terminationStatus) }
        }
        try p.run()
        // If the test process dies, nothing it started may live on: a watchdog SIGKILLs the child.
        let watchdog = Process()
        watchdog.executableURL = URL(fileURLWithPath: "/bin/sh")
        watchdog.arguments = ["-c", "while kill -0 \(getpid()) 2>/dev/null && kill -0 \(p.processIdentifier) 2>/dev/null; do sleep 0.5; done; kill -9 \(p.processIdentifier) 2>/dev/null"]
        watchdog.standardOutput = FileHandle.nullDevice
        watchdog.standardError = FileHandle.nullDevice
        try watchdog.run()
    }

    var pid: Int32 { process.processIdentifier }
    var isRunning: Bool { box.exit.withLock { $0 == nil } }

    /// Waits for the process to end; returns its exit status (or signal number).
    func wait() async -> Int32 {
        await withCheckedContinuation { (c: CheckedContinuation<Int32, Never>) in
            let done: Int32? = box.exit.withLock { e in
                if let e { return e.status }
                box.waiters.withLock { $0.append(c) }
                return nil
            }
            if let done { c.resume(returning: done) }
        }
    }

    /// Waits up to `seconds`; nil if still running.
    func wait(seconds: Double) async -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let e = box.exit.withLock({ $0 }) { return e.status }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return box.exit.withLock { $0?.status }
    }

    var terminatedBySignal: Bool { box.exit.withLock { $0?.reason == .uncaughtSignal } }

    func signal(_ sig: Int32) { if isRunning { kill(pid, sig) } }

    /// SIGTERM, then SIGKILL if it has not ended within `grace` seconds.
    @discardableResult
    func stop(grace: Double = 10) async -> Int32 {
        signal(SIGTERM)
        if let s = await wait(seconds: grace) { return s }
        signal(SIGKILL)
        return await wait()
    }

    var output: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Runs a program to completion and returns (status, output).
    static func run(_ executable: String, _ arguments: [String], environment: [String: String]? = nil, directory: String? = nil, name: String = "cmd") async throws -> (status: Int32, output: String) {
        let p = try ChildProcess(name: name, executable: executable, arguments: arguments, environment: environment, directory: directory)
        let s = await p.wait()
        return (s, p.output)
    }
}

final class ExitBox: Sendable {
    let exit = Mutex<(status: Int32, reason: Process.TerminationReason)?>(nil)
    let waiters = Mutex<[CheckedContinuation<Int32, Never>]>([])
}

enum Paths {
    /// The package root (three levels above this file).
    static let root: String = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    /// The `celerity` binary built next to the test bundle (or $CELERITY_BIN).
    static let celerity: String = built("celerity", environment: "CELERITY_BIN")

    /// The `celerity-dashboard` binary built beside `celerity` (or $CELERITY_DASHBOARD_BIN).
    static let dashboard: String = built("celerity-dashboard", environment: "CELERITY_DASHBOARD_BIN")

    /// A product of this package built next to the test bundle, else in .build/debug.
    static func built(_ name: String, environment variable: String) -> String {
        if let b = ProcessInfo.processInfo.environment[variable] { return b }
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var dir = exe.deletingLastPathComponent()
        // The test runner may live inside an .xctest bundle directory on some layouts.
        for _ in 0..<3 {
            let candidate = dir.appendingPathComponent(name).path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        return root + "/.build/debug/" + name
    }

    static func which(_ name: String) -> String { Executables.find(name) ?? "/usr/bin/\(name)" }

    static let python3 = which("python3")
}
