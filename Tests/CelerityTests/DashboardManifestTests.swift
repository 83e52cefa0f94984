import Celerity
import Foundation
import RedisClient
import Testing

extension Integration {
    /// The dashboard reads tasks.yaml for looking, not running (`Manifest.load(checkPrograms:
    /// false)`): plugin programs, scripts, `cwd` and `plugin_dirs` folders that are not on its
    /// machine do not stop it, and it starts no plugin; `celerity check` and `celerity worker`
    /// still refuse the same manifest; a YAML or type error still stops it, with file:line.
    @Suite(.timeLimit(.minutes(2)))
    struct DashboardManifestTests {
        static func write(_ text: String) throws -> String {
            let dir = NSTemporaryDirectory() + "celerity-dashmanifest-\(UUID().uuidString.prefix(8))"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try text.write(toFile: dir + "/tasks.yaml", atomically: true, encoding: .utf8)
            return dir + "/tasks.yaml"
        }

        /// A plugin whose program, script and working directory exist on the workers only.
        static let elsewhere = """
        tasks:
          a.add: {queue: adds, builtin: add}
          remote.work:
            queue: remote
            plugin: [/opt/celerity-nowhere/bin/python3, /opt/celerity-nowhere/work.py]
            cwd: /opt/celerity-nowhere
            mode: persistent
            rate_limit: 5/s
        schedules:
          nightly: {task: remote.work, cron: "0 3 * * *"}
        """

        /// plugin_dirs whose folder is elsewhere: a task that relies on it for its handler, and a
        /// schedule and a workflow of a task only a plugin there describes.
        static let dropIns = """
        plugin_dirs: [{path: /opt/celerity-nowhere/plugins, queue: dropped}]
        tasks:
          listed.one: {queue: listed, time_limit: 30}
          queue.theirs: {time_limit: 10}
        schedules:
          hourly: {task: described.only, every: 1h}
        workflows:
          both: {chain: [listed.one, described.only]}
        """

        @Test func theLoaderOptionChecksEverythingButTheFilesOfPlugins() throws {
            let path = try Self.write(Self.elsewhere)
            // The default is unchanged: what is missing is named, with file:line (the cwd first,
            // then, with a cwd that exists, the program).
            #expect(throws: ManifestError.self) { try Manifest.load(path: path) }
            do { _ = try Manifest.load(path: path) } catch {
                #expect(error.description.contains("tasks.yaml:6:") && error.description.contains("cwd '/opt/celerity-nowhere' is not a directory"), "\(error)")
            }
            let here = try Self.write(Self.elsewhere.replacingOccurrences(of: "cwd: /opt/celerity-nowhere", with: "cwd: /tmp"))
            do { _ = try Manifest.load(path: here); Issue.record("accepted a missing program") } catch {
                #expect(error.description.contains("tasks.yaml:5:") && error.description.contains("'/opt/celerity-nowhere/bin/python3'") && error.description.contains("not found"), "\(error)")
            }
            let m = try Manifest.load(path: path, checkPrograms: false)
            #expect(m.queues == ["adds", "remote"])
            #expect(m.schedules.map(\.name) == ["nightly"] && m.schedules.first?.queue == "remote")
            let spec = try #require(m.tasks["remote.work"])
            #expect(spec.rateLimit?.perSecond == 5)
            guard case let .plugin(p) = spec.handler else { Issue.record("not a plugin: \(spec.handler)"); return }
            #expect(p.argv == ["/opt/celerity-nowhere/bin/python3", "/opt/celerity-nowhere/work.py"] && p.executable == "/opt/celerity-nowhere/bin/python3")

            let drops = try Self.write(Self.dropIns)
            do { _ = try Manifest.load(path: drops) } catch {
                #expect(error.description.contains("plugin folder") && error.description.contains("not a directory"), "\(error)")
            }
            let d = try Manifest.load(path: drops, checkPrograms: false)
            // queue.theirs: its queue is its plugin's, unknown here (not "celery"): left out.
            #expect(d.queues == ["listed"] && d.tasks["listed.one"]?.timeLimit == 30 && d.tasks["queue.theirs"] == nil)
            #expect(d.schedules.map(\.task) == ["described.only"] && d.workflows["both"] != nil)
            #expect(d.discovery.plugins == 0)

            // What the option does not excuse: syntax, types, unknown keys, with file:line.
            for (text, wanted) in [
                ("tasks:\n  a.add: {queue: adds, builtin: add\n", "YAML syntax"),
                ("tasks:\n  a.add: {queue: adds, builtin: add, time_limit: soon}\n", "tasks.yaml:2:"),
                ("tasks:\n  a.add: {queue: adds, plugin: [/nowhere/x], retries: -1}\n", "retries must be ≥ 0"),
                ("tasks:\n  a.add: {queue: adds, plugin: [/nowhere/x], colour: blue}\n", "unknown key 'colour'"),
                ("tasks:\n  a.add: {queue: adds}\n", "missing a handler"),
                ("plugin_dirs: [p]\ntasks:\n  a.add: {time_limit: never}\n", "time_limit must be a number"),
            ] {
                let bad = try Self.write(text)
                do {
                    _ = try Manifest.load(path: bad, checkPrograms: false)
                    Issue.record("accepted: \(text)")
                } catch {
                    #expect(error.description.contains(wanted) && error.description.contains("tasks.yaml:"), "\(text): \(error)")
                }
            }
        }

        @Test func theDashboardServesAManifestWhosePluginsAreElsewhereAndCheckAndWorkerRefuseIt() async throws {
            let redis = try await RedisServer.start()
            let broker = redis.url(db: 0)
            var started: [DashboardProcess] = []
            do {
                for text in [Self.elsewhere, Self.dropIns] {
                    let path = try Self.write(text)
                    let d = try await DashboardProcess.start(broker: broker, manifest: path)
                    started.append(d)
                    for page in ["/", "/schedules", "/api/overview", "/api/schedules", "/metrics"] {
                        let r = try await HTTP.get(d.base + page)
                        #expect(r.status == 200, "\(page): \(r.status) \(r.text.prefix(500))")
                    }
                    let queues = try Inspector.Snapshot(json: try await HTTP.get(d.base + "/api/overview").body).queues.map(\.name)
                    let schedules = try await HTTP.get(d.base + "/api/schedules").json().arrayValue?.compactMap { $0["name"]?.stringValue }
                    if text == Self.elsewhere {
                        #expect(queues == ["adds", "remote"])
                        #expect(schedules == ["nightly"])
                    } else {
                        #expect(queues == ["listed"])
                        #expect(schedules == ["hourly"])
                    }

                    // The same file is refused where tasks run: check and worker, exit 2, naming what is missing.
                    let check = try await ChildProcess.run(Paths.celerity, ["check", path])
                    #expect(check.status == 2 && check.output.contains("/opt/celerity-nowhere"), "\(check.output)")
                    let worker = try await ChildProcess.run(Paths.celerity, ["worker", "-Q", "adds", "--manifest", path, "--broker", broker])
                    #expect(worker.status == 2 && worker.output.contains("/opt/celerity-nowhere"), "\(worker.output)")
                }

                // A manifest that is wrong, not elsewhere: the dashboard refuses it, with file:line.
                let bad = try Self.write("tasks:\n  a.add: {queue: adds, builtin: add, time_limit: soon}\n")
                let r = try await ChildProcess.run(Paths.dashboard, ["--port", String(RedisServer.freePort()), "--broker", broker, "--manifest", bad],
                                                   environment: DashboardProcess.noCredentials)
                #expect(r.status == 2 && r.output.contains("tasks.yaml:2:") && r.output.contains("time_limit must be a number"), "\(r.output)")
            } catch {
                for d in started { await d.child.stop() }
                await redis.stop()
                throw error
            }
            for d in started { #expect(await d.child.stop() == 0, "\(d.child.output.suffix(1000))") }
            await redis.stop()
        }
    }
}
