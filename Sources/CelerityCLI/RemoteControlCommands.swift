import ArgumentParser
import Celerity
import Foundation
import RedisClient

/// Options of `celerity inspect` and `celerity control`, as `celery inspect/control` has them.
struct RemoteOptions: ParsableArguments {
    @Option(name: [.short, .long], parsing: .singleValue,
            help: ArgumentHelp("Only this node (repeatable, or comma-separated), e.g. celery@host.", valueName: "node"))
    var destination: [String] = []

    @Option(name: [.short, .long], help: ArgumentHelp("Seconds to wait for replies.", valueName: "s"))
    var timeout: Double = 1

    @Flag(name: [.short, .long], help: "Print one JSON document {node: reply}.")
    var json = false

    var nodes: [String] {
        destination.flatMap { $0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } }.filter { !$0.isEmpty }
    }

    func validate() throws {
        if !(timeout > 0) || timeout > 3600 { throw ValidationError("--timeout must be more than 0 and at most 3600 seconds") }
    }
}

/// Celery's remote-control commands (celery/worker/control.py `Panel.meta`): which kind, and
/// the arguments they take from a command line, in order, with their types.
struct RemoteCommandSpec: Sendable {
    enum Kind: String, Sendable { case inspect, control }
    enum ArgType: Sendable { case string, int, float, bool }
    let name: String
    let kind: Kind
    let args: [(name: String, type: ArgType)]
    /// The name of the list argument taking the remaining words (`ids`, `task_id`).
    let variadic: String?
    /// How many of `args` must be given (and whether the variadic list must not be empty).
    let required: Int
    let variadicRequired: Bool
    let signature: String
    let help: String

    init(_ name: String, _ kind: Kind, args: [(String, ArgType)] = [], variadic: String? = nil, required: Int = 0, variadicRequired: Bool = false,
         signature: String = "", _ help: String) {
        self.name = name
        self.kind = kind
        self.args = args.map { (name: $0.0, type: $0.1) }
        self.variadic = variadic
        self.required = required
        self.variadicRequired = variadicRequired
        self.signature = signature
        self.help = help
    }

    static let all: [RemoteCommandSpec] = [
        .init("ping", .inspect, "Ping the workers."),
        .init("stats", .inspect, "Statistics of each worker."),
        .init("active", .inspect, "Tasks being run."),
        .init("reserved", .inspect, "Tasks taken from the queues, waiting to run."),
        .init("scheduled", .inspect, "Tasks with an eta or countdown, held by the workers."),
        .init("registered", .inspect, variadic: "taskinfoitems", signature: "[attr ...]", "The tasks each worker knows."),
        .init("active_queues", .inspect, "The queues each worker consumes."),
        .init("revoked", .inspect, "Revoked task ids each worker holds."),
        .init("conf", .inspect, args: [("with_defaults", .bool)], signature: "[include_defaults=false]", "Each worker's configuration."),
        .init("query_task", .inspect, variadic: "ids", variadicRequired: true, signature: "<id> [id ...]", "Where tasks are (active, reserved, scheduled)."),
        .init("clock", .inspect, "Each worker's logical clock."),
        .init("report", .inspect, "Each worker's bug report text."),
        .init("memsample", .inspect, "Memory samples (Python workers)."),
        .init("memdump", .inspect, args: [("samples", .int)], signature: "[n_samples=10]", "Memory dump (Python workers)."),
        .init("shutdown", .control, "Stop the workers (warm shutdown; they send no reply)."),
        .init("enable_events", .control, "Turn task events on."),
        .init("disable_events", .control, "Turn task events off."),
        .init("heartbeat", .control, "Ask for a worker-heartbeat event now."),
        .init("add_consumer", .control, args: [("queue", .string), ("exchange", .string), ("exchange_type", .string), ("routing_key", .string)], required: 1,
              signature: "<queue> [exchange [type [routing_key]]]", "Start consuming a queue."),
        .init("cancel_consumer", .control, args: [("queue", .string)], required: 1, signature: "<queue>", "Stop consuming a queue."),
        .init("pool_grow", .control, args: [("n", .int)], signature: "[N=1]", "Add pool processes."),
        .init("pool_shrink", .control, args: [("n", .int)], signature: "[N=1]", "Remove pool processes."),
        .init("pool_restart", .control, "Celerity workers: reload the manifest and plugins (as SIGHUP); Python workers: restart the pool."),
        .init("autoscale", .control, args: [("max", .int), ("min", .int)], signature: "[max [min]]", "Set the autoscaler's bounds."),
        .init("rate_limit", .control, args: [("task_name", .string), ("rate_limit", .string)], required: 2,
              signature: "<task_name> <rate_limit (e.g. 5/s | 5/m | 5/h)>", "Set a task's rate limit."),
        .init("time_limit", .control, args: [("task_name", .string), ("soft", .float), ("hard", .float)], required: 2,
              signature: "<task_name> <soft_secs> [hard_secs]", "Set a task's time limits."),
        .init("revoke", .control, variadic: "task_id", variadicRequired: true, signature: "<id> [id ...] [--terminate [--signal SIG]]",
              "Revoke tasks (with --terminate, stop them if running)."),
        .init("terminate", .control, args: [("signal", .string)], variadic: "task_id", required: 1, variadicRequired: true,
              signature: "<signal> <id> [id ...]", "Terminate running tasks with a signal."),
        .init("election", .control, "Start an election (Python workers)."),
    ]

    static func named(_ name: String, _ kind: Kind) throws -> RemoteCommandSpec {
        if let s = all.first(where: { $0.name == name && $0.kind == kind }) { return s }
        let names = all.filter { $0.kind == kind }.map(\.name).sorted().joined(separator: ", ")
        let other = all.contains { $0.name == name } ? " ('\(name)' is a \(kind == .inspect ? "control" : "inspect") command: celerity \(kind == .inspect ? "control" : "inspect") \(name))" : ""
        throw ValidationError("unknown \(kind.rawValue) command '\(name)'\(other). Available: \(names)")
    }

    static func listing(_ kind: Kind) -> String {
        all.filter { $0.kind == kind }.map { "  \($0.name)\($0.signature.isEmpty ? "" : " " + $0.signature)\n      \($0.help)" }.joined(separator: "\n")
    }

    /// The request's `arguments` from command-line words, as Celery's `_compile_arguments`
    /// builds them (typed positional arguments, then the variadic list).
    func arguments(_ words: [String]) throws -> [JSONMember] {
        var out: [JSONMember] = []
        var rest = words[...]
        for (i, a) in args.enumerated() {
            guard let w = rest.first else {
                if i < required { throw ValidationError("\(kind.rawValue) \(name) takes: \(signature) (missing \(a.name))") }
                break
            }
            rest = rest.dropFirst()
            out.append(JSONMember(a.name, try Self.convert(w, a.type, name: a.name, command: name)))
        }
        if let variadic {
            if variadicRequired && rest.isEmpty { throw ValidationError("\(kind.rawValue) \(name) takes: \(signature)") }
            out.append(JSONMember(variadic, .array(rest.map(JSONValue.string))))
        } else if !rest.isEmpty {
            throw ValidationError("\(kind.rawValue) \(name) takes \(signature.isEmpty ? "no arguments" : "arguments: " + signature); unexpected: \(rest.joined(separator: " "))")
        }
        return out
    }

    static func convert(_ w: String, _ type: ArgType, name: String, command: String) throws -> JSONValue {
        switch type {
        case .string: return .string(w)
        case .int:
            guard let n = Int(w) else { throw ValidationError("\(command): \(name) must be an integer, not '\(w)'") }
            return .int(n)
        case .float:
            guard let d = Double(w), d.isFinite else { throw ValidationError("\(command): \(name) must be a number of seconds, not '\(w)'") }
            return .double(d)
        case .bool:
            // Python's strtobool.
            switch w.lowercased() {
            case "y", "yes", "t", "true", "on", "1": return .bool(true)
            case "n", "no", "f", "false", "off", "0": return .bool(false)
            default: throw ValidationError("\(command): \(name) must be true or false, not '\(w)'")
            }
        }
    }
}

/// Sends one request and prints the replies as `celery inspect/control` does; the exit status.
enum RemoteRun {
    static func run(_ spec: RemoteCommandSpec, arguments: [JSONMember], remote: RemoteOptions, connection: ConnectionOptions) async throws {
        let control: ControlClient
        do {
            let manifest = try await connection.loadManifest(required: false)
            control = try ControlClient(broker: connection.brokerURL(manifest))
        } catch {
            throw badInput(error)
        }
        let nodes = remote.nodes
        var printed = 0
        let replies: [ControlReply]
        do {
            replies = try await control.broadcast(spec.name, arguments: .object(arguments), destination: nodes.isEmpty ? nil : nodes,
                                                  reply: true, timeout: remote.timeout)
        } catch {
            throw fail("\(spec.kind.rawValue) \(spec.name): cannot reach the broker at \(control.redis.url): \(error)", CelerityExit(error, otherwise: .redisUnreachable))
        }
        guard !replies.isEmpty else {
            if spec.name == "shutdown" {
                // Workers stop without replying (Celery's do too).
                print("shutdown sent\(nodes.isEmpty ? "" : " to " + nodes.joined(separator: ", ")) (workers do not reply to it)")
                return
            }
            throw fail("No nodes replied within time constraint.", .noResult)
        }
        if remote.json {
            print(JSONValue.object(replies.map { JSONMember($0.node, $0.value) }).serialized())
        } else {
            for r in replies {
                print(RemoteFormat.chat(r))
                printed += 1
            }
            print("\n\(printed) node\(printed == 1 ? "" : "s") online.")
        }
        let errors = replies.filter { $0.error != nil }
        if !errors.isEmpty {
            throw fail("\(errors.count) of \(replies.count) node\(replies.count == 1 ? "" : "s") answered an error: "
                       + errors.map { "\($0.node): \($0.error ?? "")" }.joined(separator: "; "), .failed)
        }
    }
}

/// The text of `celery inspect/control` (celery/bin/base.py `pretty`, `say_chat`).
enum RemoteFormat {
    static func chat(_ r: ControlReply) -> String {
        let (ok, body) = pretty(r.value)
        return "->  \(r.node): \(ok ? "OK" : "ERROR")\n" + indent(body, 4)
    }

    static func pretty(_ v: JSONValue) -> (ok: Bool, text: String) {
        switch v {
        case let .array(items):
            return (true, items.isEmpty ? "- empty -" : items.map { "* " + (($0.stringValue) ?? pythonish($0)) }.joined(separator: "\n"))
        case .object:
            if let ok = v["ok"] { return (true, indent(pretty(ok).text, 4)) }
            if let e = v["error"] { return (false, indent(pretty(e).text, 4)) }
            return (true, prettyJSON(v))
        case let .string(s):
            return (true, s)
        default:
            return (true, v.serialized())
        }
    }

    /// A list item as Python prints it (`* {'id': ...}` for a dict): JSON text is close enough.
    static func pythonish(_ v: JSONValue) -> String { v.serialized() }

    static func indent(_ text: String, _ n: Int) -> String {
        let pad = String(repeating: " ", count: n)
        return text.split(separator: "\n", omittingEmptySubsequences: false).map { pad + $0 }.joined(separator: "\n")
    }

    /// `json.dumps(v, sort_keys=True, indent=4)`.
    static func prettyJSON(_ v: JSONValue, level: Int = 0) -> String {
        let pad = String(repeating: " ", count: 4 * (level + 1)), end = String(repeating: " ", count: 4 * level)
        switch v {
        case let .object(members):
            if members.isEmpty { return "{}" }
            let sorted = members.sorted { $0.key < $1.key }
            return "{\n" + sorted.map { pad + JSONValue.string($0.key).serialized() + ": " + prettyJSON($0.value, level: level + 1) }.joined(separator: ",\n") + "\n" + end + "}"
        case let .array(items):
            if items.isEmpty { return "[]" }
            return "[\n" + items.map { pad + prettyJSON($0, level: level + 1) }.joined(separator: ",\n") + "\n" + end + "]"
        default:
            return v.serialized()
        }
    }
}

struct InspectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Ask the workers (Celerity and Python Celery alike) about their state: celery inspect.",
        discussion: """
        Commands:
        \(RemoteCommandSpec.listing(.inspect))

        Prints "->  <node>: OK" and each reply, then how many nodes answered; --json prints {node: reply}. Works with Celerity and Python Celery workers alike. The wait ends after --timeout, or once every node named with -d has replied.

        Exit status: 0 some node replied, 1 a node answered an error, 2 bad manifest or URL, 3 no node replied within --timeout (Celery's own CLI exits 69), 4 Redis cannot be reached, 6 Redis refused access, 64 bad command line (unknown command, bad argument).
        """
    )

    @Argument(help: ArgumentHelp("The inspect command, then its arguments.", valueName: "command"))
    var command: String

    @Argument(help: ArgumentHelp("Arguments of the command (e.g. task ids for query_task).", valueName: "arg"))
    var args: [String] = []

    @OptionGroup var remote: RemoteOptions
    @OptionGroup var connection: ConnectionOptions

    func validate() throws {
        let spec = try RemoteCommandSpec.named(command, .inspect)
        _ = try spec.arguments(args)
    }

    func run() async throws {
        let spec = try RemoteCommandSpec.named(command, .inspect)
        try await RemoteRun.run(spec, arguments: try spec.arguments(args), remote: remote, connection: connection)
    }
}

struct ControlCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "control",
        abstract: "Send the workers (Celerity and Python Celery alike) a remote-control command: celery control.",
        discussion: """
        Commands:
        \(RemoteCommandSpec.listing(.control))

        Arguments are sent under the names Celery's handlers read (pool_grow 2 → {"n": 2}; revoke ID → {"task_id": [ID], "terminate": false, "signal": "SIGTERM"}). A reply {"error": "..."} is shown as "->  <node>: ERROR" and makes the exit status 1.

        Exit status: 0 every node that replied agreed, 1 some node answered an error, 2 bad manifest or URL, 3 no node replied within --timeout (not for shutdown: workers do not reply to it), 4 Redis cannot be reached, 6 Redis refused access, 64 bad command line.
        """
    )

    @Argument(help: ArgumentHelp("The control command, then its arguments.", valueName: "command"))
    var command: String

    @Argument(help: ArgumentHelp("Arguments of the command (queue, N, task name, ids, ...).", valueName: "arg"))
    var args: [String] = []

    @Flag(name: .long, help: "revoke: also stop the task if it is running.")
    var terminate = false

    @Option(name: .long, help: ArgumentHelp("revoke --terminate: the signal (default SIGTERM).", valueName: "SIG"))
    var signal: String?

    @OptionGroup var remote: RemoteOptions
    @OptionGroup var connection: ConnectionOptions

    func validate() throws {
        let spec = try RemoteCommandSpec.named(command, .control)
        _ = try spec.arguments(args)
        if (terminate || signal != nil) && command != "revoke" { throw ValidationError("--terminate and --signal go with revoke only") }
        if signal != nil && !terminate { throw ValidationError("--signal needs --terminate") }
    }

    func run() async throws {
        let spec = try RemoteCommandSpec.named(command, .control)
        var arguments = try spec.arguments(args)
        if command == "revoke" {
            arguments.append(JSONMember("terminate", .bool(terminate)))
            arguments.append(JSONMember("signal", .string(signal ?? "SIGTERM")))
        }
        try await RemoteRun.run(spec, arguments: arguments, remote: remote, connection: connection)
    }
}
