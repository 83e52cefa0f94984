import ArgumentParser
import Celerity
import Foundation
import Logging
import RedisClient
import ServiceLifecycle

struct BeatCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "beat",
        abstract: "Send the manifest's schedules at their times (exactly one message per tick, however many beats run).",
        discussion: """
        Any number of beats may run at once (and `celerity worker -B`, and the beat `celerity up` starts):
        each tick is sent once, decided by one Lua compare-and-set per fire in Redis, with Redis TIME as
        the only clock. Misfires follow each entry's `misfire` policy. See docs/schedules-and-limits.md.
        SIGTERM or SIGINT stops it (exit 0).
        """
    )

    @Option(name: [.customShort("n"), .long], help: ArgumentHelp("Name of this beat in logs and in the messages' origin (default: beat@<host>).", valueName: "name"))
    var hostname: String?

    @Option(name: [.customShort("l"), .customLong("loglevel")], help: "Log level: trace, debug, info, warning, error, critical.")
    var logLevel: LogLevelOption = .info

    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        let logger = Logs.bootstrap(logLevel)
        let (manifest, broker) = try await connection.manifestAndBroker()
        if manifest.schedules.isEmpty { throw fail("\(manifest.path ?? "manifest"): no 'schedules' section: nothing to send", .badInput) }
        let beat = BeatCommand.makeBeat(manifest, broker: broker, node: hostname, logger: logger)
        do {
            try await Redis(url: broker, label: "beat-probe").ping()
        } catch {
            throw fail("beat: cannot reach the broker \(broker): \(error)", CelerityExit(error, otherwise: .redisUnreachable))
        }
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(
            services: [.init(service: beat, successTerminationBehavior: .gracefullyShutdownGroup)], gracefulShutdownSignals: [.sigterm, .sigint],
            logger: Logger(label: "celerity.lifecycle")))
        try await group.run()
    }

    /// A Beat for the manifest's schedules. `CELERITY_BEAT_LOCAL_CLOCK_SKEW` (seconds, tests
    /// only) offsets this process's local clock, to show ticks do not depend on it.
    static func makeBeat(_ manifest: Manifest, broker: RedisURL, node: String?, logger: Logger) -> Beat {
        let skew = ProcessInfo.processInfo.environment["CELERITY_BEAT_LOCAL_CLOCK_SKEW"].flatMap(Double.init) ?? 0
        return Beat(entries: manifest.schedules, broker: broker, node: node ?? "beat@\(ProcessInfo.processInfo.hostName)", logger: logger, localClockSkew: skew)
    }
}

struct ScheduleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "schedule",
        abstract: "List the manifest's schedules with their state in Redis, or send one now.",
        subcommands: [ScheduleListCommand.self, ScheduleRunCommand.self]
    )
}

struct ScheduleListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "Each schedule: task, queue, schedule, last and next fire (from Redis), count.",
        discussion: "Times are read against Redis TIME. Exit 0; 2 bad manifest; 4 Redis unreachable; 6 refused."
    )

    @Flag(name: .long, help: "One JSON object per schedule, in a JSON array.")
    var json = false

    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        let (manifest, broker) = try await connection.manifestAndBroker()
        let redis = Redis(url: broker, label: "schedule")
        let state: BeatStore.State
        do { state = try await BeatStore.read(manifest.schedules.map(\.name), on: redis) } catch {
            throw fail("schedule list: \(broker): \(error)", CelerityExit(error, otherwise: .redisUnreachable))
        }
        let utc = TimeZone(identifier: "UTC")!
        var rows: [JSONValue] = []
        var lines: [[String]] = [["NAME", "TASK", "QUEUE", "SCHEDULE", "LAST", "NEXT", "COUNT"]]
        for r in BeatStore.rows(manifest.schedules, state) {
            let e = r.entry
            let lastText = r.last.map { ScheduleDate.format($0, in: utc) } ?? "-"
            let nextText = r.next.map { ScheduleDate.format($0, in: utc) } ?? "never"
            lines.append([e.name, e.task, e.queue, r.schedule, lastText, nextText + (r.overdue ? " (overdue: is a beat running?)" : ""),
                          e.limit.map { "\(r.count)/\($0)" } ?? String(r.count)])
            rows.append(r.json)
        }
        if json {
            print(JSONValue.array(rows).serialized())
            return
        }
        if manifest.schedules.isEmpty { print("no schedules in \(manifest.path ?? "the manifest")"); return }
        var widths = Array(repeating: 0, count: lines[0].count)
        for l in lines { for (i, c) in l.enumerated() { widths[i] = max(widths[i], c.count) } }
        for l in lines {
            print(l.enumerated().map { i, c in i == l.count - 1 ? c : c + String(repeating: " ", count: widths[i] - c.count) }.joined(separator: "  "))
        }
    }
}

struct ScheduleRunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Send a schedule's task now, once (a manual run: the regular ticks, count and limit are untouched).",
        discussion: "Prints the task id. Exit 0; 2 unknown schedule or bad manifest; 4 Redis unreachable; 6 refused."
    )

    @Argument(help: ArgumentHelp("The schedule's name in the manifest.", valueName: "name"))
    var name: String

    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        let (manifest, broker) = try await connection.manifestAndBroker()
        guard let e = manifest.schedules.first(where: { $0.name == name }) else {
            let known = manifest.schedules.map(\.name)
            throw fail("\(manifest.path ?? "manifest"): no schedule named '\(name)'" + (known.isEmpty ? " (it has no schedules)" : " (schedules: \(known.joined(separator: ", ")))"), .badInput)
        }
        do {
            let m = try await BeatStore.runNow(e, node: "schedule-run@\(ProcessInfo.processInfo.hostName)", on: Redis(url: broker, label: "schedule"))
            print(m.id)
        } catch {
            throw fail("schedule run \(name): \(broker): \(error)", CelerityExit(error, otherwise: .redisUnreachable))
        }
    }
}

extension ConnectionOptions {
    /// The manifest (required) and the broker URL it leads to; a bad one exits 2.
    func manifestAndBroker() async throws -> (Manifest, RedisURL) {
        do {
            let manifest = try await loadManifest(required: true)!
            return (manifest, try RedisURL(string: brokerURL(manifest)))
        } catch {
            throw badInput(error)
        }
    }
}
