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
