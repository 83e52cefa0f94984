import Testing
import Foundation
@testable import Celerity
import CelerityBuiltins

/// `plugin_dirs`: plugins found in a folder describe their tasks; tasks.yaml overrides them key by
/// key; two plugins claiming one name is an error; a plugin that does not answer is reported.
/// Real plugin processes (python3, sh) in a temporary folder.
@Suite struct DiscoveryTests: ManifestTesting {
    /// A temporary project: tasks.yaml beside a plugins/ folder.
    struct Project {
        let root: URL
        init() throws {
            root = FileManager.default.temporaryDirectory.appendingPathComponent("celerity-discovery-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: root.appendingPathComponent("plugins"), withIntermediateDirectories: true)
        }
        func write(_ relative: String, _ text: String, executable: Bool = false) throws {
            let url = root.appendingPathComponent(relative)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try text.write(to: url, atomically: false, encoding: .utf8)
            if executable { try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: url.path) }
        }
        func load(_ yaml: String) async throws -> Manifest {
            try write("tasks.yaml", yaml)
            return try await DiscoveryTests.loadOffPool(root.appendingPathComponent("tasks.yaml").path, builtins: Builtins.registry.names)
        }
        func remove() { try? FileManager.default.removeItem(at: root) }
    }

    /// A Python plugin that answers describe with `document` (a JSON text) and otherwise echoes
    /// its request's args.
    static func describing(_ document: String) -> String {
        """
        import json, os, sys
        request = sys.stdin.read()
        if os.environ.get("CELERITY_MODE") == "describe":
            assert json.loads(request) == {"method": "describe", "protocol": 1}, request
            sys.stdout.write('''\(document)''')
        else:
            print(json.dumps({"result": json.loads(request)["args"]}))
        """
    }

    @Test func aPluginDroppedInAFolderIsATaskWithoutAnEntry() async throws {
        let p = try Project()
        defer { p.remove() }
        try p.write("plugins/greet.py", Self.describing(#"{"protocol": 1, "name": "greet", "tasks": {"plugins.greet": {"time_limit": 7, "retries": 2}}}"#))
        let m = try await p.load("plugin_dirs: [plugins]\n")
        let t = try #require(m.tasks["plugins.greet"])
        #expect(t.queue == "plugins")   // the folder's name: no queue suggested
        #expect(t.timeLimit == 7)
        #expect(t.retries == 2)
        #expect(t.discoveredFrom == "plugins/greet.py")
        guard case let .plugin(spec) = t.handler else { Issue.record("not a plugin: \(t.handler)"); return }
        #expect(spec.argv == ["python3", "plugins/greet.py"])
        #expect(spec.mode == .oneshot)
        #expect(m.discovery.found.map(\.task) == ["plugins.greet"])
        #expect(m.discovery.problems.isEmpty)
        #expect(m.queues == ["plugins"])
    }

    @Test func tasksYamlOverridesWhatThePluginSuggestsKeyByKey() async throws {
        let p = try Project()
        defer { p.remove() }
        try p.write("plugins/quick.py", Self.describing(#"{"tasks": {"q.add": {"queue": "fast", "mode": "persistent", "processes": 3, "time_limit": 5}}}"#))
        let m = try await p.load("""
            plugin_dirs: [plugins]
            defaults: {retries: 4}
            tasks:
              q.add:
                time_limit: 30
                queue: slow
            """)
        let t = try #require(m.tasks["q.add"])
        #expect(t.queue == "slow")
        #expect(t.timeLimit == 30)
        #expect(t.retries == 4)   // the manifest's defaults apply to discovered tasks
        guard case let .plugin(spec) = t.handler, case let .persistent(options) = spec.mode else {
            Issue.record("expected a persistent plugin: \(t.handler)"); return
        }
        #expect(options.processes == 3)
        #expect(m.discovery.found.first?.overridden.sorted() == ["queue", "time_limit"])
    }

    @Test func aFolderCanNameTheQueueAndAPluginItsOwn() async throws {
        let p = try Project()
        defer { p.remove() }
        try p.write("more/a.py", Self.describing(#"{"tasks": {"a": {}, "b": {"queue": "bq"}}}"#))
        let m = try await p.load("plugin_dirs: [{path: more, queue: work}]\n")
        #expect(m.tasks["a"]?.queue == "work")
        #expect(m.tasks["b"]?.queue == "bq")
        #expect(m.taskOrder == ["a", "b"])
    }

    @Test func twoPluginsClaimingOneNameIsAnErrorUnlessTasksYamlChooses() async throws {
        let p = try Project()
        defer { p.remove() }
        try p.write("plugins/one.py", Self.describing(#"{"tasks": {"same": {"time_limit": 1}}}"#))
        try p.write("plugins/two.py", Self.describing(#"{"tasks": {"same": {"time_limit": 2}}}"#))
        let e = await #expect(throws: ManifestError.self) { try await p.load("plugin_dirs: [plugins]\n") }
        #expect(e?.description.contains("task 'same' is described by 2 plugins: plugins/one.py and plugins/two.py") == true)
        #expect(e?.location?.hasSuffix("tasks.yaml:1:14") == true)
        // Naming the task with its own plugin decides; that plugin's suggestion applies.
        let m = try await p.load("""
            plugin_dirs: [plugins]
            tasks:
              same: {plugin: [python3, plugins/two.py]}
            """)
        #expect(m.tasks["same"]?.timeLimit == 2)
        #expect(m.tasks["same"]?.discoveredFrom == "plugins/two.py")
    }

    @Test func pluginsThatDoNotAnswerAreReportedNotFatal() async throws {
        let p = try Project()
        defer { p.remove() }
        try p.write("plugins/good.py", Self.describing(#"{"tasks": {"good": {}}}"#))
        try p.write("plugins/silent.sh", "read line\necho '{\"result\": 1}'\n")   // answers as if it were a call
        try p.write("plugins/crash.py", "import sys\nsys.stderr.write('boom: no describe here\\n')\nsys.exit(3)\n")
        try p.write("plugins/badkey.py", Self.describing(#"{"tasks": {"k": {"env": ["SECRET"]}}}"#))
        try p.write("plugins/badvalue.py", Self.describing(#"{"tasks": {"v": {"time_limit": "soon"}}}"#))
        let m = try await p.load("plugin_dirs: [plugins]\n")
        #expect(m.taskOrder == ["good"])
        let problems = Dictionary(uniqueKeysWithValues: m.discovery.problems.map { ($0.file, $0.message) })
        #expect(problems["plugins/silent.sh"]?.contains("no \"tasks\" object") == true)
        #expect(problems["plugins/crash.py"]?.contains("exit status 3") == true)
        #expect(problems["plugins/crash.py"]?.contains("boom: no describe here") == true)
        #expect(problems["plugins/badkey.py"]?.contains("a plugin cannot set 'env'") == true)
        #expect(problems["plugins/badvalue.py"]?.contains("plugins/badvalue.py (describe)") == true)
        #expect(problems["plugins/badvalue.py"]?.contains("time_limit must be a number") == true)
    }

    @Test func helpersTestsAndPrivateFilesAreNotAsked() async throws {
        let p = try Project()
        defer { p.remove() }
        let counter = p.root.appendingPathComponent("asked").path
        let recording = "import sys\nopen('\(counter)', 'a').write(sys.argv[0] + '\\n')\n"
        for name in ["_private.py", ".hidden.py", "test_greet.py", "greet_test.py", "greet.test.js", "celerity_plugin.py", "README.md", "notes.txt"] {
            try p.write("plugins/\(name)", recording)
        }
        try p.write("plugins/lib.py", "# celerity-check: none (a library)\n" + recording)
        try p.write("plugins/tests/test_x.py", recording)
        try p.write("plugins/tool", "#!/bin/sh\necho \"$0\" >> \(counter)\necho '{\"tasks\": {\"tool\": {}}}'\n", executable: true)
        let m = try await p.load("plugin_dirs: [plugins]\n")
        #expect(m.taskOrder == ["tool"])
        let asked = try String(contentsOfFile: counter, encoding: .utf8).split(separator: "\n")
        #expect(asked.count == 1 && asked.first?.hasSuffix("/plugins/tool") == true, "asked: \(asked)")
        if case let .plugin(spec) = m.tasks["tool"]?.handler { #expect(spec.argv == ["plugins/tool"]) }
    }

    @Test func answersAreCachedByFileIdentity() async throws {
        let p = try Project()
        defer { p.remove() }
        try p.write("plugins/v.py", Self.describing(#"{"tasks": {"v1": {}}}"#))
        let first = try await p.load("plugin_dirs: [plugins]\n")
        #expect(first.discovery.cached == 0)
        #expect(first.taskOrder == ["v1"])
        let again = try await p.load("plugin_dirs: [plugins]\n")
        #expect(again.discovery.cached == 1)
        #expect(again.taskOrder == ["v1"])
        // A changed file is asked again.
        try p.write("plugins/v.py", Self.describing(#"{"tasks": {"v2": {"time_limit": 3}}}"#))
        let changed = try await p.load("plugin_dirs: [plugins]\n")
        #expect(changed.discovery.cached == 0)
        #expect(changed.taskOrder == ["v2"])
    }

    @Test func aTaskWithoutHandlerNeedsAPluginThatDescribesIt() async throws {
        let p = try Project()
        defer { p.remove() }
        let e = await #expect(throws: ManifestError.self) {
            try await p.load("plugin_dirs: [plugins]\ntasks:\n  ghost:\n    time_limit: 3\n")
        }
        #expect(e?.description.contains("put a plugin that describes it in one of plugin_dirs") == true)
        let missing = await #expect(throws: ManifestError.self) { try await p.load("plugin_dirs: [nowhere]\n") }
        #expect(missing?.description.contains("plugin folder 'nowhere' is not a directory") == true)
    }

    @Test func describeValuesKeepTheirJSONTypes() async throws {
        // A JSON string "10" must not turn into a number on its way through YAML nodes.
        let p = try Project()
        defer { p.remove() }
        try p.write("plugins/q.py", Self.describing(#"{"tasks": {"t": {"queue": "10", "ignore_result": true, "rate_limit": "5/s"}}}"#))
        let m = try await p.load("plugin_dirs: [plugins]\n")
        #expect(m.tasks["t"]?.queue == "10")
        #expect(m.tasks["t"]?.storeResult == false)
        #expect(m.tasks["t"]?.rateLimit?.perSecond == 5)
    }

    @Test func describeDocumentShapeErrorsSayWhat() async throws {
        #expect(throws: DescribeError.self) { try PluginDescription.parse(.array([])) }
        let e1 = #expect(throws: DescribeError.self) { try PluginDescription.parse(["tasks": ["x": 3]]) }
        #expect(e1?.message == "tasks.x must be an object (its queue, params, policy), got a number")
        let e2 = #expect(throws: DescribeError.self) { try PluginDescription.parse(["protocol": 2, "tasks": [:]]) }
        #expect(e2?.message.contains("protocol 2") == true)
        let e3 = #expect(throws: DescribeError.self) { try PluginDescription.parse(["tasks": ["x": ["time_limt": 3]]]) }
        #expect(e3?.message.hasPrefix("tasks.x: unknown key 'time_limt'") == true)
        let ok = try PluginDescription.parse(["name": "n", "tasks": ["b": [:], "a": ["queue": "q"]]])
        #expect(ok.tasks.map(\.name) == ["b", "a"])
    }
}
