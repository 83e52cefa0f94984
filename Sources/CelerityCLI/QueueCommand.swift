import ArgumentParser
import Celerity
import Foundation

struct QueueCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "queue",
        abstract: "Pause and resume queues for every worker at once.",
        discussion: """
        A paused queue is not fetched from by any Celerity worker: its messages stay queued (senders may go on sending), \
        and those already fetched finish. Resume makes the workers that consume it fetch again. Workers read the paused \
        set (celerity:paused) at start-up and once a second, so both apply within about a second, also to workers started \
        later; a pause lasts until resumed. Python Celery workers do not read it.

        celerity status marks paused queues; inspect active_queues still lists them (the workers are still asked to consume them).

        Exit status: 0 ok, 2 bad manifest or URL, 4 Redis cannot be reached, 6 Redis refused access.
        """,
        subcommands: [Pause.self, Resume.self, Paused.self]
    )

    /// A bad manifest or URL exits 2.
    static func open(_ c: ConnectionOptions) async throws -> QueuePause {
        do {
            return try await QueuePause(broker: c.brokerURL(c.loadManifest(required: false)))
        } catch {
            throw badInput(error)
        }
    }

    /// Runs what talks to Redis: an ACL refusal exits 6, other trouble 4.
    static func talking<T>(_ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch { throw fail(error) }
    }

    static func validate(_ names: [String]) throws {
        if names.contains(where: \.isEmpty) { throw ValidationError("a queue name must not be empty") }
    }

    /// Pauses (or resumes) each queue named, saying what changed.
    static func set(_ names: [String], paused: Bool, _ connection: ConnectionOptions) async throws {
        let pauses = try await open(connection)
        for name in names {
            if paused {
                print(try await talking { try await pauses.pause(name) } ? "paused \(name)" : "\(name) was paused already")
            } else {
                print(try await talking { try await pauses.resume(name) } ? "resumed \(name)" : "\(name) was not paused")
            }
        }
    }

    struct Pause: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Pause queues: no worker fetches from them until resumed.")
        @Argument(help: "Queue names.") var names: [String]
        @OptionGroup var connection: ConnectionOptions
        func validate() throws { try QueueCommand.validate(names) }
        func run() async throws { try await QueueCommand.set(names, paused: true, connection) }
    }

    struct Resume: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Resume paused queues: workers that consume them fetch again.")
        @Argument(help: "Queue names.") var names: [String]
        @OptionGroup var connection: ConnectionOptions
        func validate() throws { try QueueCommand.validate(names) }
        func run() async throws { try await QueueCommand.set(names, paused: false, connection) }
    }

    struct Paused: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the paused queues, one a line (nothing when none is).")
        @OptionGroup var connection: ConnectionOptions
        func run() async throws {
            let pauses = try await QueueCommand.open(connection)
            for name in try await QueueCommand.talking({ try await pauses.paused() }) { print(name) }
        }
    }
}
