import Foundation
import Testing

extension Integration {
    /// docs/monitoring.md's "Five minutes" as a newcomer runs it: `celerity up -E` (which starts
    /// a private Redis when none answers), then the Python tools: `celery inspect ping` as the
    /// liveness probe, `celery status`, `celery control enable_events` (already on: `-E` reached
    /// the workers), a call, and a revoke from Python of a countdown call.
    @Suite(.timeLimit(.minutes(3)))
    struct MonitoringWalkthroughTests {
        @Test func theFiveMinuteWalkthroughWorks() async throws {
            let port = RedisServer.freePort()
            let broker = "redis://127.0.0.1:\(port)/0"
            let queue = "walk" + UUID().uuidString.prefix(6).lowercased()
            let dir = NSTemporaryDirectory() + "celerity-\(queue)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let manifest = dir + "/tasks.yaml"
            try """
            broker: \(broker)
            tasks:
              walk.add: {queue: \(queue), builtin: add}
            workers:
              one: {queues: [\(queue)], concurrency: 2}
              two: {queues: [\(queue)], concurrency: 2}
            """.write(toFile: manifest, atomically: true, encoding: .utf8)
            let up = try ChildProcess(name: "up-\(queue)", executable: Paths.celerity, arguments: ["up", "-E", "--manifest", manifest, "-l", "info"])
            let host = ProcessInfo.processInfo.hostName

            // 1. The liveness probe: both workers answer (`celery inspect ping` retried while they start).
            var ping = try await ChildProcess.run(Paths.python3, ["-m", "celery", "-b", broker, "inspect", "ping"], name: "inspect-ping")
            for _ in 0..<40 where !(ping.status == 0 && ping.output.contains("one@\(host)") && ping.output.contains("two@\(host)")) {
                try await Task.sleep(for: .milliseconds(500))
                ping = try await ChildProcess.run(Paths.python3, ["-m", "celery", "-b", broker, "inspect", "ping"], name: "inspect-ping")
            }
            #expect(ping.status == 0 && ping.output.contains("one@\(host): OK") && ping.output.contains("two@\(host): OK"), "\(ping.output)\n\(up.output.suffix(2000))")
            let status = try await ChildProcess.run(Paths.python3, ["-m", "celery", "-b", broker, "status"], name: "celery-status")
            #expect(status.status == 0 && status.output.contains("2 nodes online"), "\(status.output)")

            // 2. `-E` reached the workers: enable_events finds task events already on.
            let enable = try await ChildProcess.run(Paths.python3, ["-m", "celery", "-b", broker, "control", "enable_events"], name: "enable-events")
            #expect(enable.status == 0 && enable.output.components(separatedBy: "task events already enabled").count == 3, "\(enable.output)")

            // 3. A call, and 4. a revoke from Python of a countdown call: REVOKED at once, never run.
            let call = try await ChildProcess.run(Paths.celerity, ["call", "walk.add", "2", "3", "--manifest", manifest, "--timeout", "20"], name: "call")
            #expect(call.status == 0 && call.output.trimmingCharacters(in: .whitespacesAndNewlines) == "5", "\(call.output)")
            let script = """
            import sys, time
            from celery import Celery
            app = Celery(broker=sys.argv[1], backend=sys.argv[1])
            r = app.send_task("walk.add", args=[1, 2], queue=sys.argv[2], countdown=3)
            app.control.revoke(r.id)
            deadline = time.time() + 5
            while r.state != "REVOKED" and time.time() < deadline:
                time.sleep(0.1)
            print("after revoke:", r.state)
            time.sleep(4)
            print("after its eta:", r.state)
            """
            let py = try await ChildProcess.run(Paths.python3, ["-c", script, broker, queue], name: "py-revoke")
            #expect(py.status == 0 && py.output.contains("after revoke: REVOKED") && py.output.contains("after its eta: REVOKED"), "\(py.output)\n\(up.output.suffix(2000))")
            #expect(await up.stop(grace: 30) == 0, "\(up.output.suffix(2000))")
        }
    }
}
