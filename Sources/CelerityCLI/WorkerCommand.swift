import ArgumentParser
import Celerity
import CelerityBuiltins
import Foundation
import Logging
import RedisClient
import ServiceLifecycle
import Synchronization

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
        SIGHUP (or `celery control pool_restart`): reload the manifest (with its plugins) without
        stopping; --reload also does when the manifest or a plugin file changes (docs/plugins.md,
        "Hot reload").
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

    @Flag(name: .customLong("reload"), help: "Reload the manifest when it or a plugin file changes (polled every second; as SIGHUP does).")
    var reload = false

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
            manifest = try await connection.loadManifest(required: true)!
            backend = try connection.backend(manifest)
            brokerURL = try RedisURL(string: connection.brokerURL(manifest))
        } catch {
            throw badInput(error)
        }
        logDiscovery(manifest, logger)
        let qs = queues.map { $0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } } ?? manifest.queues
        if qs.isEmpty { throw fail("no queues to consume: the manifest declares no tasks and -Q was not given", .badInput) }
        let node = hostname ?? "celerity@\(ProcessInfo.processInfo.hostName)"
        var config = WorkerConfiguration(node: node, queues: qs, concurrency: concurrency ?? ProcessInfo.processInfo.activeProcessorCount,
                                         broker: brokerURL, resultBackend: backend)
        config.queuesFromManifest = queues == nil
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
        // Reloads: SIGHUP, `pool_restart`, and with --reload a change of a watched file.
        let connection = self.connection
        let reloader = ManifestReloader(worker: worker, logger: logger, watched: manifest.watchedFiles) {
            try connection.loadManifestNow(required: true)!
        }
        worker.onReloadRequest { reloader.trigger("pool_restart") }
        signal(SIGHUP, SIG_IGN)
        let hangup = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        hangup.setEventHandler { reloader.trigger("SIGHUP") }
        hangup.resume()
        defer { hangup.cancel() }
        let watcher = reload ? reloader.watch() : nil
        defer { watcher?.cancel() }
        do {
            try await group.run()
        } catch let e as WorkerError {
            throw fail("worker \(node): \(e.message)", e.exitStatus)
        } catch let e as WorkerPermissionError {
            throw fail("worker \(node): \(e.message)", e.exitStatus)
        }
    }
}

/// Loads the manifest again and hands it to the worker, one reload at a time, on a queue of
/// its own (loading runs plugin processes for discovery: never on Swift's cooperative pool).
/// Triggers that come while one is under way make one more reload after it, not one each.
/// With `watch()`, polls the watched files every second (size, mtime, inode) and reloads once
/// they have stayed the same for half a second after a change.
final class ManifestReloader: Sendable {
    let worker: Worker
    let logger: Logger
    let load: @Sendable () throws -> Manifest
    private let queue = DispatchQueue(label: "celerity.reload")
    private let state: Mutex<State>

    private struct State {
        var pending = false
        var watched: [String]
        var stamps: [String: FileStamp?]
        /// When the stamps last changed and are still to be reloaded for.
        var changedAt: Date?
        var tick = 0
    }

    init(worker: Worker, logger: Logger, watched: [String], load: @escaping @Sendable () throws -> Manifest) {
        self.worker = worker
        self.logger = logger
        self.load = load
        state = Mutex(State(watched: watched, stamps: FileStamp.of(watched)))
    }

    /// Asks for a reload (`why` is logged).
    func trigger(_ why: String) {
        let queued = state.withLock { s -> Bool in
            if s.pending { return false }
            s.pending = true
            return true
        }
        guard queued else { return }
        queue.async { self.run(why) }
    }

    private func run(_ why: String) {
        // What the files are as this load reads them: the watcher reloads again only for
        // changes made after this point (not for the ones a SIGHUP reload takes in now).
        let seen = state.withLock { s in
            s.pending = false
            return FileStamp.of(s.watched)
        }
        logger.info("reloading the manifest", metadata: ["reason": .string(why)])
        let manifest: Manifest
        do {
            manifest = try load()
        } catch {
            logger.error("reload failed: the manifest did not load; the tasks loaded before are still served", metadata: ["error": .string("\(error)")])
            return
        }
        logDiscovery(manifest, logger)
        // Watch what the new manifest names (plugins added or removed).
        let watched = manifest.watchedFiles
        state.withLock { s in
            if s.watched != watched {
                s.watched = watched
                s.stamps = FileStamp.of(watched)
            } else {
                s.stamps = seen
            }
            s.changedAt = nil
        }
        // Wait on this queue (not the cooperative pool) until the worker swapped the table and
        // its retired pools stopped: the next reload starts after this one.
        let done = DispatchSemaphore(value: 0)
        let worker = self.worker, logger = self.logger
        Task {
            do { try await worker.reload(manifest) } catch {
                logger.error("reload refused; the tasks loaded before are still served", metadata: ["error": .string("\(error)")])
            }
            done.signal()
        }
        done.wait()
    }

    /// Polls the watched files every second from now on, until the timer returned is cancelled.
    func watch() -> any DispatchSourceTimer {
        let timer = DispatchSource.makeTimerSource(queue: queue)
        timer.schedule(deadline: .now() + .seconds(1), repeating: .milliseconds(500))
        timer.setEventHandler { [self] in
            let due = state.withLock { s -> Bool in
                s.tick += 1
                if let at = s.changedAt {
                    // Debounce: reload once nothing changed for half a second.
                    let now = FileStamp.of(s.watched)
                    if now != s.stamps { s.stamps = now; s.changedAt = Date(); return false }
                    if Date().timeIntervalSince(at) >= 0.5 { s.changedAt = nil; return true }
                    return false
                }
                guard s.tick % 2 == 0 else { return false }   // every second while nothing changes
                let now = FileStamp.of(s.watched)
                if now != s.stamps { s.stamps = now; s.changedAt = Date() }
                return false
            }
            if due { trigger("watched file changed") }
        }
        timer.resume()
        logger.info("watching the manifest and plugin files for changes", metadata: ["files": .stringConvertible(state.withLock { $0.watched.count })])
        return timer
    }
}

/// What discovery found (info) and the plugins it could not use (a warning each, with the reason).
func logDiscovery(_ m: Manifest, _ logger: Logger) {
    let d = m.discovery
    guard !d.directories.isEmpty else { return }
    logger.info("plugins discovered", metadata: [
        "folders": .string(d.directories.map(\.path).joined(separator: ",")), "tasks": .stringConvertible(d.found.count),
        "plugins_asked": .stringConvertible(d.plugins), "answers_from_cache": .stringConvertible(d.cached)])
    for p in d.problems {
        logger.warning("plugin not used", metadata: ["file": .string(p.file), "problem": .string(p.message)])
    }
}
