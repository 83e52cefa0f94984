import ArgumentParser
import Celerity
import Foundation
import Hummingbird
import Logging
import RedisClient

/// `celerity dashboard` (the `celerity` command runs this binary, found beside it): a web UI,
/// a JSON API and Prometheus metrics read from what Celerity keeps in Redis (queues,
/// processing lists, heartbeats, delayed, dead letters, revoked), not guessed from broadcasts.
@main
struct DashboardCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "celerity dashboard",
        abstract: "Serve the web dashboard, its JSON API and Prometheus metrics.",
        discussion: """
        Pages: / (workers, queues, totals), /dead (dead letters: retry, delete), /delayed, /tasks/ID.
        API: /api/overview, /api/dead, /api/delayed, /api/tasks/ID and the POST actions (docs/dashboard.md).
        Metrics: /metrics (Prometheus text format). Health: /healthz.

        Binds 127.0.0.1 unless --host says otherwise. Bound elsewhere, it needs credentials from the
        environment: CELERITY_DASHBOARD_TOKEN (a bearer token; also accepted as the password of basic
        auth) or CELERITY_DASHBOARD_USER and CELERITY_DASHBOARD_PASSWORD. Actions are POSTs that carry
        the page's CSRF token.

        Exit status: 0 stopped, 2 bad arguments or manifest or unsafe binding.
        """
    )

    @Option(name: .long, help: ArgumentHelp("Address to bind (default 127.0.0.1).", valueName: "addr"))
    var host = "127.0.0.1"

    @Option(name: .long, help: ArgumentHelp("Port (default 5566).", valueName: "n"))
    var port = 5566

    @Option(name: .long, help: ArgumentHelp("Path of the manifest (default ./tasks.yaml when it exists); its plugin programs need not be on this machine.", valueName: "file"))
    var manifest: String?

    @Option(name: .long, help: ArgumentHelp("Broker URL (default: $CELERITY_BROKER_URL, the manifest's, redis://localhost:6379/0).", valueName: "url"))
    var broker: String?

    @Option(name: .customLong("result-backend"), help: ArgumentHelp("Redis result backend URL to read task results from (default: the broker).", valueName: "url"))
    var resultBackend: String?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, warning, error.")
    var logLevel = "info"

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be between 0 and 65535") }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level must be one of trace, debug, info, warning, error") }
    }

    func run() async throws {
        let env = ProcessInfo.processInfo.environment
        var logger = Logger(label: "celerity.dashboard")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info

        let access: Access
        do {
            access = try Access(host: host, environment: env)
        } catch let e as Access.Unsafe {
            FileHandle.standardError.write(Data("celerity dashboard: \(e.message)\n".utf8))
            throw ExitCode(2)
        }

        let path = manifest ?? env["CELERITY_MANIFEST"] ?? (FileManager.default.fileExists(atPath: "tasks.yaml") ? "tasks.yaml" : nil)
        var loaded: Manifest?
        if let path {
            // For looking, not running: plugin programs need not be here, and none is started
            // (no plugin_dirs discovery; the queues of live workers come from their heartbeats).
            do { loaded = try Manifest.load(path: path, discover: false, checkPrograms: false) } catch {
                FileHandle.standardError.write(Data("celerity dashboard: \(path): \(error)\n".utf8))
                throw ExitCode(2)
            }
        }
        let brokerURL = RedisURL.withMasterName(broker ?? env["CELERITY_BROKER_URL"] ?? loaded?.broker ?? "redis://localhost:6379/0", loaded?.sentinelMasterName)
        let state: ClusterState
        do {
            state = try ClusterState(broker: brokerURL, resultBackend: (resultBackend ?? env["CELERITY_RESULT_BACKEND"]).map { RedisURL.withMasterName($0, loaded?.sentinelMasterName) }, manifest: loaded)
        } catch {
            FileHandle.standardError.write(Data("celerity dashboard: \(error)\n".utf8))
            throw ExitCode(2)
        }
        let router = Routes.make(state: state, access: access, logger: logger)
        let app = Application(router: router, configuration: .init(address: .hostname(host, port: port), serverName: "celerity-dashboard"),
                              onServerRunning: { channel in
                                  let bound = channel.localAddress?.port ?? port
                                  let line = "celerity dashboard: http://\(host.contains(":") ? "[\(host)]" : host):\(bound)/ (broker \(state.brokerDisplay))\n"
                                  FileHandle.standardOutput.write(Data(line.utf8))
                              }, logger: logger)
        try await app.runService()
    }
}
