import Celerity
import Foundation
import Testing

extension Integration {
    /// The `celerity` command as a user runs it.
    @Suite(.timeLimit(.minutes(2)))
    struct CLITests {
        @Test func checkAcceptsTheRepositoryManifest() async throws {
            let r = try await ChildProcess.run(Paths.celerity, ["check", Paths.root + "/tasks.yaml"])
            #expect(r.status == 0, "\(r.output)")
            #expect(r.output.contains("add_module.tasks.add → queue add, builtin add"))
        }

        @Test func checkPointsAtTheBadLineAndFails() async throws {
            let dir = NSTemporaryDirectory() + "celerity-cli-\(UUID().uuidString.prefix(6))"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let path = dir + "/tasks.yaml"
            try "tasks:\n  a.b:\n    queue: q\n    bulitin: add\n".write(toFile: path, atomically: true, encoding: .utf8)
            let r = try await ChildProcess.run(Paths.celerity, ["check", path])
            #expect(r.status == 1)
            #expect(r.output.contains("\(path):4:5: error: unknown key 'bulitin' in task 'a.b'"), "\(r.output)")
        }

        @Test func callPrintsResultsAndFailuresWithExitCodes() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: """
              c.add:
                queue: {q}
                builtin: add
            """)
            let common = ["--manifest", h.manifestPath, "--broker", h.broker]
            let ok = try await ChildProcess.run(Paths.celerity, ["call", "c.add", "4", "-6"] + common)
            #expect(ok.status == 0)
            #expect(ok.output.trimmingCharacters(in: .whitespacesAndNewlines) == "-2")
            let kw = try await ChildProcess.run(Paths.celerity, ["call", "c.add", "--kwargs", "{\"x\": 1.5, \"y\": 1}"] + common)
            #expect(kw.output.trimmingCharacters(in: .whitespacesAndNewlines) == "2.5")
            let bad = try await ChildProcess.run(Paths.celerity, ["call", "c.add", "1"] + common)
            #expect(bad.status == 1)
            #expect(bad.output.contains("TypeError: c.add() missing 1 required argument: 'y'"))
            let unknown = try await ChildProcess.run(Paths.celerity, ["call", "c.nope", "--queue", h.queue] + common)
            #expect(unknown.status == 1)
            #expect(unknown.output.contains("NotRegistered"))
            let noWait = try await ChildProcess.run(Paths.celerity, ["call", "c.add", "1", "2", "--no-wait"] + common)
            let id = noWait.output.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(id.count == 36)
            let result = try await ChildProcess.run(Paths.celerity, ["result", id, "--wait", "--timeout", "10"] + common)
            #expect(result.output.trimmingCharacters(in: .whitespacesAndNewlines) == "3")
            let timeout = try await ChildProcess.run(Paths.celerity, ["call", "c.add", "1", "2", "--queue", "nobody-\(h.queue)", "--timeout", "0.5"] + common)
            #expect(timeout.status == 3)
            let badKwargs = try await ChildProcess.run(Paths.celerity, ["call", "c.add", "--kwargs", "[1]"] + common)
            #expect(badKwargs.status != 0)
            #expect(badKwargs.output.contains("--kwargs must be a JSON object"))
            #expect(await h.stop() == 0)
        }

        @Test func callSaysClearlyWhenRedisIsDown() async throws {
            let port = RedisServer.freePort()
            let r = try await ChildProcess.run(Paths.celerity, ["call", "x.y", "--broker", "redis://user:topsecret@127.0.0.1:\(port)/0", "--timeout", "2"])
            #expect(r.status == 4)
            #expect(r.output.contains("cannot connect"))
            #expect(!r.output.contains("topsecret"))
        }

        @Test func workerRejectsABadManifestWithItsLocation() async throws {
            let dir = NSTemporaryDirectory() + "celerity-cli-\(UUID().uuidString.prefix(6))"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let path = dir + "/tasks.yaml"
            try "tasks:\n  a.b:\n    queue: q\n    builtin: nosuch\n".write(toFile: path, atomically: true, encoding: .utf8)
            let r = try await ChildProcess.run(Paths.celerity, ["worker", "--manifest", path, "--broker", "redis://127.0.0.1:1/0"])
            #expect(r.status == 1)
            #expect(r.output.contains("\(path):4:14: error: unknown built-in 'nosuch'"), "\(r.output)")
        }

        @Test func pluginCheckPassesAConformingPluginAndExplainsAFailingOne() async throws {
            let good = try await ChildProcess.run(Paths.celerity, ["plugin", "check", "--task", "plugins.py_add", "--args", "[2, 3]",
                                                                   "--slow-task", "plugins.py_sleep", "--", Paths.python3, Paths.root + "/plugins/py_tasks.py"])
            #expect(good.status == 0, "\(good.output)")
            #expect(good.output.contains("14 passed, 0 failed"))
            // A one-shot-only plugin fails the persistent checks, with words a plugin author understands.
            let oneShotOnly = try await ChildProcess.run(Paths.celerity, ["plugin", "check", "--timeout", "3", "--", Paths.python3, Paths.root + "/plugins/misbehave.py"])
            #expect(oneShotOnly.status == 1)
            #expect(oneShotOnly.output.contains("FAIL  persistent: answers initialize within 10 s"))
            // Garbage on stdout in one-shot mode is named as such.
            let dir = NSTemporaryDirectory() + "celerity-pc-\(UUID().uuidString.prefix(6))"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try "#!/bin/sh\ncat >/dev/null\necho starting up\necho '{\"result\": 1}'\n".write(toFile: dir + "/noisy.sh", atomically: true, encoding: .utf8)
            chmod(dir + "/noisy.sh", 0o755)
            let noisy = try await ChildProcess.run(Paths.celerity, ["plugin", "check", "--mode", "oneshot", "--", dir + "/noisy.sh"])
            #expect(noisy.status == 1)
            #expect(noisy.output.contains("stdout is not one JSON document (logs belong on stderr)"), "\(noisy.output)")
        }
    }
}
