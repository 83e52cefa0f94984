import ArgumentParser
import Celerity
import Foundation

struct PluginCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plugin",
        abstract: "Tools for plugin authors.",
        subcommands: [PluginCheckCommand.self, PluginNewCommand.self]
    )
}

struct PluginCheckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Drive a plugin through the protocol and say what it gets wrong.",
        discussion: """
        Runs the program (never through a shell) in one-shot mode and in persistent mode: describe (as
        discovery asks it, CELERITY_MODE=describe, and as a JSON-RPC method; the document's shape, the
        same in both modes), a normal call, input that is not JSON, a 100-digit integer, an error
        (unknown task, unknown method), a cancellation (with --slow-task), shutdown, and reload survival
        (calls in flight answered before shutdown is; a fresh process answers the same call the same
        way). Exit status 0 when every check passes, 1 otherwise.
        Example: celerity plugin check --task plugins.py_add --args '[2, 3]' --slow-task plugins.py_sleep -- python3 plugins/py_tasks.py
        """
    )

    @Option(name: .long, help: "Task name for the normal call.")
    var task: String = "check.task"

    @Option(name: .long, help: ArgumentHelp("Arguments of the normal call, as a JSON array.", valueName: "json"))
    var args: String = "[1, 2]"

    @Option(name: .customLong("slow-task"), help: ArgumentHelp("A task that sleeps for its first argument in seconds; used to test $/cancel.", valueName: "task"))
    var slowTask: String?

    @Option(name: .long, help: "Which modes to check: oneshot, persistent or both.")
    var mode: String = "both"

    @Option(name: .long, help: "Seconds a call may take.")
    var timeout: Double = 10

    @Flag(name: .customLong("skip-describe"), help: "Do not ask for describe (a plugin only named in tasks.yaml, which discovery will not find).")
    var skipDescribe = false

    @Flag(name: .customLong("skip-reload"), help: "Skip the reload survival check (persistent mode).")
    var skipReload = false

    @Flag(name: .long, help: "The same call may get different answers (random results): the reload check compares the kind of answer only.")
    var nondeterministic = false

    @Argument(parsing: .captureForPassthrough, help: "The plugin's program and arguments.")
    var command: [String]

    func validate() throws {
        guard PluginChecker.Mode(rawValue: mode) != nil else { throw ValidationError("--mode must be oneshot, persistent or both") }
        guard let v = try? JSONValue(parsing: args), v.arrayValue != nil else { throw ValidationError("--args must be a JSON array, e.g. '[2, 3]'") }
        let argv = command.first == "--" ? Array(command.dropFirst()) : command
        if argv.isEmpty { throw ValidationError("name the plugin's program, e.g. -- python3 plugins/py_tasks.py") }
    }

    func run() async throws {
        let argv = command.first == "--" ? Array(command.dropFirst()) : command
        var checker = PluginChecker(argv: argv, task: task, args: (try? JSONValue(parsing: args))?.arrayValue ?? [],
                                    slowTask: slowTask, mode: PluginChecker.Mode(rawValue: mode)!)
        checker.timeout = timeout
        checker.checkDescribe = !skipDescribe
        checker.checkReload = !skipReload
        checker.deterministic = !nondeterministic
        let findings = await checker.run()
        for f in findings { print(f) }
        let failed = findings.filter { !$0.passed }.count
        print("\(findings.count - failed) passed, \(failed) failed")
        if failed > 0 { throw ExitCode(.failed) }
    }
}

struct PluginNewCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "new",
        abstract: "Write a new plugin and its test, ready for discovery.",
        discussion: """
        Writes DIR/NAME.<ext>: a plugin serving one task, greet(name: string, times: integer = 1) -> string,
        that answers `describe` with its argument schema; its test under DIR/tests/, which runs the plugin
        through the one-shot protocol and describe; and, for python, node and ruby, the language's helper
        (celerity_plugin.py, .js, .rb) when DIR has none. For c, writes DIR/NAME.c and compiles it to
        DIR/NAME with `cc -O2` (no libraries). Refuses to overwrite a file without --force.
        Example: celerity plugin new greet --lang python
        """
    )

    @Argument(help: ArgumentHelp("The plugin's file name without extension: a letter, then letters, digits, '_' or '-'.", valueName: "name"))
    var name: String

    @Option(name: .long, help: "python, node, sh, ruby or c.")
    var lang: String

    @Option(name: .long, help: ArgumentHelp("Folder to write into (default: the first plugin_dirs entry of $CELERITY_MANIFEST or ./tasks.yaml, else plugins).", valueName: "dir"))
    var dir: String?

    @Option(name: .long, help: ArgumentHelp("The task's name (default: the plugin's name).", valueName: "name"))
    var task: String?

    @Flag(name: .long, help: "Overwrite the plugin and its test if they exist.")
    var force = false

    func validate() throws {
        if let problem = PluginScaffold.problem(name: name, task: task ?? name) { throw ValidationError(problem) }
        guard PluginScaffold.Language(rawValue: lang) != nil else {
            throw ValidationError("--lang must be one of \(PluginScaffold.Language.allCases.map(\.rawValue).joined(separator: ", ")), not '\(lang)'")
        }
        if dir?.isEmpty == true { throw ValidationError("--dir must not be empty") }
    }

    func run() throws {
        let manifestPath = ProcessInfo.processInfo.environment["CELERITY_MANIFEST"] ?? "tasks.yaml"
        var folders: [PluginDirectory] = []
        if FileManager.default.fileExists(atPath: manifestPath) {
            do {
                folders = try Manifest.load(path: manifestPath, discover: false).pluginDirectories
            } catch {
                FileHandle.standardError.write(Data("celerity plugin new: note: \(manifestPath) cannot be read, so its plugin_dirs are unknown: \(error)\n".utf8))
            }
        }
        var target = dir ?? "plugins"
        if dir == nil, let first = folders.first {
            // plugin_dirs are relative to the manifest's folder.
            let base = (manifestPath as NSString).deletingLastPathComponent
            target = first.path.hasPrefix("/") || base.isEmpty || base == "." ? first.path : first.absolutePath
        }
        let absolute = ((target.hasPrefix("/") ? target : (FileManager.default.currentDirectoryPath as NSString).appendingPathComponent(target)) as NSString).standardizingPath
        var scaffold = PluginScaffold(name: name, task: task ?? name, language: PluginScaffold.Language(rawValue: lang)!, dir: target)
        scaffold.discovered = folders.contains { $0.absolutePath == absolute } ? manifestPath : nil
        do {
            let report = try scaffold.write(force: force)
            print(report)
        } catch let e as PluginScaffold.Failure {
            FileHandle.standardError.write(Data("celerity plugin new: \(e.message)\n".utf8))
            throw ExitCode(1)
        }
    }
}

/// Writes a plugin, its test and its language's helper from PluginTemplates and PluginHelpers.
struct PluginScaffold {
    enum Language: String, CaseIterable {
        case python, node, sh, ruby, c
    }

    struct Failure: Error { var message: String }

    var name: String
    var task: String
    var language: Language
    var dir: String
    /// The manifest whose plugin_dirs hold `dir`, if one does.
    var discovered: String?

    /// What is wrong with a plugin or task name, or nil. Names that discovery skips (test_*,
    /// *_test, celerity_plugin) are refused: the plugin would never be found.
    static func problem(name: String, task: String) -> String? {
        let nameOK = name.first.map { $0.isASCII && $0.isLetter } == true
            && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") }
        if !nameOK { return "the plugin's name '\(name)' must start with a letter and hold only letters, digits, '_' and '-' (it names the file)" }
        if name.hasPrefix("test_") || name.hasSuffix("_test") || name == "celerity_plugin" {
            return "discovery skips a file named '\(name)' (test_*, *_test and celerity_plugin are not plugins): choose another name"
        }
        let taskOK = task.first.map { $0.isASCII && ($0.isLetter || $0 == "_") } == true
            && task.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "_.:-".contains($0)) }
        if !taskOK { return "the task name '\(task)' must start with a letter or '_' and hold only letters, digits, '_', '.', ':' and '-'" }
        return nil
    }

    struct File { var path: String; var text: String; var executable: Bool }

    var ident: String { name.replacingOccurrences(of: "-", with: "_") }
    var pluginPath: String { "\(dir)/\(name).\(ext)" }
    var ext: String {
        switch language {
        case .python: "py"
        case .node: "js"
        case .sh: "sh"
        case .ruby: "rb"
        case .c: "c"
        }
    }

    func fill(_ template: String, run: String = "") -> String {
        template.replacingOccurrences(of: "{{NAME}}", with: name).replacingOccurrences(of: "{{IDENT}}", with: ident)
            .replacingOccurrences(of: "{{TASK}}", with: task).replacingOccurrences(of: "{{DIR}}", with: dir)
            .replacingOccurrences(of: "{{RUN}}", with: run)
    }

    /// The plugin and its test.
    var files: [File] {
        switch language {
        case .python:
            [File(path: pluginPath, text: fill(PluginTemplates.python), executable: true),
             File(path: "\(dir)/tests/test_\(ident).py", text: fill(PluginTemplates.pythonTest), executable: false)]
        case .node:
            [File(path: pluginPath, text: fill(PluginTemplates.node), executable: true),
             File(path: "\(dir)/tests/\(name).test.js", text: fill(PluginTemplates.nodeTest), executable: false)]
        case .ruby:
            [File(path: pluginPath, text: fill(PluginTemplates.ruby), executable: true),
             File(path: "\(dir)/tests/test_\(ident).rb", text: fill(PluginTemplates.rubyTest), executable: false)]
        case .sh:
            [File(path: pluginPath, text: fill(PluginTemplates.sh), executable: true),
             File(path: "\(dir)/tests/test_\(ident).sh", text: fill(PluginTemplates.shellTest, run: "sh \"$here/../\(name).sh\""), executable: true)]
        case .c:
            [File(path: pluginPath, text: fill(PluginTemplates.c), executable: false),
             File(path: "\(dir)/tests/test_\(ident).sh", text: fill(PluginTemplates.shellTest, run: "\"$here/../\(name)\""), executable: true)]
        }
    }

    /// The helper the plugin loads, and its text (the copy built into this binary).
    var helper: File? {
        switch language {
        case .python: File(path: "\(dir)/celerity_plugin.py", text: PluginHelpers.python, executable: false)
        case .node: File(path: "\(dir)/celerity_plugin.js", text: PluginHelpers.node, executable: false)
        case .ruby: File(path: "\(dir)/celerity_plugin.rb", text: PluginHelpers.ruby, executable: false)
        case .sh, .c: nil
        }
    }

    /// How the plugin runs: what discovery will run, and what `plugin check` needs.
    var argv: [String] {
        switch language {
        case .python: ["python3", pluginPath]
        case .node: ["node", pluginPath]
        case .ruby: ["ruby", pluginPath]
        case .sh: ["sh", pluginPath]
        case .c: ["\(dir)/\(name)"]
        }
    }

    var testCommand: String {
        switch language {
        case .python: "python3 \(dir)/tests/test_\(ident).py"
        case .node: "node --test \(dir)/tests/\(name).test.js"
        case .ruby: "ruby \(dir)/tests/test_\(ident).rb"
        case .sh, .c: "sh \(dir)/tests/test_\(ident).sh"
        }
    }

    /// Writes everything; returns what to tell the user. Throws Failure before writing anything
    /// when a file exists (without `force`) or, for C, when there is no compiler.
    func write(force: Bool) throws -> String {
        let fm = FileManager.default
        var targets = files
        let binary = "\(dir)/\(name)"
        if !force {
            var existing = targets.map(\.path).filter { fm.fileExists(atPath: $0) }
            if language == .c, fm.fileExists(atPath: binary) { existing.append(binary) }
            if !existing.isEmpty {
                throw Failure(message: "\(existing.joined(separator: ", ")) already exist\(existing.count == 1 ? "s" : ""); use --force to overwrite")
            }
        }
        var compiler: String?
        if language == .c {
            guard let cc = Executables.find("cc") else {
                throw Failure(message: "no C compiler: `cc` is not on PATH (on Debian: apt-get install gcc)")
            }
            compiler = cc
        }
        var lines: [String] = []
        do {
            try fm.createDirectory(atPath: "\(dir)/tests", withIntermediateDirectories: true)
            var helperNote: String?
            if let helper {
                if let present = fm.contents(atPath: helper.path) {
                    if present != Data(helper.text.utf8) {
                        helperNote = "kept \(helper.path): it differs from this celerity's copy (if the plugin's describe test fails, remove it and run this again to get the current one)"
                    }
                } else {
                    targets.append(helper)
                }
            }
            for file in targets {
                try Data(file.text.utf8).write(to: URL(fileURLWithPath: file.path))
                if file.executable { try fm.setAttributes([.posixPermissions: 0o755], ofItemAtPath: file.path) }
                lines.append("wrote \(file.path)")
            }
            if let helperNote { lines.append(helperNote) }
        } catch {
            throw Failure(message: "cannot write into \(dir): \(error.localizedDescription)")
        }
        if let compiler {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: compiler)
            process.arguments = ["-O2", "-o", binary, pluginPath]
            do {
                try process.run()
            } catch {
                throw Failure(message: "cannot run \(compiler): \(error.localizedDescription)")
            }
            process.waitUntilExit()
            guard process.terminationReason == .exit, process.terminationStatus == 0 else {
                throw Failure(message: "\(compiler) -O2 -o \(binary) \(pluginPath) failed (exit \(process.terminationStatus))")
            }
            lines.append("compiled \(binary) (cc -O2 -o \(binary) \(pluginPath))")
        }
        let mode = language == .sh || language == .c ? "--mode oneshot " : ""
        lines += [
            "",
            "Task \(task)(name: string, times: integer = 1) -> string. Next:",
            "  \(testCommand)",
            "  celerity plugin check \(mode)--task \(task) --args '[\"world\"]' -- \(argv.joined(separator: " "))",
            discovered.map { "  \($0) lists \(dir) in plugin_dirs: with a worker running,  celerity call \(task) world" }
                ?? "  with `plugin_dirs: [\(dir)]` in tasks.yaml and a worker running:  celerity call \(task) world",
        ]
        if language == .c { lines.append("  after editing \(pluginPath): cc -O2 -o \(binary) \(pluginPath)") }
        return lines.joined(separator: "\n")
    }
}
