import Celerity
import Foundation
import Testing

extension Integration {
    /// One-shot plugins as real processes behind a real worker: every misbehaviour ends in a
    /// clear FAILURE and the worker keeps serving.
    @Suite(.timeLimit(.minutes(3)))
    struct PluginTests {
        static let tasks = """
          p.add:
            queue: {q}
            plugin: [python3, {root}/plugins/py_tasks.py]
          plugins.py_add:
            queue: {q}
            plugin: [python3, {root}/plugins/py_tasks.py]
          plugins.py_fail:
            queue: {q}
            plugin: [python3, {root}/plugins/py_tasks.py]
          p.js:
            queue: {q}
            plugin: [node, {root}/plugins/js_add.js]
          p.sh:
            queue: {q}
            plugin: {root}/plugins/sh_upper.sh
          p.numpy:
            queue: {q}
            plugin: [python3, {root}/plugins/matmul_numpy.py]
          p.bad:
            queue: {q}
            plugin: [python3, {root}/Tests/Fixtures/plugins/misbehave.py]
            time_limit: 20
        """

        @Test func pluginsInThreeLanguagesReturnResults() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.tasks, concurrency: 4)
            #expect(try await h.call("plugins.py_add", [2, 3]) == .number("5"))
            // Big integers pass through a Python plugin exactly.
            let big = String(repeating: "9", count: 5000)
            #expect(try await h.call("plugins.py_add", [.number(big), 1]) == .number("1" + String(repeating: "0", count: 5000)))
            #expect(try await h.call("p.js", [2, 40]) == .number("42"))
            #expect(try await h.call("p.sh", ["hello celerity"]) == .string("HELLO CELERITY"))
            let m = try await h.call("p.numpy", [3, 4])
            #expect(m.arrayValue?.count == 3 && m.arrayValue?.first?.arrayValue?.count == 3)
            let f = try await h.callFailing("plugins.py_fail", [])
            #expect(f.type == "ValueError")
            #expect(f.message == "boom")
            #expect(f.traceback?.contains("Traceback") == true)
            #expect(await h.stop() == 0)
        }

        @Test func misbehavingPluginsFailClearlyAndTheWorkerKeepsServing() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.tasks, concurrency: 4)
            let garbage = try await h.callFailing("p.bad", ["garbage"])
            #expect(garbage.type == "PluginProtocolError")
            #expect(garbage.message.contains("not a JSON response"))
            #expect(garbage.message.contains("this is not JSON"))
            let nothing = try await h.callFailing("p.bad", ["nothing"])
            #expect(nothing.type == "PluginProtocolError")
            #expect(nothing.message.contains("printed nothing"))
            let exit3 = try await h.callFailing("p.bad", ["exit3"])
            #expect(exit3.type == "PluginExitError")
            #expect(exit3.message.contains("exited with code 3"))
            #expect(exit3.message.contains("oops on stderr"))
            let temp = try await h.callFailing("p.bad", ["tempfail"])
            #expect(temp.type == "PluginTemporaryFailure")
            let crash = try await h.callFailing("p.bad", ["crash"])
            #expect(crash.type == "PluginCrashed")
            #expect(crash.message.contains("signal 9"))
            // 5 MB on stderr is capped in the log; the result still arrives.
            #expect(try await h.call("p.bad", ["bigstderr"]) == .string("bigstderr done"))
            #expect(try await h.call("plugins.py_add", [1, 1]) == .number("2"))
            #expect(await h.stop() == 0)
        }

        /// An error answer of 15 MB (message) with a 100 KB type and traceback is stored cut to
        /// its caps, says so, is logged shorter still, and the worker keeps serving.
        @Test func aHugeErrorIsCutWhereItIsStoredAndLogged() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.tasks, concurrency: 2)
            let handle = try await h.client().send("p.bad", args: ["hugeerror"])
            do {
                _ = try await handle.get(timeout: .seconds(60))
                Issue.record("hugeerror succeeded")
            } catch let f as TaskFailure {
                #expect(f.message.hasSuffix("… [cut: 15,000,000 bytes in all]"), "\(f.message.suffix(80))")
            }
            try await expectStoredFailureIsCut(h, handle.id)
            #expect(try await h.call("p.bad", ["ok"]) == .string("ok"))
            #expect(await h.stop() == 0)
        }

        @Test func aHungPluginIsKilledWithItsProcessGroupAtTheTimeLimit() async throws {
            let redis = try await sharedRedis.value
            // A copy of the misbehaving plugin under a unique path, so no other test's run matches.
            let dir = NSTemporaryDirectory() + "celerity-hang-\(UUID().uuidString.prefix(6))"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: Paths.root + "/Tests/Fixtures/plugins/misbehave.py", toPath: dir + "/hang_plugin.py")
            let h = try WorkerHarness(redis: redis, tasks: """
              p.hang:
                queue: {q}
                plugin: [python3, \(dir)/hang_plugin.py]
                time_limit: 1.5
                grace_period: 0.5
              p.add:
                queue: {q}
                builtin: add
            """, concurrency: 2)
            let start = Date()
            let hang = try await h.callFailing("p.hang", ["hang"])
            #expect(hang.type == "TimeLimitExceeded")
            #expect(hang.message.contains("1.5 s"))
            // 1.5 s limit, SIGTERM ignored, SIGKILL after the 0.5 s grace period.
            #expect(Date().timeIntervalSince(start) < 8)
            #expect(try await eventually {
                try await ChildProcess.run("/usr/bin/pgrep", ["-f", dir + "/hang_plugin.py"]).output.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
            }, "the plugin's process group was not killed")
            #expect(try await h.call("p.add", [2, 2]) == .number("4"))
            #expect(await h.stop() == 0)
        }

        /// Issue 9.1: a plugin that exits without reading a request larger than the pipe's
        /// buffer killed the whole worker (SIGPIPE, or a fatal error of the spawn library).
        @Test func aPluginThatNeverReadsItsRequestFailsTheCallNotTheWorker() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: """
              p.import_fails:
                queue: {q}
                plugin: [python3, {root}/Tests/Fixtures/plugins/import_fails.py]
              p.ignores_stdin:
                queue: {q}
                plugin: {root}/Tests/Fixtures/plugins/ignores_stdin.sh
              p.add:
                queue: {q}
                builtin: add
            """, concurrency: 2)
            let big = JSONValue.string(String(repeating: "x", count: 256 * 1024))
            let imp = try await h.callFailing("p.import_fails", [big])
            #expect(imp.type == "PluginExitError")
            #expect(imp.message.contains("exited with code 1"))
            #expect(imp.message.contains("ModuleNotFoundError"))
            let sh = try await h.callFailing("p.ignores_stdin", [.string(String(repeating: "y", count: 100 * 1024))])
            #expect(sh.type == "PluginExitError" || sh.type == "PluginProtocolError")
            #expect(sh.message.contains("ignores_stdin"))
            // The same worker process still serves.
            #expect(try await h.call("p.add", [2, 3]) == .number("5"))
            for _ in 0..<3 { _ = try await h.callFailing("p.import_fails", [big]) }
            #expect(try await h.call("p.add", [4, 3]) == .number("7"))
            #expect(h.worker.isRunning)
            #expect(await h.stop() == 0)
        }

        @Test func pluginsSeeOnlyTheEnvironmentTheManifestAllows() async throws {
            let redis = try await sharedRedis.value
            let dir = NSTemporaryDirectory() + "celerity-env-\(UUID().uuidString.prefix(6))"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let script = dir + "/env.sh"
            try "#!/bin/sh\ncat >/dev/null\nprintf '{\"result\": \"%s|%s|%s\"}' \"$SECRET_A\" \"$SECRET_B\" \"$CELERITY_MODE\"\n".write(toFile: script, atomically: true, encoding: .utf8)
            chmod(script, 0o755)
            let tasks = """
              e.closed:
                queue: {q}
                plugin: \(script)
              e.open:
                queue: {q}
                plugin: \(script)
                env: [SECRET_A]
                set_env: {SECRET_B: fixed}
            """
            // The worker itself has both secrets in its environment.
            let h = try WorkerHarness(redis: redis, tasks: tasks, extraEnvironment: ["SECRET_A": "aaa", "SECRET_B": "bbb"])
            #expect(try await h.call("e.closed", []) == .string("||oneshot"))
            #expect(try await h.call("e.open", []) == .string("aaa|fixed|oneshot"))
            #expect(await h.stop() == 0)
        }
    }
}
