import Celerity
import Foundation
import Testing

extension Integration {
    /// Interoperability with real Python Celery 5.7 (from PyPI), both directions, on both result
    /// backends. The tutorial's queue names are fixed, so each case gets a Redis DB of its own.
    @Suite(.timeLimit(.minutes(4)))
    struct InteropTests {
        @Test(arguments: [(7, "redis"), (8, "rpc")])
        func pythonCeleryClientsCallCelerityWorkers(db: Int, backend: String) async throws {
            let redis = try await sharedRedis.value
            let broker = redis.url(db: db)
            let results = backend == "rpc" ? "rpc://" : broker
            let worker = try ChildProcess(name: "interop-worker-\(db)", executable: Paths.celerity, arguments: [
                "worker", "-Q", "add,factorial,mat_mul", "-n", "interop-\(db)@test", "-c", "3",
                "--manifest", Paths.root + "/tasks.yaml", "--broker", broker, "--result-backend", results,
            ])
            let client = try await ChildProcess.run(Paths.python3, [Paths.root + "/interop/tutorial_clients.py", "--timeout", "150"],
                                                    environment: ["CELERITY_BROKER_URL": broker, "CELERITY_RESULT_BACKEND": results],
                                                    name: "tutorial-clients-\(db)")
            #expect(client.status == 0, "tutorial clients failed:\n\(client.output)\nworker log:\n\(worker.output.suffix(3000))")
            #expect(client.output.contains("OK   add_module.tasks.add(4, 6) = 10"))
            #expect(client.output.contains("OK   factorial_module.tasks.factorial(20000) = exact, 77338 digits"))
            #expect(client.output.contains("OK   mat_mul_module.tasks.mat_mul(20, 20) = 20x20 floats"))
            #expect(await worker.stop() == 0)
        }

        /// NaN, Infinity, -Infinity and numbers beyond a double (1e999999) are kept as Python's
        /// json module reads and writes them (the decision in docs/plugins.md): a Python Celery
        /// client gets nan/inf back, and what Celerity stores is those bare tokens, not null.
        @Test func nonFiniteNumbersRoundTripWithPythonCelery() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: """
              n.echo:
                queue: {q}
                builtin: echo
              n.add:
                queue: {q}
                builtin: add
            """)
            let common = ["--manifest", h.manifestPath, "--broker", h.broker]
            let inf = try await ChildProcess.run(Paths.celerity, ["call", "n.add", "1e999999", "1"] + common)
            #expect(inf.status == 0, "\(inf.output)")
            #expect(inf.output.trimmingCharacters(in: .whitespacesAndNewlines) == "Infinity")
            let sent = try await ChildProcess.run(Paths.celerity, ["call", "n.echo", "1e999999", "NaN", "-Infinity", "--no-wait"] + common)
            let id = sent.output.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(try await eventually(seconds: 10) { try await h.redisClient().call("GET", Keys.resultMeta(id)).bytes != nil })
            let stored = try await h.redisClient().call("GET", Keys.resultMeta(id)).string ?? ""
            #expect(stored.contains("\"result\":{\"args\":[1e999999,NaN,-Infinity]"), "\(stored)")
            let script = """
            import math, sys
            from celery import Celery
            broker, queue, stored_id = sys.argv[1:4]
            app = Celery(broker=broker, backend=broker)
            app.conf.task_routes = {"n.echo": {"queue": queue}, "n.add": {"queue": queue}}
            r = app.send_task("n.echo", args=[float("nan"), float("inf"), float("-inf"), 1.5]).get(timeout=30)
            a = r["args"]
            assert math.isnan(a[0]) and a[1] == math.inf and a[2] == -math.inf and a[3] == 1.5, r
            assert app.send_task("n.add", args=[float("inf"), 1]).get(timeout=30) == math.inf
            assert math.isnan(app.send_task("n.add", args=[float("nan"), 1.0]).get(timeout=30))
            v = app.AsyncResult(stored_id).get(timeout=30)["args"]
            assert v[0] == math.inf and math.isnan(v[1]) and v[2] == -math.inf, v
            print("non-finite round trip OK")
            """
            let py = try await ChildProcess.run(Paths.python3, ["-c", script, h.broker, h.queue, id], name: "py-nonfinite")
            #expect(py.status == 0, "\(py.output)\nworker:\n\(h.worker.output.suffix(2000))")
            #expect(py.output.contains("non-finite round trip OK"))
            #expect(await h.stop() == 0)
        }

        @Test(arguments: [(9, "redis"), (10, "rpc")])
        func celerityCallReachesAPythonCeleryWorker(db: Int, backend: String) async throws {
            let redis = try await sharedRedis.value
            let broker = redis.url(db: db)
            let results = backend == "rpc" ? "rpc://" : broker
            let py = try ChildProcess(name: "py-worker-\(db)", executable: Paths.python3,
                                      arguments: ["-m", "celery", "-A", "py_worker_app", "worker", "-Q", "pyq", "--pool", "solo", "-c", "1",
                                                  "-n", "pyworker-\(db)@%h", "--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "info"],
                                      environment: ["CELERITY_BROKER_URL": broker, "CELERITY_RESULT_BACKEND": results],
                                      directory: Paths.root + "/interop")
            let call = try await ChildProcess.run(Paths.celerity, ["call", "pyapp.mul", "6", "7", "--queue", "pyq", "--timeout", "60",
                                                                   "--broker", broker, "--result-backend", results], name: "call-py-\(db)")
            #expect(call.status == 0, "celerity call failed: \(call.output)\nPython worker:\n\(py.output.suffix(3000))")
            #expect(call.output.trimmingCharacters(in: .whitespacesAndNewlines) == "42")
            let hello = try await ChildProcess.run(Paths.celerity, ["call", "pyapp.hello", "celerity", "--queue", "pyq", "--timeout", "60",
                                                                    "--broker", broker, "--result-backend", results], name: "call-py-hello-\(db)")
            #expect(hello.output.trimmingCharacters(in: .whitespacesAndNewlines) == "\"hello celerity\"")
            await py.stop(grace: 10)
        }
    }
}
