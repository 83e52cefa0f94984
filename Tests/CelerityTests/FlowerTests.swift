import Foundation
import Testing

extension Integration {
    /// Flower 2.2 from PyPI (interop/flower_check.py starts it on a free port) on a broker with a
    /// Celerity worker and a Python Celery 5.7 worker: both listed, the Celerity worker's page,
    /// its tasks with state, args, result and runtime, revoke and revoke-terminate from Flower
    /// (a built-in and a plugin), /metrics, and the worker offline within its alive window
    /// after a SIGKILL.
    @Suite(.timeLimit(.minutes(4)))
    struct FlowerTests {
        @Test func flowerShowsAndSteersAMixedCluster() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: """
              {q}.add:
                queue: {q}
                builtin: add
              {q}.fail:
                queue: {q}
                builtin: fail
              {q}.sleep:
                queue: {q}
                builtin: sleep
              plugins.py_sleep:
                queue: {q}
                plugin: [python3, {root}/plugins/py_tasks.py]
            """, concurrency: 4, db: 6, extraArgs: ["-E"])
            // The Python worker: prefork (a solo pool reads remote control only between tasks), -E.
            let pyNode = "py-\(h.queue)@flower"
            let py = try ChildProcess(name: "py-worker-flower", executable: Paths.python3,
                                      arguments: ["-m", "celery", "-A", "py_worker_app", "worker", "-Q", "pyq-\(h.queue)", "--pool", "prefork", "-c", "2",
                                                  "-E", "-n", pyNode, "-l", "info"],
                                      environment: ["CELERITY_BROKER_URL": h.broker, "CELERITY_RESULT_BACKEND": h.broker],
                                      directory: Paths.root + "/interop")
            let script = Paths.root + "/interop/flower_check.py"
            let common = ["--broker", h.broker, "--backend", h.broker]
            let celerityTasks = ["--queue", h.queue, "--add-task", h.queue + ".add", "--fail-task", h.queue + ".fail", "--sleep-task", h.queue + ".sleep"]

            // 1. The Python worker's side of the mixed cluster: both workers listed, its tasks shown.
            let mixed = try await ChildProcess.run(Paths.python3, [script] + common + ["--node", pyNode, "--also-node", h.node, "--queue", "pyq-\(h.queue)",
                                                                                       "--only", "workers,workers-status,dashboard,tasks"], name: "flower-mixed")
            #expect(mixed.status == 0, "\(mixed.output)\nPython worker:\n\(py.output.suffix(2000))")
            for c in ["workers", "workers-status", "dashboard", "tasks"] { #expect(mixed.output.contains("OK   \(c) ("), "missing: \(c)") }

            // 2. Terminate a running plugin from Flower: its process gets the signal, REVOKED stored and shown.
            let plugin = try await ChildProcess.run(Paths.python3, [script] + common + ["--node", h.node, "--also-node", pyNode] + celerityTasks
                                                    + ["--sleep-task", "plugins.py_sleep", "--only", "revoke-terminate"], name: "flower-plugin")
            #expect(plugin.status == 0 && plugin.output.contains("OK   revoke-terminate ("), "\(plugin.output)\nworker:\n\(h.worker.output.suffix(2000))")

            // 3. Everything on the Celerity worker, and last its SIGKILL: offline within 8 s
            //    (Flower's alive rule: last heartbeat + 2 × freq, freq 2 s).
            let all = try await ChildProcess.run(Paths.python3, [script] + common + ["--node", h.node, "--also-node", pyNode] + celerityTasks
                                                 + ["--offline-within", "8", "--kill-pid", String(h.worker.pid)], name: "flower-celerity")
            #expect(all.status == 0, "\(all.output)\nworker:\n\(h.worker.output.suffix(3000))")
            for c in ["healthcheck", "workers", "workers-status", "dashboard", "worker-page", "tasks", "revoke", "revoke-terminate", "metrics", "offline"] {
                #expect(all.output.contains("OK   \(c) ("), "missing: \(c)")
            }
            _ = await h.worker.wait(seconds: 5)
            await py.stop(grace: 10)
        }
    }
}
