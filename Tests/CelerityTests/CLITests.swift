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
            #expect(r.status == 2)
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
            // Stopped by add's schema before it is queued (exit 2, bad input).
            #expect(bad.status == 2)
            #expect(bad.output.contains("TypeError: c.add() missing 1 required argument: 'y' (not sent)"))
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
            #expect(r.status == 2)
            #expect(r.output.contains("\(path):4:14: error: unknown built-in 'nosuch'"), "\(r.output)")
        }

        /// A directory named as the plugin program, or a file without an execute bit, is a bad
        /// manifest: `check` and `worker` both say where, and exit 2, before any task runs.
        @Test func checkAndWorkerRefuseAPluginProgramThatCannotRun() async throws {
            let dir = NSTemporaryDirectory() + "celerity-cli-\(UUID().uuidString.prefix(6))"
            try FileManager.default.createDirectory(atPath: dir + "/plugdir", withIntermediateDirectories: true)
            try "#!/bin/sh\necho '{\"result\": 1}'\n".write(toFile: dir + "/notexec.sh", atomically: true, encoding: .utf8)
            chmod(dir + "/notexec.sh", 0o644)
            for (program, words) in [("./plugdir", "is a directory, not a program"), ("./notexec.sh", "is not executable (chmod +x")] {
                let path = dir + "/tasks-\(program.dropFirst(2)).yaml"
                try "tasks:\n  p.x:\n    queue: q\n    plugin: \(program)\n".write(toFile: path, atomically: true, encoding: .utf8)
                let check = try await ChildProcess.run(Paths.celerity, ["check", path])
                #expect(check.status == 2, "\(check.output)")
                #expect(check.output.contains("\(path):4:13: error: plugin program '\(program)' of task 'p.x' \(words)"), "\(check.output)")
                // A worker that accepted the manifest would wait for Redis forever: give it 20 s.
                let worker = try ChildProcess(name: "worker-bad-plugin", executable: Paths.celerity, arguments: ["worker", "--manifest", path, "--broker", "redis://127.0.0.1:1/0"])
                let status = await worker.wait(seconds: 20)
                if status == nil { await worker.stop(grace: 2) }
                #expect(status == 2, "\(worker.output)")
                #expect(worker.output.contains("\(path):4:13: error: plugin program '\(program)'"), "\(worker.output)")
            }
        }

        /// One table of exit codes for every command (README, `celerity --help`): 0 ok, 1 the
        /// task failed (or the command's own check did), 2 bad manifest/URL/input, 3 no result
        /// (yet), 4 Redis unreachable, 64 bad usage.
        @Test func everyCommandExitsWithTheDocumentedCodes() async throws {
            let redis = try await sharedRedis.value
            let down = "redis://127.0.0.1:\(RedisServer.freePort())/0"
            let dir = NSTemporaryDirectory() + "celerity-cli-\(UUID().uuidString.prefix(6))"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let bad = dir + "/bad.yaml"
            try "tasks:\n  a.b:\n    queu: q\n".write(toFile: bad, atomically: true, encoding: .utf8)
            let up = redis.url(db: 0)
            func code(_ args: [String]) async throws -> Int32 {
                let r = try await ChildProcess.run(Paths.celerity, args)
                return r.status
            }
            // A task nobody has run yet: no result (yet) is 3, as a --timeout that ran out.
            let pending = "pending-\(UUID().uuidString)"
            let pendingRun = try await ChildProcess.run(Paths.celerity, ["result", pending, "--broker", up])
            #expect(pendingRun.status == 3, "\(pendingRun.output)")
            #expect(pendingRun.output.contains("PENDING"))
            #expect(try await code(["result", pending, "--wait", "--timeout", "0.3", "--broker", up]) == 3)
            // Redis unreachable: 4.
            #expect(try await code(["result", pending, "--broker", down]) == 4)
            #expect(try await code(["revoke", pending, "--broker", down]) == 4)
            #expect(try await code(["dead", "list", "--broker", down]) == 4)
            #expect(try await code(["call", "x.y", "--timeout", "1", "--broker", down]) == 4)
            // A bad manifest: 2, whichever command reads it.
            for args in [["check", bad], ["call", "x.y", "--manifest", bad], ["result", pending, "--manifest", bad],
                         ["revoke", pending, "--manifest", bad], ["dead", "list", "--manifest", bad],
                         ["worker", "--manifest", bad], ["up", "--manifest", bad]] {
                let r = try await ChildProcess.run(Paths.celerity, args + ["--broker", down].filter { _ in args[0] != "check" })
                #expect(r.status == 2, "\(args): \(r.output)")
                #expect(r.output.contains("\(bad):3:5: error: unknown key 'queu'"), "\(args): \(r.output)")
            }
            // A bad URL: 2.
            #expect(try await code(["result", pending, "--broker", "http://nope"]) == 2)
            #expect(try await code(["dead", "list", "--broker", "http://nope"]) == 2)
            #expect(try await code(["revoke", pending, "--broker", "http://nope"]) == 2)
            // Bad usage (ArgumentParser's own): 64.
            #expect(try await code(["call", "x.y", "--priority", "12"]) == 64)
            // Nothing to act on: 1.
            #expect(try await code(["dead", "show", "no-such-entry", "--broker", up]) == 1)
        }

        @Test func pluginCheckPassesAConformingPluginAndExplainsAFailingOne() async throws {
            let good = try await ChildProcess.run(Paths.celerity, ["plugin", "check", "--task", "plugins.py_add", "--args", "[2, 3]",
                                                                   "--slow-task", "plugins.py_sleep", "--", Paths.python3, Paths.root + "/plugins/py_tasks.py"])
            #expect(good.status == 0, "\(good.output)")
            #expect(good.output.contains("17 passed, 0 failed"), "\(good.output)")
            // A one-shot-only plugin fails the persistent checks, with words a plugin author understands.
            let oneShotOnly = try await ChildProcess.run(Paths.celerity, ["plugin", "check", "--timeout", "3", "--", Paths.python3, Paths.root + "/Tests/Fixtures/plugins/misbehave.py"])
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
