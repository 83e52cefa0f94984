import ArgumentParser
import Celerity
import Foundation

struct PluginCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plugin",
        abstract: "Tools for plugin authors.",
        subcommands: [PluginCheckCommand.self]
    )
}

struct PluginCheckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Drive a plugin through the protocol and say what it gets wrong.",
        discussion: """
        Runs the program (never through a shell) in one-shot mode and in persistent mode: a normal call,
        input that is not JSON, a 100-digit integer, an error (unknown task, unknown method), a
        cancellation (with --slow-task), and shutdown. Exit status 0 when every check passes, 1 otherwise.
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
        let findings = await checker.run()
        for f in findings { print(f) }
        let failed = findings.filter { !$0.passed }.count
        print("\(findings.count - failed) passed, \(failed) failed")
        if failed > 0 { throw ExitCode(.failed) }
    }
}
