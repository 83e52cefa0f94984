import ArgumentParser
import Celerity
import CelerityBuiltins
import Foundation
import Logging
import RedisClient

@main
struct CelerityCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "celerity",
        abstract: "A distributed task runner on Redis that speaks Celery's protocol.",
        discussion: """
        Tasks are declared in tasks.yaml (name → queue → built-in Swift handler or plugin program).
        Broker: --broker > $CELERITY_BROKER_URL > the manifest's 'broker' > redis://localhost:6379/0.
        Result backend: --result-backend > $CELERITY_RESULT_BACKEND > the manifest's 'result_backend' > the broker's Redis.
        Manifest: --manifest > $CELERITY_MANIFEST > ./tasks.yaml.

        Exit status, the same for every command:
          0  success
          1  the task failed (FAILURE or REVOKED), or what the command checks did not pass
             (plugin check, dead show/retry of entries that are not there, a worker that failed)
          2  bad manifest, URL or input
          3  no result (yet): --timeout ran out, or the task has not finished (result without --wait);
             inspect/control: no node replied within --timeout (Celery's own CLI exits 69 for it)
          4  Redis could not be reached
          6  Redis refused access (an ACL permission is missing, or authentication failed)
          64 bad command line (unknown option, out-of-range value)

        A URL with a password given as --broker is visible to every local user (ps); prefer $CELERITY_BROKER_URL.
        """,
        version: CelerityVersion.string,
        subcommands: [WorkerCommand.self, UpCommand.self, BeatCommand.self, ScheduleCommand.self, CallCommand.self, MapCommand.self, ResultCommand.self, RevokeCommand.self, DeadCommand.self, QueueCommand.self, StatusCommand.self, InspectCommand.self, ControlCommand.self, EventsCommand.self, CheckCommand.self, DescribeCommand.self, PluginCommand.self, DashboardCommand.self]
    )
}

/// Options shared by every command that talks to Redis.
struct ConnectionOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Path of the manifest.", valueName: "file"))
    var manifest: String?

    @Option(name: .long, help: ArgumentHelp("Broker URL: redis://[user:password@]host:port/db or unix:///path.sock. A password here is visible to every local user in ps: prefer $CELERITY_BROKER_URL.", valueName: "url"))
    var broker: String?

    @Option(name: .customLong("result-backend"), help: ArgumentHelp("Result backend: redis://…, rpc:// or none.", valueName: "url"))
    var resultBackend: String?

    var environment: [String: String] { ProcessInfo.processInfo.environment }

    /// The manifest path to use, or nil if none is named and ./tasks.yaml does not exist.
    var manifestPath: String? {
        if let m = manifest ?? environment["CELERITY_MANIFEST"] { return m }
        return FileManager.default.fileExists(atPath: "tasks.yaml") ? "tasks.yaml" : nil
    }

    /// Loads the manifest on a Dispatch thread: discovery (`plugin_dirs`) may start plugin
    /// processes and wait for their answers, which must not hold up Swift's cooperative pool.
    func loadManifest(required: Bool) async throws -> Manifest? {
        let options = self
        return try await withCheckedThrowingContinuation { (c: CheckedContinuation<Manifest?, any Error>) in
            DispatchQueue.global().async { c.resume(with: Result { try options.loadManifestNow(required: required) }) }
        }
    }

    /// The same, on the calling thread (never Swift's cooperative pool).
    func loadManifestNow(required: Bool) throws -> Manifest? {
        guard let path = manifestPath else {
            if required { throw ValidationError("no manifest: pass --manifest FILE, set CELERITY_MANIFEST, or run where tasks.yaml is") }
            return nil
        }
        let registry = Builtins.registry
        return try Manifest.load(path: path, builtins: registry.names).withBuiltinSchemas(registry)
    }

    func brokerURL(_ manifest: Manifest?) -> String {
        let url = broker ?? environment["CELERITY_BROKER_URL"] ?? manifest?.broker ?? "redis://localhost:6379/0"
        return RedisURL.withMasterName(url, manifest?.sentinelMasterName)
    }

    func backend(_ manifest: Manifest?) throws -> ResultBackendConfig {
        // The manifest's expires and extended hold whichever URL is used.
        let expires = manifest?.resultBackend?.expires ?? 86400
        let extended = manifest?.resultBackend?.extended ?? false
        if let b = resultBackend ?? environment["CELERITY_RESULT_BACKEND"] {
            var config = try ResultBackendConfig.parse(RedisURL.withMasterName(b, manifest?.sentinelMasterName), expires: expires).resolved(broker: brokerURL(manifest))
            config.extended = extended
            return config
        }
        if var b = manifest?.resultBackend {
            if case let .redis(u) = b.kind { b.kind = .redis(RedisURL.withMasterName(u, manifest?.sentinelMasterName)) }
            return b.resolved(broker: brokerURL(manifest))
        }
        return ResultBackendConfig(kind: .redis(brokerURL(manifest)), expires: expires, extended: extended)
    }
}

enum LogLevelOption: String, ExpressibleByArgument, CaseIterable {
    case trace, debug, info, warning, error, critical
    var level: Logger.Level {
        switch self {
        case .trace: return .trace
        case .debug: return .debug
        case .info: return .info
        case .warning: return .warning
        case .error: return .error
        case .critical: return .critical
        }
    }
}

enum Logs {
    static func bootstrap(_ level: LogLevelOption) -> Logger {
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level.level
            return h
        }
        return Logger(label: "celerity")
    }
}

/// An error while reading the manifest or the URLs, before anything is sent: exit 2, whatever
/// the error.
func badInput(_ error: any Error) -> ExitCode {
    if let e = error as? RedisError, e.code == .invalidURL { return fail("invalid URL: \(e.message)", .badInput) }
    return fail("\(error)", .badInput)
}

/// Ends a command for `error`: its text on stderr, and the exit status it carries (`ExitCoded`:
/// 3 a time-out, 6 access refused by Redis, 4 other Redis trouble, ...), or `otherwise` for
/// an error that carries none (by default 4: it came while talking to Redis).
func fail(_ error: any Error, otherwise: CelerityExit = .redisUnreachable) -> ExitCode {
    fail("\(error)", CelerityExit(error, otherwise: otherwise))
}

/// Ends a command: `message` on stderr, exit `status`.
func fail(_ message: String, _ status: CelerityExit = .failed) -> ExitCode {
    FileHandle.standardError.write(Data((message + "\n").utf8))
    return ExitCode(status)
}

extension ExitCode {
    init(_ status: CelerityExit) { self.init(status.rawValue) }
}
