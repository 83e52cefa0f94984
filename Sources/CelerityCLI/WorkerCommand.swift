import ArgumentParser
import Celerity
import CelerityBuiltins
import Foundation
import Logging
import RedisClient
import ServiceLifecycle

struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Consume queues and run their tasks.",
        discussion: """
        Example: celerity worker -Q add,factorial -n worker-add -c 4 -l info
        Each task's outcome is logged at debug level (-l debug); info logs a throughput summary every 10 s.
        Celery events: worker-online, worker-heartbeat (every 2 s) and worker-offline always; task events with -E.
        First SIGTERM or SIGINT: warm stop (no new tasks; those in flight get 30 s, then go back to the
        head of their queues); exit 0. A second one: cold stop (hand them back now).
        """
    )

    @Option(name: [.customShort("Q"), .long], help: ArgumentHelp("Comma-separated queues to consume (default: every queue of the manifest).", valueName: "queues"))
    var queues: String?

    @Option(name: [.customShort("n"), .long], help: ArgumentHelp("Node name; also names this worker's processing list (default: celerity@<host>).", valueName: "name"))
    var hostname: String?

    @Option(name: [.customShort("c"), .long], help: "Tasks run at once (default: number of CPU cores).")
    var concurrency: Int?

    @Option(name: .customLong("prefetch-multiplier"), help: "Messages held per execution slot, fetched ahead (Celery's worker_prefetch_multiplier). Use 1 for long tasks.")
    var prefetchMultiplier: Int = 4

    @Option(name: [.customShort("l"), .customLong("loglevel")], help: "Log level: trace, debug, info, warning, error, critical.")
    var logLevel: LogLevelOption = .info

    @Option(name: .customLong("shutdown-grace"), help: "Seconds tasks in flight get at a warm stop before they are handed back to their queues.")
    var shutdownGrace: Double = 30

    @Flag(name: [.customShort("E"), .customLong("events")], help: "Send task events (Celery's -E) for monitors such as Flower and `celery events` (default: defaults.events in the manifest, else off). Worker heartbeats are sent either way.")
    var events = false

    @Flag(name: [.customShort("B"), .customLong("beat")], help: "Also run a beat in this process (Celery's worker -B): the manifest's schedules are sent, exactly once per tick however many beats run.")
    var beat = false

    @OptionGroup var connection: ConnectionOptions

    func validate() throws {
        if let c = concurrency, c < 1 { throw ValidationError("--concurrency must be at least 1") }
        if prefetchMultiplier < 1 { throw ValidationError("--prefetch-multiplier must be at least 1") }
        if let q = queues, q.split(separator: ",").isEmpty { throw ValidationError("-Q needs at least one queue name") }
    }

    func run() async throws {
        let logger = Logs.bootstrap(logLevel)
        let manifest: Manifest
        let backend: ResultBackendConfig
        let brokerURL: RedisURL
        do {
            manifest = try connection.loadManifest(required: true)!
            backend = try connection.backend(manifest)
            brokerURL = try RedisURL(string: connection.brokerURL(manifest))
        } catch {
            throw badInput(error)
        }
        let qs = queues.map { $0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } } ?? manifest.queues
        if qs.isEmpty { throw fail("no queues to consume: the manifest declares no tasks and -Q was not given", .badInput) }
        let node = hostname ?? "celerity@\(ProcessInfo.processInfo.hostName)"
        var config = WorkerConfiguration(node: node, queues: qs, concurrency: concurrency ?? ProcessInfo.processInfo.activeProcessorCount,
                                         broker: brokerURL, resultBackend: backend)
        config.shutdownGrace = shutdownGrace
        config.prefetchMultiplier = prefetchMultiplier
        config.taskEvents = events || manifest.taskEvents
        config.history = manifest.history
        let worker: Worker
        do {
            worker = try Worker(config: config, manifest: manifest, builtins: Builtins.registry, logger: logger)
        } catch {
            throw fail(error.description)
        }
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: worker, successTerminationBehavior: .gracefullyShutdownGroup)]
        if beat {
            if manifest.schedules.isEmpty { throw fail("-B: \(manifest.path ?? "manifest") has no 'schedules' section: nothing for the beat to send", .badInput) }
            services.append(.init(service: BeatCommand.makeBeat(manifest, broker: brokerURL, node: "beat-\(node)", logger: logger), successTerminationBehavior: .gracefullyShutdownGroup))
        }
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(
            services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: Logger(label: "celerity.lifecycle")))
        // A worker that ends by itself (a remote `shutdown`) ends the group as a warm stop does.
        // The ServiceGroup turns the first SIGTERM/SIGINT into the warm stop; a second one (it
        // cannot list a signal as both graceful and cancelling) makes it cold: tasks handed back now.
        let signals = [SIGTERM, SIGINT].map { sig in
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { if worker.countStopSignal() >= 2 { worker.requestColdStop() } }
            source.resume()
            return source
        }
        defer { signals.forEach { $0.cancel() } }
        do {
            try await group.run()
        } catch let e as WorkerError {
            throw fail("worker \(node): \(e.message)", e.exitStatus)
        } catch let e as WorkerPermissionError {
            throw fail("worker \(node): \(e.message)", e.exitStatus)
        }
    }
}
