import Celerity
import Foundation
import Testing

extension Integration {
    /// `celerity plugin new`: each language's scaffold passes its own test and `celerity plugin
    /// check` as written, and its test catches a plugin that answers wrongly.
    @Suite(.timeLimit(.minutes(5)))
    struct PluginScaffoldTests {
        static func temporaryDirectory() throws -> String {
            let dir = NSTemporaryDirectory() + "celerity-scaffold-\(UUID().uuidString.prefix(8))"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            return dir
        }

        /// How each language's scaffold is tested and checked (relative to the working directory).
        struct Scaffold: Sendable, CustomTestStringConvertible {
            var lang: String
            var name: String { "hello-\(lang)" }
            var ident: String { "hello_\(lang)" }
            var testDescription: String { lang }

            var pluginFile: String {
                switch lang {
                case "python": "plugs/\(name).py"
                case "node": "plugs/\(name).js"
                case "ruby": "plugs/\(name).rb"
                case "sh": "plugs/\(name).sh"
                default: "plugs/\(name).c"
                }
            }

            var testCommand: [String] {
                switch lang {
                case "python": [Paths.python3, "plugs/tests/test_\(ident).py"]
                case "node": [Paths.which("node"), "--test", "plugs/tests/\(name).test.js"]
                case "ruby": [Paths.which("ruby"), "plugs/tests/test_\(ident).rb"]
                default: [Paths.which("sh"), "plugs/tests/test_\(ident).sh"]
                }
            }

            /// What the test prints when every test passes.
            var passed: String {
                switch lang {
                case "python": "OK"
                case "node": "# fail 0"
                case "ruby": "0 failures, 0 errors"
                default: "all checks pass"
                }
            }

            var argv: [String] {
                switch lang {
                case "python": [Paths.python3, pluginFile]
                case "node": [Paths.which("node"), pluginFile]
                case "ruby": [Paths.which("ruby"), pluginFile]
                case "sh": [Paths.which("sh"), pluginFile]
                default: ["plugs/\(name)"]
                }
            }

            var checkOptions: [String] {
                (lang == "sh" || lang == "c" ? ["--mode", "oneshot"] : []) + ["--task", "demo.hello", "--args", #"["world"]"#]
            }
        }

        static let scaffolds = ["python", "node", "ruby", "sh", "c"].map { Scaffold(lang: $0) }

        @Test(arguments: scaffolds)
        func aScaffoldPassesItsTestAndPluginCheck(_ s: Scaffold) async throws {
            let root = try Self.temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: root) }
            let new = try await ChildProcess.run(Paths.celerity, ["plugin", "new", s.name, "--lang", s.lang, "--dir", "plugs", "--task", "demo.hello"],
                                                 directory: root)
            #expect(new.status == 0, "\(new.output)")
            #expect(new.output.contains("wrote \(s.pluginFile)"), "\(new.output)")
            #expect(new.output.contains("celerity plugin check"), "\(new.output)")

            let test = try await ChildProcess.run(s.testCommand[0], Array(s.testCommand.dropFirst()), directory: root)
            #expect(test.status == 0, "\(test.output)")
            #expect(test.output.contains(s.passed), "\(test.output)")

            let check = try await ChildProcess.run(Paths.celerity, ["plugin", "check"] + s.checkOptions + ["--"] + s.argv, directory: root)
            #expect(check.status == 0, "\(check.output)")
            #expect(check.output.contains(" passed, 0 failed"), "\(check.output)")

            // Discovery runs the plugin with CELERITY_MODE=describe: one document naming the task and its schema.
            let describe = try await ChildProcess.run(Paths.which("sh"), ["-c", #"echo '{"method": "describe", "protocol": 1}' | CELERITY_MODE=describe "$@""#, "sh"] + s.argv,
                                                      directory: root)
            #expect(describe.status == 0, "\(describe.output)")
            let document = try JSONValue(parsing: Array(describe.output.utf8))
            let entry = try #require(document["tasks"]?["demo.hello"], "\(describe.output)")
            #expect(entry["params"]?["name"]?["type"] == "string")
            #expect(entry["params"]?["times"]?["type"] == "integer")
            #expect(entry["params"]?["times"]?["default"] == 1)
            #expect(entry["returns"]?["type"] == "string")

            // The test is not a formality: a plugin that answers wrongly fails it.
            let file = root + "/" + s.pluginFile
            let text = try String(contentsOfFile: file, encoding: .utf8)
            #expect(text.contains("Hello, "))
            try text.replacingOccurrences(of: "Hello, ", with: "Bye, ").write(toFile: file, atomically: false, encoding: .utf8)
            if s.lang == "c" {
                let cc = try await ChildProcess.run(Paths.which("cc"), ["-O2", "-o", "plugs/\(s.name)", s.pluginFile], directory: root)
                #expect(cc.status == 0, "\(cc.output)")
            }
            let broken = try await ChildProcess.run(s.testCommand[0], Array(s.testCommand.dropFirst()), directory: root)
            #expect(broken.status != 0, "\(broken.output)")
        }

        @Test(arguments: [("python", "py"), ("node", "js"), ("ruby", "rb")])
        func theHelperWrittenIsTheRepositorysOwn(lang: String, ext: String) async throws {
            let root = try Self.temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: root) }
            let new = try await ChildProcess.run(Paths.celerity, ["plugin", "new", "h", "--lang", lang, "--dir", root])
            #expect(new.status == 0, "\(new.output)")
            let written = FileManager.default.contents(atPath: root + "/celerity_plugin.\(ext)")
            let source = FileManager.default.contents(atPath: Paths.root + "/plugins/celerity_plugin.\(ext)")
            #expect(written != nil && written == source,
                    "the copy of plugins/celerity_plugin.\(ext) built into celerity is not the file: run scripts/embed-plugin-helpers.sh")
        }

        @Test func itRefusesToOverwriteWithoutForceAndKeepsAHelperItDidNotWrite() async throws {
            let root = try Self.temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: root) }
            let dir = root + "/p"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try "# an older helper\n".write(toFile: dir + "/celerity_plugin.py", atomically: true, encoding: .utf8)
            let first = try await ChildProcess.run(Paths.celerity, ["plugin", "new", "greet", "--lang", "python", "--dir", dir])
            #expect(first.status == 0, "\(first.output)")
            #expect(first.output.contains("kept \(dir)/celerity_plugin.py: it differs"), "\(first.output)")
            #expect(try String(contentsOfFile: dir + "/celerity_plugin.py", encoding: .utf8) == "# an older helper\n")
            // The task name defaults to the plugin's name.
            #expect(try String(contentsOfFile: dir + "/greet.py", encoding: .utf8).contains(#"@task("greet")"#))

            try "mine\n".write(toFile: dir + "/greet.py", atomically: true, encoding: .utf8)
            let again = try await ChildProcess.run(Paths.celerity, ["plugin", "new", "greet", "--lang", "python", "--dir", dir])
            #expect(again.status == 1)
            #expect(again.output.contains("\(dir)/greet.py, \(dir)/tests/test_greet.py already exist; use --force to overwrite"), "\(again.output)")
            #expect(try String(contentsOfFile: dir + "/greet.py", encoding: .utf8) == "mine\n")

            let forced = try await ChildProcess.run(Paths.celerity, ["plugin", "new", "greet", "--lang", "python", "--dir", dir, "--force"])
            #expect(forced.status == 0, "\(forced.output)")
            #expect(try String(contentsOfFile: dir + "/greet.py", encoding: .utf8) != "mine\n")
        }

        /// Without --dir, the scaffold goes into the first folder of tasks.yaml's plugin_dirs.
        @Test func theDefaultFolderIsTheManifestsFirstPluginDir() async throws {
            let root = try Self.temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: root) }
            try FileManager.default.createDirectory(atPath: root + "/drop", withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: root + "/more", withIntermediateDirectories: true)
            try "plugin_dirs: [drop, {path: more, queue: q}]\n".write(toFile: root + "/tasks.yaml", atomically: true, encoding: .utf8)
            let r = try await ChildProcess.run(Paths.celerity, ["plugin", "new", "hi", "--lang", "sh"], directory: root)
            #expect(r.status == 0, "\(r.output)")
            #expect(FileManager.default.fileExists(atPath: root + "/drop/hi.sh"))
            #expect(r.output.contains("tasks.yaml lists drop in plugin_dirs: with a worker running,  celerity call hi world"), "\(r.output)")
            // A folder outside plugin_dirs gets the hint to add it.
            let other = try await ChildProcess.run(Paths.celerity, ["plugin", "new", "hi", "--lang", "sh", "--dir", "elsewhere"], directory: root)
            #expect(other.status == 0, "\(other.output)")
            #expect(other.output.contains("with `plugin_dirs: [elsewhere]` in tasks.yaml"), "\(other.output)")
        }

        @Test func badNamesAndLanguagesAreUsageErrors() async throws {
            let root = try Self.temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: root) }
            for (args, message) in [(["test_x", "--lang", "python"], "discovery skips a file named 'test_x'"),
                                    (["x_test", "--lang", "node"], "discovery skips a file named 'x_test'"),
                                    (["9lives", "--lang", "sh"], "must start with a letter"),
                                    (["a/b", "--lang", "sh"], "must start with a letter and hold only letters"),
                                    (["ok", "--lang", "sh", "--task", "bad task"], "the task name 'bad task'"),
                                    (["ok", "--lang", "cobol"], "--lang must be one of python, node, sh, ruby, c, not 'cobol'")] {
                let r = try await ChildProcess.run(Paths.celerity, ["plugin", "new"] + args + ["--dir", root])
                #expect(r.status == 64, "\(args): \(r.output)")
                #expect(r.output.contains(message), "\(args): \(r.output)")
            }
            #expect(try FileManager.default.contentsOfDirectory(atPath: root).isEmpty)
        }

        /// `celerity plugin check` fails a description of the wrong shape, a plugin that drops
        /// calls in flight at shutdown, and one whose fresh process answers differently.
        @Test func pluginCheckCatchesABadDescriptionAndALossyReload() async throws {
            let root = try Self.temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: root) }
            func check(_ options: [String], _ argv: [String]) async throws -> (status: Int32, output: String) {
                try await ChildProcess.run(Paths.celerity, ["plugin", "check", "--timeout", "5"] + options + ["--"] + argv)
            }

            // A typo in the description is named, with the task.
            try """
            #!/bin/sh
            cat >/dev/null
            if [ "$CELERITY_MODE" = describe ]; then echo '{"protocol": 1, "tasks": {"t.x": {"qeue": "q", "params": {"n": "int"}}}}'; exit 0; fi
            echo '{"result": 1}'
            """.write(toFile: root + "/typo.sh", atomically: true, encoding: .utf8)
            let typo = try await check(["--mode", "oneshot", "--task", "t.x"], [Paths.which("sh"), root + "/typo.sh"])
            #expect(typo.status == 1)
            #expect(typo.output.contains("FAIL  describe (one-shot, CELERITY_MODE=describe): tasks.t.x: unknown key 'qeue'"), "\(typo.output)")
            try """
            #!/bin/sh
            cat >/dev/null
            if [ "$CELERITY_MODE" = describe ]; then echo '{"protocol": 1, "tasks": {"t.x": {"time_limit": "soon", "processes": 2, "params": {"n": "int"}}}}'; exit 0; fi
            echo '{"result": 1}'
            """.write(toFile: root + "/values.sh", atomically: true, encoding: .utf8)
            let values = try await check(["--mode", "oneshot", "--task", "t.x"], [Paths.which("sh"), root + "/values.sh"])
            #expect(values.status == 1)
            #expect(values.output.contains("tasks.t.x.params.n: a schema must be an object or a type name"), "\(values.output)")
            #expect(values.output.contains("as a tasks.yaml entry: "), "\(values.output)")
            // Without describe at all: a failure that says what it costs, unless skipped.
            try "#!/bin/sh\ncat >/dev/null\necho '{\"result\": 1}'\n".write(toFile: root + "/old.sh", atomically: true, encoding: .utf8)
            let silent = try await check(["--mode", "oneshot"], [Paths.which("sh"), root + "/old.sh"])
            #expect(silent.status == 1)
            #expect(silent.output.contains("FAIL  describe (one-shot, CELERITY_MODE=describe): the answer has no \"tasks\""), "\(silent.output)")
            #expect(silent.output.contains("discovery cannot find this plugin"), "\(silent.output)")
            let skipped = try await check(["--mode", "oneshot", "--skip-describe"], [Paths.which("sh"), root + "/old.sh"])
            #expect(skipped.output.contains("PASS  one-shot: a normal call"), "\(skipped.output)")
            #expect(!skipped.output.contains("describe"), "\(skipped.output)")

            // Each process answers with its pid: a fresh process answers differently.
            try """
            import os, sys
            sys.path.insert(0, \(String(reflecting: Paths.root + "/plugins")))
            from celerity_plugin import task, run

            @task("t.pid")
            def pid(*args):
                return os.getpid()

            run()
            """.write(toFile: root + "/pid.py", atomically: true, encoding: .utf8)
            let pid = try await check(["--task", "t.pid"], [Paths.python3, root + "/pid.py"])
            #expect(pid.status == 1)
            #expect(pid.output.contains("FAIL  persistent: reload survival (5 calls in flight, shutdown, a fresh process): the first process answered result "), "\(pid.output)")
            let lenient = try await check(["--task", "t.pid", "--nondeterministic"], [Paths.python3, root + "/pid.py"])
            #expect(lenient.status == 0, "\(lenient.output)")

            // Shutdown answered while calls are still running: a reload would lose them.
            try """
            import json, os, sys, threading, time
            def send(obj):
                sys.stdout.write(json.dumps(obj) + "\\n"); sys.stdout.flush()
            lock = threading.Lock()
            def later(rpc_id):
                time.sleep(0.5)
                with lock: send({"jsonrpc": "2.0", "id": rpc_id, "result": 1})
            if os.environ.get("CELERITY_MODE") == "describe":
                sys.stdin.read(); send({"protocol": 1, "tasks": {"t.slow": {}}}); sys.exit(0)
            if os.environ.get("CELERITY_MODE") != "persistent":
                sys.stdin.read(); send({"result": 1}); sys.exit(0)
            for line in sys.stdin:
                try:
                    m = json.loads(line)
                except ValueError:
                    with lock: send({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}})
                    continue
                method, rpc_id = m.get("method"), m.get("id")
                with lock:
                    if method == "initialize": send({"jsonrpc": "2.0", "id": rpc_id, "result": {"protocol": 1, "max_inflight": 8}})
                    elif method == "describe": send({"jsonrpc": "2.0", "id": rpc_id, "result": {"protocol": 1, "tasks": {"t.slow": {}}}})
                    elif method == "task/run": threading.Thread(target=later, args=(rpc_id,), daemon=True).start()
                    elif method == "shutdown": send({"jsonrpc": "2.0", "id": rpc_id, "result": {}})
                    elif method == "exit": os._exit(0)
                    elif rpc_id is not None: send({"jsonrpc": "2.0", "id": rpc_id, "error": {"code": -32601, "message": "no"}})
            """.write(toFile: root + "/hasty.py", atomically: true, encoding: .utf8)
            let hasty = try await check(["--task", "t.slow"], [Paths.python3, root + "/hasty.py"])
            #expect(hasty.status == 1)
            #expect(hasty.output.contains("FAIL  persistent: reload survival (5 calls in flight, shutdown, a fresh process): shutdown was answered before r1, r2, r3, r4, r5"), "\(hasty.output)")
        }

        /// Runs `argv` as discovery does (CELERITY_MODE=describe) and returns the document's tasks.
        static func describe(_ argv: [String]) async throws -> JSONValue {
            let r = try await ChildProcess.run(Paths.which("sh"), ["-c", #"echo '{"method": "describe", "protocol": 1}' | CELERITY_MODE=describe "$@""#, "sh"] + argv)
            #expect(r.status == 0, "\(r.output)")
            let document = try JSONValue(parsing: Array(r.output.utf8))
            return try #require(document["tasks"], "\(r.output)")
        }

        /// The Python helper's translation of annotations, defaults, *args and **kwargs.
        @Test func thePythonHelperDescribesSignatures() async throws {
            let root = try Self.temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: root) }
            try """
            import enum, sys
            from typing import Annotated, Literal, Optional, TypedDict, Union
            sys.path.insert(0, \(String(reflecting: Paths.root + "/plugins")))
            from celerity_plugin import task, run

            class Color(enum.Enum):
                RED = "red"
                BLUE = "blue"

            class User(TypedDict):
                name: str
                age: int

            @task("t.rich", queue="q", time_limit=30, mode="persistent")
            def rich(a: list[int], b: dict[str, float], c: Optional[str], d: Literal["x", "y"], e: Union[int, str],
                     f: Annotated[int, {"minimum": 0}] = 3, g: Color = Color.RED, u: User = None, h=object()) -> list[list[float]]:
                \"\"\"First paragraph,
                on two lines.

                Not this one.\"\"\"

            @task("t.star")
            def star(x, *rest: float, flag: bool = False, **kw):
                pass

            @task("t.explicit", params={"n": {"type": "integer", "minimum": 0}})
            def explicit(*a, **k):
                pass

            @task("t.none", params=None)
            def none(x: int):
                pass

            run()
            """.write(toFile: root + "/rich.py", atomically: true, encoding: .utf8)
            let tasks = try await Self.describe([Paths.python3, root + "/rich.py"])
            let rich = try #require(tasks["t.rich"])
            #expect(rich["doc"] == "First paragraph, on two lines.")
            #expect(rich["queue"] == "q" && rich["time_limit"] == 30 && rich["mode"] == "persistent")
            let p = try #require(rich["params"])
            #expect(p.objectValue?.map(\.key) == ["a", "b", "c", "d", "e", "f", "g", "u", "h"])   // in order
            #expect(p["a"] == ["type": "array", "items": ["type": "integer"]])
            #expect(p["b"] == ["type": "object", "additionalProperties": ["type": "number"]])
            #expect(p["c"] == ["type": ["string", "null"]])
            #expect(p["d"] == ["enum": ["x", "y"], "type": "string"])
            #expect(p["e"] == ["type": ["integer", "string"]])
            #expect(p["f"] == ["type": "integer", "minimum": 0, "default": 3])
            #expect(p["g"] == ["enum": ["red", "blue"], "type": "string", "default": "red"])
            #expect(p["u"]?["properties"] == ["name": ["type": "string"], "age": ["type": "integer"]])
            #expect(p["u"]?["type"] == ["object", "null"] && p["u"]?["default"] == .null)
            #expect(p["h"] == ["default": .null, "description": "default: an instance of object (not JSON)"])
            #expect(rich["returns"] == ["type": "array", "items": ["type": "array", "items": ["type": "number"]]])
            // Keyword-only parameters after *args are left out, as extra keyword arguments.
            #expect(tasks["t.star"] == ["params": ["x": [:]], "varargs": ["type": "number"], "varkwargs": true])
            #expect(tasks["t.explicit"] == ["params": ["n": ["type": "integer", "minimum": 0]]])
            #expect(tasks["t.none"] == [:])
        }

        /// The Node and Ruby helpers: params as names, as types and schemas; names from a Ruby block.
        @Test func theNodeAndRubyHelpersDescribeTheirParams() async throws {
            let root = try Self.temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: root) }
            try """
            const { task, run } = require(\(String(reflecting: Paths.root + "/plugins/celerity_plugin")));
            task('t.names', (x, y) => x + y, { params: ['x', 'y'] });
            task('t.typed', (n, m) => n, { params: { n: 'integer', m: { type: 'number', default: 1 } }, returns: 'number', queue: 'q', doc: 'Typed.' });
            task('t.free', (...a) => a, { varargs: true, time_limit: 5 });
            run();
            """.write(toFile: root + "/n.js", atomically: true, encoding: .utf8)
            let node = try await Self.describe([Paths.which("node"), root + "/n.js"])
            #expect(node["t.names"] == ["params": ["x": [:], "y": [:]]])
            #expect(node["t.typed"] == ["doc": "Typed.", "params": ["n": ["type": "integer"], "m": ["type": "number", "default": 1]],
                                        "returns": ["type": "number"], "queue": "q"])
            #expect(node["t.free"] == ["varargs": true, "time_limit": 5])
            let typo = try await ChildProcess.run(Paths.which("node"), ["-e", "require(\(String(reflecting: Paths.root + "/plugins/celerity_plugin"))).task('a', () => 1, { qeue: 'x' })"])
            #expect(typo.status != 0 && typo.output.contains("task(): unknown option qeue"), "\(typo.output)")

            try """
            require \(String(reflecting: Paths.root + "/plugins/celerity_plugin"))
            include CelerityPlugin
            task 't.block', queue: 'q' do |a, b = 2, *rest, **opts| a end
            task 't.kw' do |a, scale: 1| a * scale end
            task 't.typed', params: { n: 'integer', m: { type: 'number', default: 1 } }, doc: 'Typed.' do |n, m = 1| n end
            run
            """.write(toFile: root + "/r.rb", atomically: true, encoding: .utf8)
            let ruby = try await Self.describe([Paths.which("ruby"), root + "/r.rb"])
            #expect(ruby["t.block"] == ["params": ["a": [:], "b": ["default": .null, "description": "optional"]], "varargs": true, "varkwargs": true, "queue": "q"])
            #expect(ruby["t.kw"] == ["params": ["a": [:], "scale": ["default": .null, "description": "optional"]]])
            #expect(ruby["t.typed"] == ["doc": "Typed.", "params": ["n": ["type": "integer"], "m": ["type": "number", "default": 1]]])
            // Keyword arguments bind to the block's parameters by name, positional or keyword.
            let call = try await ChildProcess.run(Paths.which("sh"), ["-c", #"echo '{"task": "t.kw", "args": [], "kwargs": {"a": 3, "scale": 5}}' | ruby "$1""#, "sh", root + "/r.rb"])
            #expect(call.output.contains(#"{"result":15}"#), "\(call.output)")
        }
    }
}
