import Testing
import Foundation
@testable import Celerity
import CelerityBuiltins

@Suite struct ManifestTests {
    /// The package root: this file is <root>/Tests/CelerityTests/ManifestTests.swift.
    private static let packageRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()   // Tests/CelerityTests
        .deletingLastPathComponent()   // Tests
        .deletingLastPathComponent()   // <root>

    /// Runs `body` with a fresh empty directory that is removed afterwards.
    private func withTemporaryDirectory<T>(_ body: (URL) throws -> T) throws -> T {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("celerity-manifest-tests-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        return try body(dir)
    }

    /// Creates a file in `dir` with the given POSIX permissions.
    private func makeFile(_ name: String, in dir: URL, permissions: Int, contents: String = "#!/bin/sh\necho hi\n") -> URL {
        let url = dir.appendingPathComponent(name)
        #expect(FileManager.default.createFile(atPath: url.path, contents: Data(contents.utf8)))
        let status = chmod(url.path, mode_t(permissions))
        #expect(status == 0)
        return url
    }

    /// Parses `text` as t.yaml in `dir` with only the built-in `add` known.
    private func parse(_ text: String, in dir: URL) throws(ManifestError) -> Manifest {
        try Manifest.parse(text, path: "t.yaml", baseDirectory: dir.path, builtins: ["add"])
    }

    /// The error parsing `text` throws, nil if it parses.
    private func parseError(_ text: String, in dir: URL) -> ManifestError? {
        do throws(ManifestError) {
            _ = try parse(text, in: dir)
            return nil
        } catch {
            return error
        }
    }

    /// Expects parsing `text` to fail at exactly `t.yaml:<position>` with every word of `words` in the description.
    private func expectError(_ text: String, in dir: URL, at position: String, _ words: [String],
                             sourceLocation: SourceLocation = #_sourceLocation) {
        guard let error = parseError(text, in: dir) else {
            Issue.record("expected an error at t.yaml:\(position), but the manifest parsed", sourceLocation: sourceLocation)
            return
        }
        let description = error.description
        #expect(description.hasPrefix("t.yaml:\(position): error: "), "wrong location: \(description)", sourceLocation: sourceLocation)
        for word in words {
            #expect(description.contains(word), "'\(word)' missing from: \(description)", sourceLocation: sourceLocation)
        }
    }

    private func pluginSpec(_ task: TaskSpec?) -> PluginSpec? {
        if case let .plugin(spec)? = task?.handler { return spec }
        return nil
    }

    private func resolved(_ path: String) -> String {
        URL(fileURLWithPath: path).resolvingSymlinksInPath().path
    }

    // MARK: the repository's tasks.yaml

    @Test func repositoryManifestRoutesTutorialTasksToTheirQueues() throws {
        let path = Self.packageRoot.appendingPathComponent("tasks.yaml").path
        let manifest = try Manifest.load(path: path, builtins: Builtins.registry.names)

        #expect(manifest.path == path)
        #expect(manifest.broker == "redis://localhost:6379/0")
        #expect(manifest.resultBackend == ResultBackendConfig(kind: .sameAsBroker, expires: 86400))

        let expected: [(task: String, queue: String, builtin: String, timeLimit: Double)] = [
            ("add_module.tasks.add", "add", "add", 300),
            ("factorial_module.tasks.factorial", "factorial", "factorial", 120),
            ("mat_mul_module.tasks.mat_mul", "mat_mul", "mat_mul", 120),
        ]
        for e in expected {
            let task = try #require(manifest.tasks[e.task], "\(e.task) missing")
            #expect(task.name == e.task)
            #expect(task.queue == e.queue)
            #expect(manifest.queue(for: e.task) == e.queue)
            #expect(task.handler == .builtin(e.builtin))
            #expect(task.timeLimit == e.timeLimit)
            #expect(task.storeResult)
        }
        #expect(Array(manifest.taskOrder.prefix(3)) == expected.map { $0.task })
        #expect(manifest.queue(for: "not.in.the.manifest") == "celery")
        #expect(Array(manifest.queues.prefix(3)) == ["add", "factorial", "mat_mul"])
    }

    @Test func repositoryManifestResolvesPluginTasks() throws {
        let path = Self.packageRoot.appendingPathComponent("tasks.yaml").path
        let manifest = try Manifest.load(path: path, builtins: Builtins.registry.names)

        let plugins = manifest.taskOrder.compactMap { name in pluginSpec(manifest.tasks[name]).map { (name, $0) } }
        #expect(!plugins.isEmpty)
        for (name, spec) in plugins {
            #expect(spec.executable.hasPrefix("/"), "\(name): \(spec.executable)")
            #expect(FileManager.default.isExecutableFile(atPath: spec.executable), "\(name): \(spec.executable)")
            #expect(resolved(spec.workingDirectory) == resolved(Self.packageRoot.path), "\(name)")
            #expect(manifest.tasks[name]?.queue == "plugins")
        }

        let pyAdd = try #require(pluginSpec(manifest.tasks["plugins.py_add"]))
        #expect(pyAdd.argv == ["python3", "plugins/py_tasks.py"])
        #expect(URL(fileURLWithPath: pyAdd.executable).lastPathComponent == "python3")
        #expect(manifest.tasks["plugins.py_add"]?.timeLimit == 300)   // defaults.time_limit

        let sleepTask = try #require(manifest.tasks["plugins.py_sleep"])
        #expect(sleepTask.timeLimit == 5)
        #expect(pluginSpec(sleepTask)?.gracePeriod == 1)

        // Given as one string with a relative path: resolved against the manifest's folder.
        let upper = try #require(pluginSpec(manifest.tasks["plugins.sh_upper"]))
        #expect(upper.argv == ["plugins/sh_upper.sh"])
        #expect(resolved(upper.executable) == resolved(Self.packageRoot.appendingPathComponent("plugins/sh_upper.sh").path))
    }

    @Test func repositoryManifestDeclaresFourWorkerGroups() throws {
        let path = Self.packageRoot.appendingPathComponent("tasks.yaml").path
        let manifest = try Manifest.load(path: path, builtins: Builtins.registry.names)
        #expect(manifest.workers == [
            WorkerGroup(name: "add", queues: ["add"], concurrency: 4),
            WorkerGroup(name: "factorial", queues: ["factorial"], concurrency: 2),
            WorkerGroup(name: "mat_mul", queues: ["mat_mul"], concurrency: 2),
            WorkerGroup(name: "plugins", queues: ["plugins"], concurrency: 4),
        ])
    }

    @Test func loadingAMissingFileFails() {
        let path = Self.packageRoot.appendingPathComponent("no-such-manifest-\(UUID().uuidString).yaml").path
        #expect(throws: ManifestError.self) { try Manifest.load(path: path) }
    }

    // MARK: errors

    @Test func yamlSyntaxErrorNamesLineAndColumn() throws {
        try withTemporaryDirectory { dir in
            // An unclosed flow sequence: libyaml reports it where the input ends.
            expectError("tasks: [", in: dir, at: "2:1", ["YAML syntax"])
            expectError("broker: redis://localhost:6379/0\ntasks: [\n", in: dir, at: "3:1", ["YAML syntax"])
            expectError("tasks:\n  a:\n    queue: add: x\n    builtin: add\n", in: dir, at: "3:15", ["YAML syntax", "mapping values"])
        }
    }

    @Test func unknownTopLevelKey() throws {
        try withTemporaryDirectory { dir in
            expectError("tasks:\n  a:\n    builtin: add\nbrokr: redis://localhost\n", in: dir, at: "4:1",
                        ["unknown key 'brokr'", "the manifest", "broker"])
        }
    }

    @Test func unknownKeyInATask() throws {
        try withTemporaryDirectory { dir in
            expectError("tasks:\n  a:\n    queu: add\n    builtin: add\n", in: dir, at: "3:5",
                        ["unknown key 'queu'", "task 'a'", "queue"])
        }
    }

    @Test func queueGivenAListIsAWrongType() throws {
        try withTemporaryDirectory { dir in
            expectError("tasks:\n  a:\n    queue: [add, more]\n    builtin: add\n", in: dir, at: "3:12",
                        ["a.queue", "must be a string", "a list"])
        }
    }

    @Test func timeLimitGivenAStringIsAWrongType() throws {
        try withTemporaryDirectory { dir in
            expectError("tasks:\n  a:\n    builtin: add\n    time_limit: \"abc\"\n", in: dir, at: "4:17",
                        ["a.time_limit", "must be a number", "abc"])
        }
    }

    @Test func taskWithoutHandler() throws {
        try withTemporaryDirectory { dir in
            expectError("tasks:\n  a:\n    queue: add\n", in: dir, at: "3:5",
                        ["task 'a'", "missing a handler", "builtin", "plugin"])
        }
    }

    @Test func taskWithBothBuiltinAndPlugin() throws {
        try withTemporaryDirectory { dir in
            expectError("tasks:\n  a:\n    builtin: add\n    plugin: [python3, x.py]\n", in: dir, at: "4:5",
                        ["task 'a'", "both 'builtin' and 'plugin'"])
        }
    }

    @Test func unknownBuiltin() throws {
        try withTemporaryDirectory { dir in
            expectError("tasks:\n  a:\n    builtin: nope\n", in: dir, at: "3:14",
                        ["unknown built-in 'nope'", "task 'a'", "add"])
        }
    }

    @Test func pluginProgramNotFound() throws {
        try withTemporaryDirectory { dir in
            expectError("tasks:\n  a:\n    plugin: [./missing-program, --flag]\n", in: dir, at: "3:13",
                        ["plugin program './missing-program'", "task 'a'", "not found", dir.path])
        }
    }

    @Test func pluginProgramNotExecutable() throws {
        try withTemporaryDirectory { dir in
            let file = makeFile("notexec.sh", in: dir, permissions: 0o644)
            #expect(!FileManager.default.isExecutableFile(atPath: file.path))
            expectError("tasks:\n  a:\n    plugin: ./notexec.sh\n", in: dir, at: "3:13",
                        ["plugin program './notexec.sh'", "not executable", "chmod +x"])
        }
    }

    /// A directory has execute bits, so "is it executable?" alone lets it through; it
    /// would only fail when a task runs.
    @Test func pluginProgramThatIsADirectory() throws {
        try withTemporaryDirectory { dir in
            try FileManager.default.createDirectory(at: dir.appendingPathComponent("plugdir"), withIntermediateDirectories: true)
            expectError("tasks:\n  a:\n    plugin: [./plugdir, --flag]\n", in: dir, at: "3:13",
                        ["plugin program './plugdir'", "task 'a'", "is a directory", dir.appendingPathComponent("plugdir").path])
            expectError("tasks:\n  a:\n    plugin: \(dir.path)\n", in: dir, at: "3:13",
                        ["plugin program '\(dir.path)'", "is a directory"])
        }
    }

    @Test func pluginScriptArgumentThatIsADirectory() throws {
        try withTemporaryDirectory { dir in
            try FileManager.default.createDirectory(at: dir.appendingPathComponent("tasks.py"), withIntermediateDirectories: true)
            expectError("tasks:\n  a:\n    plugin: [python3, tasks.py]\n", in: dir, at: "3:13",
                        ["plugin script 'tasks.py'", "task 'a'", "is a directory"])
        }
    }

    @Test func pluginScriptArgumentMissing() throws {
        try withTemporaryDirectory { dir in
            expectError("tasks:\n  a:\n    plugin: [python3, nope.py]\n", in: dir, at: "3:13",
                        ["plugin script 'nope.py'", "task 'a'", "not found", dir.appendingPathComponent("nope.py").path])
        }
    }

    @Test func workerGroupWithoutQueues() throws {
        try withTemporaryDirectory { dir in
            expectError("tasks:\n  a:\n    builtin: add\nworkers:\n  g:\n    concurrency: 2\n", in: dir, at: "6:5",
                        ["worker group 'g'", "missing", "queues"])
        }
    }

    @Test func workerGroupWithZeroConcurrency() throws {
        try withTemporaryDirectory { dir in
            expectError("tasks:\n  a:\n    builtin: add\nworkers:\n  g:\n    queues: [add]\n    concurrency: 0\n", in: dir, at: "7:18",
                        ["workers.g.concurrency", "≥ 1", "0"])
        }
    }

    @Test func duplicateKeyIsReportedWhereItIs() throws {
        try withTemporaryDirectory { dir in
            let text = "tasks:\n  a:\n    builtin: add\n  a:\n    builtin: add\n"
            let error = try #require(parseError(text, in: dir))
            let description = error.description
            // Either occurrence of the key is an acceptable place to point at.
            #expect(description.hasPrefix("t.yaml:2:3: error: ") || description.hasPrefix("t.yaml:4:3: error: "),
                    "wrong location: \(description)")
            #expect(description.contains("duplicate"), "\(description)")
            #expect(description.contains("'a'"), "\(description)")
            // One diagnostic, not the whole document echoed back.
            #expect(!description.contains("builtin: add"), "\(description)")
        }
    }

    @Test func resultBackendWithUnknownScheme() throws {
        try withTemporaryDirectory { dir in
            expectError("result_backend: mongodb://localhost/x\ntasks:\n  a:\n    builtin: add\n", in: dir, at: "1:17",
                        ["unknown result backend", "mongodb://localhost/x"])
        }
    }

    @Test func persistentModeTakesItsOptionsAndTheyNeedIt() throws {
        try withTemporaryDirectory { dir in
            let m = try parse("tasks:\n  a:\n    plugin: /bin/sh\n    mode: persistent\n    processes: 3\n    max_calls: 100\n    max_rss_mb: 64\n", in: dir)
            guard case let .plugin(p)? = m.tasks["a"]?.handler, case let .persistent(o) = p.mode else {
                Issue.record("not a persistent plugin: \(String(describing: m.tasks["a"]))")
                return
            }
            #expect(o.processes == 3 && o.maxCalls == 100 && o.maxRSSBytes == 64 << 20)
            expectError("tasks:\n  a:\n    plugin: /bin/sh\n    processes: 2\n", in: dir, at: "4:5",
                        ["'processes' applies to persistent plugins only", "mode: persistent"])
            expectError("tasks:\n  a:\n    plugin: /bin/sh\n    mode: sometimes\n", in: dir, at: "4:11", ["a.mode must be 'oneshot' or 'persistent'"])
        }
    }

    @Test func manifestWithoutTasksFails() throws {
        try withTemporaryDirectory { dir in
            let error = try #require(parseError("broker: redis://localhost\n", in: dir))
            #expect(error.description.contains("tasks"))
            #expect(parseError("", in: dir) != nil)
        }
    }

    // MARK: success cases

    @Test func rpcResultBackend() throws {
        try withTemporaryDirectory { dir in
            let manifest = try parse("result_backend: \"rpc://\"\ntasks:\n  a:\n    builtin: add\n", in: dir)
            let backend = try #require(manifest.resultBackend)
            #expect(backend.kind == .rpc)
            #expect(backend.expires == 86400)
            #expect(backend.resolved(broker: "redis://other:6379/3") == backend)
        }
    }

    @Test func resultBackendMappingWithoutURLUsesTheBroker() throws {
        try withTemporaryDirectory { dir in
            let manifest = try parse("result_backend:\n  expires: 600\ntasks:\n  a:\n    builtin: add\n", in: dir)
            let backend = try #require(manifest.resultBackend)
            #expect(backend.kind == .sameAsBroker)
            #expect(backend.expires == 600)
            let broker = "redis://broker.example:6379/2"
            #expect(backend.resolved(broker: broker) == ResultBackendConfig(kind: .redis(broker), expires: 600))

            let withURL = try parse("result_backend:\n  url: redis://results:6379/5\n  expires: 0\ntasks:\n  a:\n    builtin: add\n", in: dir)
            #expect(withURL.resultBackend == ResultBackendConfig(kind: .redis("redis://results:6379/5"), expires: 0))
            #expect(withURL.resultBackend?.resolved(broker: broker).kind == .redis("redis://results:6379/5"))
        }
    }

    @Test func resultBackendParseAcceptsKnownForms() throws {
        #expect(try ResultBackendConfig.parse("none").kind == ResultBackendKind.none)
        #expect(try ResultBackendConfig.parse("broker").kind == .sameAsBroker)
        #expect(try ResultBackendConfig.parse("rpc://").kind == .rpc)
        #expect(try ResultBackendConfig.parse("redis://h:1/0", expires: 5) == ResultBackendConfig(kind: .redis("redis://h:1/0"), expires: 5))
        #expect(throws: ManifestError.self) { try ResultBackendConfig.parse("amqp://guest@localhost//") }
    }

    @Test func defaultTimeLimitAppliesUnlessTheTaskOverridesIt() throws {
        try withTemporaryDirectory { dir in
            // `defaults` after `tasks` on purpose: order in the file must not matter.
            let text = """
                tasks:
                  a:
                    builtin: add
                  b:
                    queue: bq
                    builtin: add
                    time_limit: 2.5
                  c:
                    builtin: add
                    ignore_result: true
                defaults:
                  time_limit: 30
                """
            let manifest = try parse(text, in: dir)
            #expect(manifest.taskOrder == ["a", "b", "c"])
            #expect(manifest.tasks["a"]?.timeLimit == 30)
            #expect(manifest.tasks["a"]?.queue == "celery")
            #expect(manifest.tasks["b"]?.timeLimit == 2.5)
            #expect(manifest.tasks["b"]?.queue == "bq")
            #expect(manifest.tasks["c"]?.timeLimit == 30)
            #expect(manifest.tasks["c"]?.storeResult == false)
            #expect(manifest.tasks["a"]?.storeResult == true)

            let noDefaults = try parse("tasks:\n  a:\n    builtin: add\n", in: dir)
            #expect(noDefaults.tasks["a"]?.timeLimit == nil)
            #expect(noDefaults.resultBackend == nil)
            #expect(noDefaults.workers.isEmpty)
        }
    }

    @Test func pluginGivenAsOneStringResolvesAnAbsoluteExecutable() throws {
        try withTemporaryDirectory { dir in
            let tool = makeFile("tool.sh", in: dir, permissions: 0o755)
            let text = "tasks:\n  p:\n    plugin: ./tool.sh\n  q:\n    plugin: sh\n"
            let manifest = try parse(text, in: dir)

            let p = try #require(pluginSpec(manifest.tasks["p"]))
            #expect(p.argv == ["./tool.sh"])
            #expect(p.executable.hasPrefix("/"))
            #expect(resolved(p.executable) == resolved(tool.path))
            #expect(p.workingDirectory == dir.path)

            // A bare name is looked up on PATH.
            let q = try #require(pluginSpec(manifest.tasks["q"]))
            #expect(q.argv == ["sh"])
            #expect(q.executable.hasPrefix("/"))
            #expect(URL(fileURLWithPath: q.executable).lastPathComponent == "sh")
            #expect(FileManager.default.isExecutableFile(atPath: q.executable))
        }
    }
}
