import ArgumentParser
import Celerity
import Foundation
import RedisClient

struct DeadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dead",
        abstract: "Inspect and act on dead letters (messages that could not be run).",
        subcommands: [List.self, Show.self, Retry.self, Purge.self]
    )

    /// A bad manifest or URL exits 2.
    static func open(_ c: ConnectionOptions) async throws -> DeadLetters {
        do {
            let manifest = try await c.loadManifest(required: false)
            return try DeadLetters(broker: c.brokerURL(manifest))
        } catch {
            throw badInput(error)
        }
    }

    /// Runs what talks to Redis: any error there exits 4, whatever status it carries (an ACL
    /// refusal too); exit codes of its own pass through.
    static func talking<T>(_ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch let e as ExitCode { throw e } catch {
            throw fail("\(error)", .redisUnreachable)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List dead letters, newest first: id, when, queue, task, why.")
        @Option(name: .long, help: "Only entries of this queue.") var queue: String?
        @Option(name: .long, help: "At most this many entries.") var limit: Int = 100
        @OptionGroup var connection: ConnectionOptions
        func run() async throws {
            let dead = try await DeadCommand.open(connection)
            let entries = try await DeadCommand.talking { try await dead.list(queue: queue, limit: limit) }
            for e in entries {
                let task = e.task.map { "\($0.name)[\($0.id)]" } ?? "(unreadable message)"
                print("\(e.id)  \(e.at)  queue=\(e.queue.isEmpty ? "?" : e.queue)  \(task)\n    \(e.reason)")
            }
            print("\(entries.count) dead letter\(entries.count == 1 ? "" : "s")")
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one dead letter (by entry id or task id) with its message.")
        @Argument(help: "Entry id or task id.") var id: String
        @OptionGroup var connection: ConnectionOptions
        func run() async throws {
            let dead = try await DeadCommand.open(connection)
            guard let e = try await DeadCommand.talking({ try await dead.entry(id) }) else { throw fail("no dead letter \(id)") }
            print(String(decoding: e.raw, as: UTF8.self))
        }
    }

    struct Retry: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Put dead letters back on their queues.")
        @Argument(help: "Entry ids or task ids.") var ids: [String] = []
        @Flag(name: .long, help: "Every entry (of --queue, if given).") var all = false
        @Option(name: .long, help: "With --all: only entries of this queue.") var queue: String?
        @OptionGroup var connection: ConnectionOptions
        func validate() throws {
            if ids.isEmpty && !all { throw ValidationError("name entry ids, or pass --all") }
        }
        func run() async throws {
            let dead = try await DeadCommand.open(connection)
            let entries = try await DeadCommand.talking { try await dead.list(queue: queue) }
            let chosen = all ? entries : entries.filter { ids.contains($0.id) || ($0.task.map { ids.contains($0.id) } ?? false) }
            var n = 0
            for e in chosen { if try await DeadCommand.talking({ try await dead.retry(e) }) { n += 1 } }
            print("requeued \(n) of \(chosen.count)")
            if n < chosen.count || (!all && chosen.count < ids.count) { throw ExitCode(.failed) }
        }
    }

    struct Purge: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete dead letters (all, or those of --queue).")
        @Option(name: .long, help: "Only entries of this queue.") var queue: String?
        @OptionGroup var connection: ConnectionOptions
        func run() async throws {
            let dead = try await DeadCommand.open(connection)
            let n = try await DeadCommand.talking { try await dead.purge(queue: queue) }
            print("purged \(n)")
        }
    }
}

struct RevokeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revoke",
        abstract: "Revoke tasks: queued or delayed calls never run (REVOKED is stored).",
        discussion: """
        With --terminate, running executions are stopped too: plugins are killed (process group), a built-in's result is discarded.

        The ids are written to Celerity's revoked set (Celerity workers read it), and the revocation is also broadcast as Celery's remote-control revoke {task_id, terminate, signal}, so that a Python Celery worker holding the task obeys it too (as app.control.revoke does: no reply awaited).
        """
    )
    @Argument(help: "Task ids.") var ids: [String]
    @Flag(name: .long, help: "Also stop running executions.") var terminate = false
    @Option(name: .long, help: ArgumentHelp("With --terminate: the signal Python Celery workers send (default SIGTERM).", valueName: "SIG")) var signal: String?
    @OptionGroup var connection: ConnectionOptions
    func validate() throws {
        if signal != nil && !terminate { throw ValidationError("--signal needs --terminate") }
    }
    func run() async throws {
        let client: CelerityClient
        do {
            let manifest = try await connection.loadManifest(required: false)
            client = try CelerityClient(broker: connection.brokerURL(manifest), resultBackend: "none", manifest: manifest)
        } catch {
            throw badInput(error)
        }
        do {
            for id in ids { try await client.revoke(id, terminate: terminate) }
        } catch {
            throw fail(error)
        }
        do {
            let control = ControlClient(redis: Redis(url: client.broker, label: "revoke-broadcast"))
            try await control.broadcast("revoke", arguments: .object([JSONMember("task_id", .array(ids.map(JSONValue.string))),
                                                                     JSONMember("terminate", .bool(terminate)),
                                                                     JSONMember("signal", .string(signal ?? "SIGTERM"))]), reply: false)
        } catch {
            throw fail("revoked \(ids.count) for Celerity workers, but the broadcast to Python Celery workers (PUBLISH on /\(client.broker.db).celery.pidbox) failed: \(error)",
                       CelerityExit(error, otherwise: .redisUnreachable))
        }
        print("revoked \(ids.count)")
    }
}
