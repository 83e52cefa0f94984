import ArgumentParser
import Celerity
import Foundation
import RedisClient

struct CallCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "call",
        abstract: "Send a task call and print its result as JSON.",
        discussion: """
        Each argument is read as JSON when it is valid JSON (4, 2.5, "text", [1,2], {"a":1}, null, true),
        otherwise as a plain string. Exit status: 0 on SUCCESS (the result on stdout); 1 on FAILURE or
        REVOKED (type and message on stderr); 2 for a bad manifest or URL; 3 on time-out; 4 when Redis
        cannot be reached; 6 when Redis refuses access (ACL permission missing, or authentication failed).
        With --no-wait nothing but the send is needed (no result subscription).
        Example: celerity call add_module.tasks.add 4 6

        A chain (Celery's canvas): each --then starts the next step, which gets the previous step's
        result as its first argument; the result printed is the last step's (docs/workflows.md).
        Example: celerity call add_module.tasks.add 1 2 --then add_module.tasks.add 3 --then add_module.tasks.add 4
        The TASK may also name a workflow declared under `workflows:` in tasks.yaml; ARGS go to its first calls.
        """
    )

    @Argument(help: "The task name, e.g. add_module.tasks.add.")
    var task: String

    @Argument(parsing: .allUnrecognized, help: "Positional arguments of the task (JSON when they parse as JSON; negative numbers work).")
    var args: [String] = []

    @Option(name: .long, help: ArgumentHelp("Keyword arguments as a JSON object.", valueName: "json"))
    var kwargs: String?

    @Option(name: .long, help: "Queue to send to (default: the manifest's route for the task, else 'celery').")
    var queue: String?

    @Option(name: .long, help: "Run no earlier than this many seconds from now.")
    var countdown: Double?

    @Option(name: .long, help: ArgumentHelp("Run no earlier than this ISO 8601 time (e.g. 2026-11-25T12:00:00+00:00).", valueName: "time"))
    var eta: String?

    @Option(name: .long, help: "Revoke the call if it has not started within this many seconds.")
    var expires: Double?

    @Option(name: .long, help: "Priority 0-9 (on Redis, 0 is served first, as in Celery).")
    var priority: Int = 0

    @Flag(name: .customLong("no-wait"), help: "Print the task id and return without waiting for the result.")
    var noWait = false

    @Option(name: .long, help: "Seconds to wait for the result.")
    var timeout: Double = 60

    @Flag(name: .customLong("help-task"), help: "Print how to call TASK (its usage line and parameters, from its schema) and exit without sending.")
    var helpTask = false

    @OptionGroup var connection: ConnectionOptions

    func validate() throws {
        if !(0...9).contains(priority) { throw ValidationError("--priority must be between 0 and 9") }
        if timeout <= 0 { throw ValidationError("--timeout must be positive") }
        if let k = kwargs {
            guard let v = try? JSONValue(parsing: k), v.objectValue != nil else { throw ValidationError("--kwargs must be a JSON object, e.g. '{\"n\": 5}'") }
        }
        if let e = eta, CeleryDate.parse(e) == nil { throw ValidationError("--eta '\(e)' is not an ISO 8601 time") }
    }

    /// A command-line argument as JSON when it parses, else as a string.
    static func value(_ s: String) -> JSONValue {
        (try? JSONValue(parsing: s)) ?? .string(s)
    }

    func run() async throws {
        let manifest: Manifest?
        let client: CelerityClient
        do {
            manifest = try await connection.loadManifest(required: false)
            let backend = try connection.backend(manifest)
            client = try CelerityClient(broker: RedisURL(string: connection.brokerURL(manifest)), backend: backend, manifest: manifest)
        } catch {
            throw badInput(error)
        }
        if helpTask {
            guard let manifest, manifest.tasks[task] != nil || manifest.workflows[task] != nil else { throw DescribeCommand.unknownTask(task, in: manifest) }
            if let spec = manifest.tasks[task] { print(DescribeCommand.callHelp(spec), terminator: "") } else { print("\(task): a workflow (\(manifest.workflows[task]!.summary)); its arguments go to its first calls") }
            return
        }
        var options = CelerityClient.SendOptions(queue: queue, countdown: countdown, priority: priority)
        options.eta = eta.flatMap(CeleryDate.parse)
        options.expires = expires.map { Date().addingTimeInterval($0) }
        let kw = kwargs.flatMap { try? JSONValue(parsing: $0).objectValue } ?? []
        // `--then TASK ARGS...` steps (a chain), or a workflow declared in tasks.yaml.
        let steps = Self.steps(args)
        if steps.count > 1 || manifest?.workflows[task] != nil {
            let workflow: Signature
            let first = steps[0].map(CallCommand.value)
            if let declared = manifest?.workflows[task] {
                guard steps.count == 1 else { throw fail("--then cannot follow a declared workflow ('\(task)')", .badInput) }
                workflow = declared.signature(client: client)
            } else {
                // The first step's arguments are all known: checked here (the next steps get
                // the previous result first; the worker checks those).
                do throws(ArgumentError) { try client.check(task, args: first, kwargs: kw) } catch { throw Self.refused(error, manifest) }
                var calls = [client.signature(task, args: first, kwargs: kw, options: options)]
                for step in steps.dropFirst() {
                    guard let name = step.first else { throw fail("--then needs a task name", .badInput) }
                    calls.append(client.signature(name, args: step.dropFirst().map(CallCommand.value)))
                }
                workflow = client.chain(calls)
            }
            try await runWorkflow(client, workflow, args: manifest?.workflows[task] != nil ? first : [])
            return
        }
        let message = client.message(task, args: args.map(CallCommand.value), kwargs: kw, options: options)
        // The task's argument schema: a bad call is stopped here, before anything is queued.
        do throws(ArgumentError) {
            try client.check(task, args: message.args, kwargs: message.kwargs)
        } catch {
            throw Self.refused(error, manifest)
        }
        if noWait {
            // Only the send: no result subscription (a client allowed to send but not to read
            // results can still use --no-wait).
            let first: String?
            do { first = try await client.publish(message) } catch { throw fail(error) }
            if let first { Self.duplicateNotice(first) }
            print(first ?? message.id)
            return
        }
        // --timeout bounds everything from here: the result subscription, then the wait.
        let deadline = Date().addingTimeInterval(timeout)
        do {
            try await client.subscribeToResults(timeout: .milliseconds(Int(timeout * 1000)))
            let handle = try await client.sendMany([message])[0]
            if handle.isDuplicate { Self.duplicateNotice(handle.id) }
            let value = try await handle.get(timeout: .milliseconds(Int(max(deadline.timeIntervalSinceNow, 0.001) * 1000)))
            print(value.serialized())
        } catch let f as TaskFailure {
            var text = "\(f.type): \(f.message)"
            if let tb = f.traceback, !tb.isEmpty { text += "\n" + tb }
            throw fail(text, f.exitStatus)
        } catch {
            throw fail(error)
        }
    }
}

extension CallCommand {
    /// A call its task's schema refuses: the message, the path and the usage line on stderr, exit 2.
    static func refused(_ error: ArgumentError, _ manifest: Manifest?) -> ExitCode {
        let usage = manifest?.tasks[error.task]?.params.map { "\nusage: \($0.usage(task: error.task)) (celerity describe \(error.task))" } ?? ""
        return fail("\(error.description)\(error.path.map { "\npath: \($0)" } ?? "")\(usage)", .badInput)
    }

    /// A unique task's call that was not enqueued: said on stderr (the result, or the id with
    /// --no-wait, is the first call's, on stdout as usual).
    static func duplicateNotice(_ first: String) {
        FileHandle.standardError.write(Data("duplicate of \(first): not enqueued (unique task still queued or running)\n".utf8))
    }

    /// The arguments split at each `--then`: the first call's args, then each next step's
    /// task name and args.
    static func steps(_ args: [String]) -> [[String]] {
        var out: [[String]] = [[]]
        for a in args {
            if a == "--then" { out.append([]) } else { out[out.count - 1].append(a) }
        }
        return out
    }

    func runWorkflow(_ client: CelerityClient, _ workflow: Signature, args: [JSONValue]) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        do {
            if !noWait { try await client.subscribeToResults(timeout: .milliseconds(Int(timeout * 1000))) }
            let handle = try await client.apply(workflow, args: args)
            if noWait {
                print(handle.id ?? "")
                return
            }
            let value = try await handle.get(timeout: .milliseconds(Int(max(deadline.timeIntervalSinceNow, 0.001) * 1000)))
            print(value.serialized())
        } catch let f as TaskFailure {
            var text = "\(f.type): \(f.message)"
            if let tb = f.traceback, !tb.isEmpty { text += "\n" + tb }
            throw fail(text, f.exitStatus)
        } catch {
            throw fail(error)
        }
    }
}

struct ResultCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "result",
        abstract: "Show the state and result of a task by id (Redis result backend).",
        discussion: """
        Prints the result as JSON on SUCCESS (exit 0); FAILURE or REVOKED on stderr (exit 1). A task that has
        no result yet (PENDING, STARTED, RETRY) is "no result (yet)": its state on stderr, exit 3, as when
        --wait runs out of --timeout. 2: bad manifest or URL; 4: Redis cannot be reached.
        """
    )

    @Argument(help: "The task id.")
    var id: String

    @Flag(name: .long, help: "Wait until the task is ready.")
    var wait = false

    @Option(name: .long, help: "Seconds to wait with --wait.")
    var timeout: Double = 60

    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        let client: CelerityClient
        do {
            let manifest = try await connection.loadManifest(required: false)
            client = try CelerityClient(broker: RedisURL(string: connection.brokerURL(manifest)), backend: try connection.backend(manifest), manifest: manifest)
        } catch {
            throw badInput(error)
        }
        do {
            let meta: ResultMeta?
            if wait { meta = try await client.waitForResult(id, timeout: .milliseconds(Int(timeout * 1000))) } else { meta = try await client.meta(of: id) }
            guard let meta else { throw fail("PENDING (no result stored for \(id))", .noResult) }
            switch meta.state {
            case .success: print(meta.result.serialized())
            case .failure, .revoked:
                let f = meta.failure!
                throw fail("\(meta.state.rawValue) \(f.type): \(f.message)", f.exitStatus)
            default: throw fail("\(meta.state.rawValue) (no result yet for \(id))", .noResult)
            }
        } catch let e as ExitCode {
            throw e
        } catch {
            throw fail(error)
        }
    }
}
