import Testing
import Foundation
@testable import Celerity
import CelerityBuiltins

@Suite struct ManifestTests: ManifestTesting {
    // MARK: the repository's tasks.yaml

    @Test func repositoryManifestRoutesTutorialTasksToTheirQueues() async throws {
        let path = Self.packageRoot.appendingPathComponent("tasks.yaml").path
        let manifest = try await Self.loadOffPool(path, builtins: Builtins.registry.names)

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

    @Test func repositoryManifestResolvesPluginTasks() async throws {
        let path = Self.packageRoot.appendingPathComponent("tasks.yaml").path
        let manifest = try await Self.loadOffPool(path, builtins: Builtins.registry.names)

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

    @Test func repositoryManifestDeclaresFourWorkerGroups() async throws {
        let path = Self.packageRoot.appendingPathComponent("tasks.yaml").path
        let manifest = try await Self.loadOffPool(path, builtins: Builtins.registry.names)
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

    // MARK: success cases

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
