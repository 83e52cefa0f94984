import Celerity
import Foundation
import RedisClient
import Synchronization
import Testing

extension Integration {
    /// Hot reload under load (docs/plugins.md, "Hot reload"): a real `celerity worker --reload`
    /// (no -Q: it consumes every queue of its manifest) gets 10,000 calls while plugins are
    /// added to and removed from its plugin folder (`plugin_dirs`) and changed in place,
    /// through SIGHUP and through its file watcher, with a bad
    /// manifest in between. Every plugin appends the task id to a log file, and answers with
    /// its version and the time its process loaded.
    @Suite(.timeLimit(.minutes(3)))
    struct HotReloadTests {
        /// A plugin that answers in both modes, `version` in its source; with `describes`, it
        /// answers `describe` too (a task of that name, on that queue and in that mode).
        static func plugin(tag: String, version: Int, log: String, describes: (task: String, queue: String, persistent: Bool)? = nil) -> String {
            let description = describes.map { d in
                #"{"protocol": 1, "name": "\#(tag)", "tasks": {"\#(d.task)": {"queue": "\#(d.queue)", "mode": "\#(d.persistent ? "persistent" : "oneshot")"}}}"#
            } ?? ""
            return """
            import time
            LOADED = time.time()
            import json, os, sys
            TAG = \(PythonLiteral.string(tag))
            VERSION = \(version)
            LOG = \(PythonLiteral.string(log))

            def answer(req):
                fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                os.write(fd, ("%s %s %d\\n" % (req["id"], TAG, VERSION)).encode())
                os.close(fd)
                return {"v": VERSION, "loaded": LOADED, "at": time.time(), "pid": os.getpid()}

            def send(m):
                sys.stdout.write(json.dumps(m) + "\\n")
                sys.stdout.flush()

            if os.environ.get("CELERITY_MODE") == "describe":
                sys.stdin.read()
                sys.stdout.write(\(PythonLiteral.string(description)))
            elif os.environ.get("CELERITY_MODE") == "persistent":
                for line in sys.stdin:
                    m = json.loads(line)
                    method = m.get("method")
                    if method == "initialize":
                        send({"jsonrpc": "2.0", "id": m["id"], "result": {"protocol": 1, "name": TAG, "max_inflight": 1}})
                    elif method == "task/run":
                        send({"jsonrpc": "2.0", "id": m["id"], "result": answer(m["params"])})
                    elif method == "shutdown":
                        send({"jsonrpc": "2.0", "id": m["id"], "result": {}})
                    elif method == "exit":
                        break
            else:
                req = json.load(sys.stdin)
                send({"result": answer(req)})
            """
        }

        struct Swap: Sendable {
            var before: Double
            var after: Double
        }

        /// The files, the manifest and the swap timeline of one run.
        final class Scene: Sendable {
            let dir: String
            let log: String
            let q: String
            /// (plugin file, version) -> when its file was renamed into place.
            let swaps = Mutex<[String: [Int: Swap]]>([:])

            init() throws {
                q = "hr" + UUID().uuidString.prefix(8).lowercased()
                dir = NSTemporaryDirectory() + "celerity-\(q)"
                try FileManager.default.createDirectory(atPath: dir + "/plugins", withIntermediateDirectories: true)
                log = dir + "/calls.log"
                _ = FileManager.default.createFile(atPath: log, contents: nil)
            }

            /// The plugins dropped into the plugin folder (found by discovery), with what they describe.
            var dropIns: [String: (task: String, queue: String, persistent: Bool)] {
                ["added": ("rl.added", q + "-new", true), "gone": ("rl.gone", q, false)]
            }

            /// Writes version `v` of plugin `name` (a new file renamed over the old one); the
            /// drop-ins go to the plugin folder.
            func put(_ name: String, _ v: Int) throws {
                let folder = dropIns[name] == nil ? dir : dir + "/plugins"
                let tmp = folder + "/.\(name).tmp"
                try HotReloadTests.plugin(tag: name, version: v, log: log, describes: dropIns[name]).write(toFile: tmp, atomically: false, encoding: .utf8)
                let before = Date().timeIntervalSince1970
                guard rename(tmp, folder + "/\(name).py") == 0 else { throw TestFailure("rename \(name): \(errno)") }
                let after = Date().timeIntervalSince1970
                swaps.withLock { $0[name, default: [:]][v] = Swap(before: before, after: after) }
            }

            /// Removes a drop-in from the plugin folder.
            func remove(_ name: String) throws { try FileManager.default.removeItem(atPath: dir + "/plugins/\(name).py") }

            /// rl.pers and rl.one are entries of tasks.yaml; rl.added and rl.gone come from the
            /// plugin folder; rl.old is an entry until `removed`.
            func manifest(removed: Bool, broken: Bool = false) throws {
                var yaml = "plugin_dirs: [plugins]\ntasks:\n"
                yaml += """
                  rl.pers:
                    queue: \(q)
                    plugin: [python3, \(dir)/pers.py]
                    mode: persistent
                    processes: 2
                  rl.one:
                    queue: \(q)
                    plugin: [python3, \(dir)/one.py]

                """
                if !removed {
                    yaml += """
                      rl.old:
                        queue: \(q)-old
                        builtin: add

                    """
                }
                if broken { yaml += "  rl.broken: [this is not a task\n" }
                let tmp = dir + "/.tasks.yaml.tmp"
                try yaml.write(toFile: tmp, atomically: false, encoding: .utf8)
                guard rename(tmp, dir + "/tasks.yaml") == 0 else { throw TestFailure("rename tasks.yaml: \(errno)") }
            }
        }

        @Test func tenThousandCallsWhilePluginsAreAddedChangedAndRemoved() async throws {
            let redis = try await RedisServer.start()
            defer { Task { await redis.stop() } }
            let s = try Scene()
            let q = s.q
            for name in ["pers", "one", "gone"] { try s.put(name, 1) }
            try s.manifest(removed: false)
            let worker = try ChildProcess(name: "worker-\(q)", executable: Paths.celerity, arguments: [
                "worker", "--reload", "-n", "\(q)@test", "-c", "4", "-l", "info",
                "--manifest", s.dir + "/tasks.yaml", "--broker", redis.url, "--result-backend", redis.url,
            ])
            let started = Date()
            func count(_ needle: String) -> Int { worker.output.components(separatedBy: needle).count - 1 }
            #expect(try await eventually(seconds: 20) { count("worker ready") == 1 }, "\(worker.output)")
            let client = try CelerityClient(broker: redis.url, resultBackend: redis.url)

            // The sender: 25 rounds of 400 calls, one every 100 ms (10,000 in all), faster than
            // the worker drains them: the reloads come at points of its progress.
            // rl.added goes to a queue no worker consumes until reload 1 adds it; rl.gone is
            // removed by reload 2 with calls of it still queued; rl.old is sent in the first
            // rounds only (its queue is dropped by reload 2).
            let sent = Mutex<[(id: String, task: String)]>([])
            let sender = Task {
                for round in 0..<25 {
                    var batch: [(String, String)] = []
                    for _ in 0..<318 { batch.append(("rl.pers", q)) }
                    for _ in 0..<30 { batch.append(("rl.one", q)) }
                    for _ in 0..<40 { batch.append(("rl.added", q + "-new")) }
                    for _ in 0..<8 { batch.append(("rl.gone", q)) }
                    if round < 5 { for _ in 0..<20 { batch.append(("rl.old", q + "-old")) } }
                    batch.shuffle()
                    var messages: [TaskMessage] = []
                    for (task, queue) in batch {
                        let args: [JSONValue] = task == "rl.old" ? [1, 2] : []
                        messages.append(client.message(task, args: args, options: .init(queue: queue)))
                    }
                    _ = try await client.sendMany(messages)
                    sent.withLock { $0 += messages.map { ($0.id, $0.task) } }
                    try await Task.sleep(for: .milliseconds(100))
                }
            }

            // The reloads, each after the one before completed.
            var done: [Double] = []   // when each reload was seen complete
            func waitReload(_ n: Int) async throws {
                #expect(try await eventually(seconds: 20) { count("reload complete") >= n }, "reload \(n) did not complete: \(worker.output.suffix(3000))")
                done.append(Date().timeIntervalSince1970)
            }
            /// Waits until the plugins have run `n` calls.
            func progress(_ n: Int) async throws {
                #expect(try await eventually(seconds: 30) {
                    ((try? String(contentsOfFile: s.log, encoding: .utf8))?.utf8.count { $0 == UInt8(ascii: "\n") } ?? 0) >= n
                }, "the plugins did not reach \(n) calls")
            }
            try await progress(1500)
            // 1 (SIGHUP): added.py is dropped into the plugin folder (rl.added and its queue
            // come); the plugins of rl.pers and rl.one change.
            try s.put("pers", 2); try s.put("one", 2); try s.put("added", 1)
            worker.signal(SIGHUP)
            try await waitReload(1)
            // rl.old's calls (all sent by now) are answered before its queue is dropped.
            while sent.withLock({ $0.filter { $0.task == "rl.old" }.count }) < 100 { try await Task.sleep(for: .milliseconds(50)) }
            for (id, _) in sent.withLock({ $0.filter { $0.task == "rl.old" } }) { _ = try await client.waitForResult(id, timeout: .seconds(20)) }
            try await progress(2500)
            // 2 (the file watcher, no signal): gone.py is removed from the folder (calls of
            // rl.gone still queued) and rl.old from tasks.yaml; one.py and added.py change.
            try s.put("one", 3); try s.put("added", 2); try s.remove("gone")
            try s.manifest(removed: true)
            try await waitReload(2)
            try await progress(6000)
            // 3 (SIGHUP): rl.pers changes again.
            try s.put("pers", 3)
            worker.signal(SIGHUP)
            try await waitReload(3)
            try await progress(8000)
            // A manifest that does not load: logged, the tasks loaded before are still served.
            try s.manifest(removed: true, broken: true)
            worker.signal(SIGHUP)
            #expect(try await eventually(seconds: 10) { count("reload failed") >= 1 })
            // Back as it was: the watcher reloads it; nothing changed, so no pool restarts.
            try s.manifest(removed: true)
            try await waitReload(4)
            try await sender.value
            let elapsed = Date().timeIntervalSince(started)

            // Every call answered.
            let calls = sent.withLock { $0 }
            #expect(calls.count == 10_000)
            var answers: [String: JSONValue] = [:]
            var notRegistered: [String: String] = [:]
            var other: [String] = []
            // A one-shot plugin reads its file at each call: calls of rl.gone that started
            // between the removal of gone.py and the reload that followed fail to start it
            // (PluginExitError, python3's "No such file"); an answer too, and one that says why.
            var fileGone = 0
            for (id, task) in calls {
                let meta = try await client.waitForResult(id, timeout: .seconds(60))
                let text = meta.result.serialized()
                if meta.state == .success {
                    answers[id] = meta.result
                } else if text.contains("NotRegistered") {
                    notRegistered[id] = task
                } else if task == "rl.gone", text.contains("PluginExitError"), text.contains("No such file") {
                    fileGone += 1
                } else {
                    other.append("\(task) \(id): \(meta.state) \(text)")
                }
            }
            #expect(other.isEmpty, "\(other.prefix(5))")
            // NotRegistered only for rl.gone, and only for calls not run before it was removed.
            #expect(notRegistered.values.allSatisfy { $0 == "rl.gone" })
            #expect(!notRegistered.isEmpty, "no call of rl.gone was still queued when it was removed")
            #expect(answers.count + notRegistered.count + fileGone == 10_000)

            // Run once each: the plugins' log names every answered id exactly once, and no other.
            let lines = try String(contentsOfFile: s.log, encoding: .utf8).split(separator: "\n")
            var runs: [String: Int] = [:]
            for line in lines { runs[String(line.split(separator: " ")[0]), default: 0] += 1 }
            let twice = runs.filter { $0.value > 1 }
            #expect(twice.isEmpty, "run more than once: \(twice.prefix(5))")
            #expect(Set(runs.keys) == Set(answers.keys).subtracting(calls.filter { $0.task == "rl.old" }.map(\.id)))

            // Answered by the version in place when it started.
            let swaps = s.swaps.withLock { $0 }
            let taskOf = Dictionary(uniqueKeysWithValues: calls.map { ($0.id, $0.task) })
            let file = ["rl.pers": "pers", "rl.one": "one", "rl.gone": "gone", "rl.added": "added"]
            // The reload that retired each persistent version: pers 1 by reload 1, pers 2 by 3,
            // added 1 by 2.
            let retiredBy = ["pers": [1: 0, 2: 2], "added": [1: 1]]
            var wrong: [String] = []
            var versions: [String: [Int: Int]] = [:]
            for (id, value) in answers where taskOf[id] != "rl.old" {
                let name = file[taskOf[id]!]!
                guard let v = value["v"]?.intValue, let loaded = value["loaded"]?.doubleValue, let at = value["at"]?.doubleValue else {
                    wrong.append("\(id): \(value.serialized())"); continue
                }
                versions[name, default: [:]][v, default: 0] += 1
                // Its process loaded version v while that file was in place (after its rename
                // began, and before the next version's rename ended, give or take the
                // interpreter's start).
                let mine = swaps[name]![v]!
                if loaded < mine.before { wrong.append("\(name) v\(v) loaded at \(loaded), before its file was in place (\(mine.before))") }
                if let next = swaps[name]![v + 1], loaded > next.after + 0.25 {
                    wrong.append("\(name) v\(v) loaded at \(loaded), after v\(v + 1) replaced it (\(next.after))")
                }
                // A persistent version answers nothing after the reload that retired it completed.
                if let k = retiredBy[name]?[v], at > done[k] {
                    wrong.append("\(name) v\(v) answered \(id) at \(at), after reload \(k + 1) retired it (\(done[k]))")
                }
            }
            #expect(wrong.isEmpty, "\(wrong.count) wrong answers: \(wrong.prefix(5))")
            // Each version served calls (the swaps happened under load).
            #expect(versions["pers"]?.keys.sorted() == [1, 2, 3], "\(versions)")
            #expect(versions["one"]?.keys.sorted() == [1, 2, 3], "\(versions)")
            #expect(versions["added"]?[1] ?? 0 > 0 && versions["added"]?[2] ?? 0 > 0, "\(versions)")

            // What the log says changed.
            let out = worker.output
            #expect(out.contains("tasks_added=rl.added"), "\(out.suffix(4000))")
            #expect(out.contains("tasks_removed=rl.old,rl.gone") || out.contains("tasks_removed=rl.gone,rl.old"), "\(out.suffix(4000))")
            #expect(out.contains("queues_added=\(q)-new"))
            #expect(out.contains("queues_dropped=\(q)-old"))
            // The last reload (the manifest as it was) restarted nothing.
            let last = out.split(separator: "\n").last { $0.contains("manifest reloaded") }.map(String.init) ?? ""
            #expect(last.contains("pools_started= ") && last.contains("pools_retired= "), "\(last)")
            // Celery's `pool_restart` (remote control) reloads as SIGHUP does.
            let replies = try await ControlClient(redis: try Redis(redis.url, label: "test")).broadcast("pool_restart", destination: ["\(q)@test"], timeout: 5)
            #expect(replies.map(\.value) == [.object([JSONMember("ok", "reload started")])], "\(replies)")
            try await waitReload(5)
            #expect(worker.isRunning)
            #expect(await worker.stop(grace: 20) == 0)
            print("hot reload under load: 10,000 calls, 4 reloads and a refused one in \(String(format: "%.1f", elapsed)) s; versions \(versions); NotRegistered \(notRegistered.count); rl.gone calls started after its file was removed, before the reload: \(fileGone)")
        }
    }
}

/// Python literals for generated test plugins.
enum PythonLiteral {
    static func string(_ s: String) -> String {
        "'" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'"
    }
}
