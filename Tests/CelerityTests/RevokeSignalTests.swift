@testable import Celerity
import Foundation
import Testing

/// `revoke(terminate=True, signal=...)`: the named signal, by name or number (Celery's forms).
struct SignalNamesTests {
    @Test func namesAndNumbersAsCeleryTakesThem() {
        #expect(Signals.number("SIGUSR1") == SIGUSR1 && Signals.number("usr1") == SIGUSR1 && Signals.number("KILL") == SIGKILL)
        #expect(Signals.number("9") == 9 && Signals.number("SIGNOPE") == nil && Signals.number("0") == nil && Signals.number("") == nil)
        #expect(Signals.name(SIGUSR1) == "SIGUSR1" && Signals.name(40) == "signal 40")
        #expect(TaskFailure.revoked("revoked (terminated)").terminationSignal == SIGTERM)
        #expect(TaskFailure.revoked("revoked (terminated by SIGUSR1)").terminationSignal == SIGUSR1)
        #expect(TaskFailure.revoked("revoked").terminationSignal == nil && TaskFailure.revoked("expired").terminationSignal == nil)
    }
}

extension Integration {
    /// A running one-shot plugin revoked from Python with `terminate=True, signal="SIGUSR1"`
    /// gets SIGUSR1 (not SIGTERM), and the task ends REVOKED; an unknown signal is refused.
    @Suite(.timeLimit(.minutes(2)))
    struct RevokeSignalTests {
        @Test func aRunningPluginGetsTheNamedSignal() async throws {
            let redis = try await sharedRedis.value
            let marker = NSTemporaryDirectory() + "celerity-signal-\(UUID().uuidString.prefix(8))"
            let h = try WorkerHarness(redis: redis, tasks: """
              {q}.wait:
                queue: {q}
                plugin: [sh, {root}/Tests/Fixtures/plugins/signal_marker.sh, \(marker)]
            """, concurrency: 2)
            let script = """
            import sys, time
            from celery import Celery
            broker, queue, task, node = sys.argv[1:5]
            app = Celery(broker=broker, backend=broker)
            r = app.send_task(task, queue=queue)
            deadline = time.time() + 20
            while time.time() < deadline:
                active = (app.control.inspect(destination=[node], timeout=1).active() or {}).get(node) or []
                if any(t["id"] == r.id for t in active):
                    break
            else:
                sys.exit("the task never showed in active")
            time.sleep(0.5)   # the plugin has set its traps
            bad = app.control.revoke(r.id, terminate=True, signal="SIGNOPE", reply=True, destination=[node], timeout=2)
            print("unknown signal:", bad)
            got = app.control.revoke(r.id, terminate=True, signal="SIGUSR1", reply=True, destination=[node], timeout=2)
            print("revoke:", got)
            deadline = time.time() + 10
            while r.state != "REVOKED" and time.time() < deadline:
                time.sleep(0.1)
            print("state:", r.state)
            """
            let py = try await ChildProcess.run(Paths.python3, ["-c", script, h.broker, h.queue, h.queue + ".wait", h.node], name: "py-revoke-signal")
            #expect(py.status == 0 && py.output.contains("state: REVOKED"), "\(py.output)\nworker:\n\(h.worker.output.suffix(2000))")
            #expect(py.output.contains("unknown signal: [{'\(h.node)': {'error': \"TypeError('signal name SIGNOPE is not supported')\"}}]"), "\(py.output)")
            #expect(py.output.contains("revoke: [{'\(h.node)': {'ok': 'terminate:"), "\(py.output)")
            let seen = (try? String(contentsOfFile: marker, encoding: .utf8)) ?? ""
            #expect(seen == "started\nUSR1\n", "the plugin saw: \(seen)")
            #expect(await h.stop() == 0)
        }
    }
}
