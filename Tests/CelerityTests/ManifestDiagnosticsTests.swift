import Testing
import Foundation
@testable import Celerity

/// A bad manifest: each diagnostic says where (`t.yaml:<line>:<column>: error: …`) and what is wrong.
@Suite struct ManifestDiagnosticsTests: ManifestTesting {
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
}
