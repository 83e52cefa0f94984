import ArgumentParser
import Celerity
import Foundation
import Logging
import RedisClient
import ServiceLifecycle
import Subprocess
import Synchronization
import SystemPackage

struct UpCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up",
        abstract: "Start the worker groups of the manifest (and a private Redis if none answers).",
        discussion: """
        Starts one `celerity worker` process per entry of the manifest's `workers:` section, with its
        queues and concurrency, and one `celerity beat` when the manifest has `schedules:`; prefixes
        their log lines with the group name ("beat" for the beat). When the broker URL is local and
        nothing answers there, a private redis-server is started on that port first (no persistence;
        never for a TLS rediss:// broker) and stopped at the end. A worker or beat that exits on its own is restarted with backoff.
        SIGINT/SIGTERM stops every worker gracefully (they finish their tasks in flight), then Redis.
        SIGHUP is passed on to every worker (each reloads the manifest); --reload starts them with --reload.
        """
    )

    @Option(name: [.customShort("l"), .customLong("loglevel")], help: "Log level of the workers: trace, debug, info, warning, error, critical.")
    var logLevel: LogLevelOption = .info

    @Flag(name: [.customShort("E"), .customLong("events")], help: "Start the workers with task events on (celerity worker -E; Flower, celery events).")
    var taskEvents = false

    @Flag(name: .customLong("reload"), help: "Start the workers with --reload: each reloads the manifest when it or a plugin file changes.")
    var reload = false

    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        let logger = Logs.bootstrap(logLevel)
        let manifest: Manifest
        let brokerString: String
        let broker: RedisURL
        let backend: ResultBackendConfig
        do {
            manifest = try await connection.loadManifest(required: true)!
            brokerString = connection.brokerURL(manifest)
            broker = try RedisURL(string: brokerString)
            backend = try connection.backend(manifest)
        } catch {
            throw badInput(error)
        }
        if manifest.workers.isEmpty { throw fail("\(manifest.path ?? "manifest"): no 'workers' section: nothing to start", .badInput) }
        let service = UpService(manifest: manifest, brokerString: brokerString, broker: broker, backend: backend, logLevel: logLevel, taskEvents: taskEvents,
                                reload: reload, logger: logger)
        // SIGHUP: every worker reloads (the beat reads its schedules at start; it is left alone).
        signal(SIGHUP, SIG_IGN)
        let hangup = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        hangup.setEventHandler { service.forward(SIGHUP) }
        hangup.resume()
        defer { hangup.cancel() }
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(
            services: [.init(service: service)], gracefulShutdownSignals: [.sigterm, .sigint], logger: Logger(label: "celerity.lifecycle")))
        try await group.run()
        if let e = service.failure.withLock({ $0 }) { throw fail(e) }
    }
}

/// Supervises the worker processes of `celerity up` (and the private redis-server).
final class UpService: Service, Sendable {
    let manifest: Manifest
    let brokerString: String
    let broker: RedisURL
    let backend: ResultBackendConfig
    let logLevel: LogLevelOption
    /// `-E`: the workers send task events.
    let taskEvents: Bool
    /// `--reload`: so do the workers.
    let reload: Bool
    /// The worker processes running now, by group name.
    let workerPIDs = Mutex<[String: pid_t]>([:])
    let logger: Logger
    let stopping = Mutex(false)
    let failure = Mutex<String?>(nil)
    /// Set after every worker has stopped: then the private Redis goes too.
    let redisStop = Mutex(false)

    init(manifest: Manifest, brokerString: String, broker: RedisURL, backend: ResultBackendConfig, logLevel: LogLevelOption, taskEvents: Bool = false, reload: Bool = false,
         logger: Logger) {
        self.manifest = manifest
        self.reload = reload
        self.taskEvents = taskEvents
        self.brokerString = brokerString
        self.broker = broker
        self.backend = backend
        self.logLevel = logLevel
        self.logger = logger
    }

    var isStopping: Bool { stopping.withLock { $0 } }

    func run() async throws {
        await withGracefulShutdownHandler {
            await self.supervise()
        } onGracefulShutdown: {
            self.logger.info("stopping all workers")
            self.stopping.withLock { $0 = true }
        }
    }

    private func supervise() async {
        await withDiscardingTaskGroup { redisGroup in
            if await needsPrivateRedis() {
                guard case let .tcp(host, port) = broker.endpoint else { return }
                logger.info("no Redis answers at \(broker); starting a private redis-server on \(host):\(port)")
                redisGroup.addTask {
                    await self.runChild(name: "redis", executable: "redis-server",
                                        arguments: ["--port", String(port), "--bind", host == "localhost" ? "127.0.0.1" : host, "--save", "", "--appendonly", "no"],
                                        restart: false, stop: { self.redisStop.withLock { $0 } })
                }
                if !(await waitForRedis(seconds: 10)) {
                    failure.withLock { $0 = "the private redis-server did not answer at \(broker) within 10 s" }
                    self.redisStop.withLock { $0 = true }
                    return
                }
            }
            let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
            await withDiscardingTaskGroup { workers in
                // The broker and result backend URLs may hold a password: they go to the workers in
                // their environment (readable by the same user only), never on their command lines
                // (which every local user sees in `ps`).
                let environment = UpService.workerEnvironment(broker: brokerString, backend: backend)
                for g in manifest.workers {
                    var args = ["worker", "-Q", g.queues.joined(separator: ","), "-n", "\(g.name)@\(ProcessInfo.processInfo.hostName)",
                                "-c", String(g.concurrency), "-l", logLevel.rawValue]
                    if taskEvents { args.append("-E") }
                    if reload { args.append("--reload") }
                    if let path = manifest.path { args += ["--manifest", path] }
                    workers.addTask {
                        await self.runChild(name: g.name, executable: exe, arguments: args, environment: environment, restart: true, stop: { self.isStopping },
                                            onStart: { pid in self.workerPIDs.withLock { $0[g.name] = pid } })
                    }
                }
                if !manifest.schedules.isEmpty {
                    // One beat for the manifest's schedules (more would be harmless: each tick is sent once).
                    var args = ["beat", "-n", "beat@\(ProcessInfo.processInfo.hostName)", "-l", logLevel.rawValue]
                    if let path = manifest.path { args += ["--manifest", path] }
                    workers.addTask {
                        await self.runChild(name: "beat", executable: exe, arguments: args, environment: environment, restart: true, stop: { self.isStopping })
                    }
                }
            }
            logger.info("all workers stopped")
            self.redisStop.withLock { $0 = true }
        }
    }

    /// What the workers get in their environment: the URLs they would otherwise take from
    /// `--broker`/`--result-backend` (which `celerity worker` reads as CELERITY_BROKER_URL and
    /// CELERITY_RESULT_BACKEND, and which must not appear on a command line).
    static func workerEnvironment(broker: String, backend: ResultBackendConfig) -> [Environment.Key: String?] {
        let result: String
        switch backend.kind {
        case let .redis(u): result = u
        case .rpc: result = "rpc://"
        case .none: result = "none"
        case .sameAsBroker: result = broker
        }
        return ["CELERITY_BROKER_URL": broker, "CELERITY_RESULT_BACKEND": result]
    }

    private func needsPrivateRedis() async -> Bool {
        // A TLS broker (rediss://) is never replaced by a private server: that one would be
        // plain, without the certificates the URL expects.
        guard broker.isLocal, case .tcp = broker.endpoint, broker.tls == nil else { return false }
        let probe = Redis(url: broker, label: "up-probe", connectTimeout: 1)
        do { try await probe.ping(); return false } catch let e as RedisError where e.code == .connection { return true } catch { return false }
    }

    private func waitForRedis(seconds: Double) async -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let probe = Redis(url: broker, label: "up-probe", connectTimeout: 1)
            if (try? await probe.ping()) != nil { return true }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return false
    }

    /// Runs one child process with its output prefixed by `name`; restarts it with backoff when
    /// it exits on its own (if `restart`); on `stop()` sends SIGTERM, then SIGKILL after 60 s.
    /// Sends `signal` to every worker process running now.
    func forward(_ signal: Int32) {
        let pids = workerPIDs.withLock { $0 }
        logger.info("passing \(signal == SIGHUP ? "SIGHUP" : "signal \(signal)") on to the workers", metadata: ["workers": .string(pids.keys.sorted().joined(separator: ","))])
        for pid in pids.values where pid > 0 { _ = kill(pid, signal) }
    }

    private func runChild(name: String, executable: String, arguments: [String], environment: [Environment.Key: String?] = [:], restart: Bool,
                          stop: @escaping @Sendable () -> Bool, onStart: @escaping @Sendable (pid_t) -> Void = { _ in }) async {
        var backoff = Backoff(first: 0.5, max: 30)
        while !stop() {
            let started = Date()
            do {
                let result = try await Subprocess.run(
                    executable.contains("/") ? .path(FilePath(executable)) : .name(executable),
                    arguments: Arguments(arguments),
                    environment: .inherit.updating(environment),
                    input: .none,
                    output: .sequence,
                    error: .combinedWithOutput
                ) { execution in
                    onStart(execution.processIdentifier.value)
                    return try await withThrowingTaskGroup(of: Bool.self) { group in
                        group.addTask {
                            for try await line in execution.standardOutput.strings() {
                                FileHandle.standardOutput.write(Data("[\(name)] \(line)\n".utf8))
                            }
                            return true
                        }
                        group.addTask {
                            while !stop() { try await Task.sleep(for: .milliseconds(100)) }
                            try? execution.send(signal: .terminate)
                            try await Task.sleep(for: .seconds(60))
                            try? execution.send(signal: .kill)
                            return false
                        }
                        // Normally the output ends first (the process is exiting); then the stopper is
                        // cancelled. The stopper ends first only after it had to SIGKILL.
                        _ = try await group.next()
                        group.cancelAll()
                    }
                }
                onStart(0)   // gone: no signal for it until it runs again
                if stop() { return }
                logger.error("\(name) exited unexpectedly (\(result.terminationStatus)); restarting in \(backoff.current) s")
            } catch {
                if stop() { return }
                logger.error("\(name) could not be started: \(error); retrying in \(backoff.current) s")
                if !restart { failure.withLock { $0 = "\(name) could not be started: \(error)" }; return }
            }
            if !restart { return }
            if Date().timeIntervalSince(started) > 30 { backoff.reset() }
            try? await Task.sleep(for: .milliseconds(Int(backoff.next() * 1000)))
        }
    }
}
