import Celerity
import Foundation
import RedisClient
import Testing

extension Integration {
    /// The newcomer's path (issue 16's "done when"): a plugin written into the plugin folder is
    /// called from the CLI without a tasks.yaml entry, a wrong call is stopped before it is queued,
    /// and a plugin copied in while the worker runs (`--reload`) is served without a restart.
    @Suite(.timeLimit(.minutes(2)))
    struct DropInTests {
        @Test func aPluginDroppedIntoTheFolderIsCalledWithoutAnEntry() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: "", startWorker: false)
            let dir = (h.manifestPath as NSString).deletingLastPathComponent
            try FileManager.default.createDirectory(atPath: dir + "/plugins", withIntermediateDirectories: true)
            // No tasks: at all; the folder's tasks go to this test's queue.
            try "plugin_dirs: [{path: plugins, queue: \(h.queue)}]\n".write(toFile: h.manifestPath, atomically: true, encoding: .utf8)
            let new = try await ChildProcess.run(Paths.celerity, ["plugin", "new", "greet", "--lang", "python", "--dir", "plugins"], directory: dir)
            #expect(new.status == 0, "\(new.output)")
            let common = ["--manifest", h.manifestPath, "--broker", h.broker, "--timeout", "20"]
            let worker = try ChildProcess(name: "worker-dropin-\(h.queue)", executable: Paths.celerity, arguments: [
                "worker", "-n", h.node, "-c", "2", "-l", "debug", "--reload", "--manifest", h.manifestPath, "--broker", h.broker,
            ])
            let ok = try await ChildProcess.run(Paths.celerity, ["call", "greet", "Ada", "2"] + common)
            #expect(ok.status == 0, "\(ok.output)\n\(worker.output)")
            #expect(ok.output.contains(#""Hello, Ada! Hello, Ada!""#), "\(ok.output)")

            // A wrong call: exit 2 with the path of the bad value, nothing queued.
            let bad = try await ChildProcess.run(Paths.celerity, ["call", "greet", "Ada", "twice"] + common)
            #expect(bad.status == 2, "\(bad.output)")
            #expect(bad.output.contains(#"TypeError: greet: argument times: expected integer, got string "twice""#), "\(bad.output)")
            let admin = try h.redisClient()
            #expect(try await admin.call("LLEN", Keys.queue(h.queue)).int == 0)

            // Copied in while the worker runs: --reload picks it up (within ~1.5 s).
            try """
            from celerity_plugin import task, run

            @task("shout")
            def shout(text: str) -> str:
                return text.upper() + "!"

            if __name__ == "__main__":
                run()
            """.write(toFile: dir + "/plugins/shout.py", atomically: true, encoding: .utf8)
            var answer: (status: Int32, output: String) = (-1, "")
            let deadline = Date().addingTimeInterval(30)
            while Date() < deadline {
                if worker.output.contains("reload complete") {
                    answer = try await ChildProcess.run(Paths.celerity, ["call", "shout", "hi"] + common)
                    if answer.status == 0 { break }
                }
                try await Task.sleep(for: .milliseconds(200))
            }
            #expect(answer.status == 0, "\(answer.output)\n\(worker.output)")
            #expect(answer.output.contains(#""HI!""#), "\(answer.output)")
            #expect(await worker.stop(grace: 20) == 0)
        }
    }
}
