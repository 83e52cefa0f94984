import Celerity
import Foundation
import Testing

extension Integration {
    /// Celery's remote control against a Celerity worker, driven by the real Python tools
    /// (interop/ops_clients.py: `app.control.inspect()`, `celery inspect/control/status`
    /// subprocesses, `app.control.revoke`, `AsyncResult.revoke`), the cases that pass against a
    /// Python Celery 5.7 worker too.
    @Suite(.timeLimit(.minutes(4)))
    struct RemoteControlTests {
        static let cases = ["ping", "ping-filter", "cli-ping", "cli-status", "cli-inspect", "stats", "registered", "active-queues",
                            "conf", "clock", "report", "active", "reserved", "scheduled", "query-task", "revoke-reply", "revoked",
                            "revoke-queued", "revoke-delayed", "revoke-terminate", "terminate-command", "asyncresult-revoke",
                            "unknown-command", "pidbox-garbage", "add-cancel-consumer", "limits", "pool-grow-shrink", "cli-control", "heartbeat", "events-toggle", "events-shape"]

        @Test func celeryInspectControlAndRevokeWorkWithACelerityWorker() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: """
              o.add:
                queue: {q}
                builtin: add
              plugins.py_add:
                queue: {q}
                plugin: [python3, {root}/plugins/py_tasks.py]
              plugins.py_sleep:
                queue: {q}
                plugin: [python3, {root}/plugins/py_tasks.py]
              o.sleep:
                queue: {q}
                builtin: sleep
              o.fail:
                queue: {q}
                builtin: fail
            """, concurrency: 4, db: 15)
            let common = ["--broker", h.broker, "--backend", h.broker, "--node", h.node, "--queue", h.queue,
                          "--add-task", "plugins.py_add", "--sleep-task", "o.sleep", "--fail-task", "o.fail"]
            let run = try await ChildProcess.run(Paths.python3, [Paths.root + "/interop/ops_clients.py"] + common + ["--only", Self.cases.joined(separator: ",")],
                                                 name: "ops-clients")
            #expect(run.status == 0, "ops clients:\n\(run.output)\nworker:\n\(h.worker.output.suffix(3000))")
            for c in Self.cases { #expect(run.output.contains("OK   \(c) ("), "missing: \(c)") }
            // The revokes again with a plugin as the slow task: queued, and running (terminated).
            let pluginCases = ["revoke-queued", "revoke-terminate", "terminate-command", "asyncresult-revoke"]
            let plugin = try await ChildProcess.run(Paths.python3, [Paths.root + "/interop/ops_clients.py"] + common
                                                    + ["--sleep-task", "plugins.py_sleep", "--only", pluginCases.joined(separator: ",")], name: "ops-plugin-revokes")
            #expect(plugin.status == 0, "ops clients (plugin):\n\(plugin.output)\nworker:\n\(h.worker.output.suffix(3000))")
            for c in pluginCases { #expect(plugin.output.contains("OK   \(c) ("), "missing (plugin): \(c)") }
            // `celery control shutdown`: a warm stop, worker-offline published, exit 0 (no reply, as
            // a Python worker gives none).
            let shutdown = try await ChildProcess.run(Paths.python3, [Paths.root + "/interop/ops_clients.py"] + common + ["--only", "shutdown", "--with-shutdown"],
                                                      name: "ops-shutdown")
            #expect(shutdown.status == 0, "\(shutdown.output)")
            #expect(await h.worker.wait(seconds: 20) == 0, "worker:\n\(h.worker.output.suffix(2000))")
        }
    }
}
