import ArgumentParser
import Celerity
import Foundation
import RedisClient
import Synchronization

struct MapCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "map",
        abstract: "Send many calls of one task at once and collect their results.",
        discussion: """
        Reads one call per line from --file (or stdin): a JSON array is the argument list, any other JSON
        value (or plain text) a single argument. All calls go out in one pipeline; results stream back on
        one subscription and are printed one JSON value per line, in input order (a failure prints as
        {"error": "Type: message"}). Progress goes to stderr while results come in.
        Exit status: 0 when every call succeeded; 1 when any failed; 3 on time-out; 4 when Redis cannot
        be reached. Example:
          seq 100000 | awk '{print "[" $1 ", " $1 "]"}' | celerity map add_module.tasks.add --quiet
        """
    )

    @Argument(help: "The task name, e.g. add_module.tasks.add.")
    var task: String

    @Option(name: .long, help: ArgumentHelp("Read the calls from this file (default: stdin).", valueName: "path"))
    var file: String?

    @Option(name: .long, help: "Queue to send to (default: the manifest's route for the task, else 'celery').")
    var queue: String?

    @Option(name: .long, help: "Seconds to wait for all results.")
    var timeout: Double = 600

    @Flag(name: .customLong("no-wait"), help: "Print the task ids and return without waiting.")
    var noWait = false

    @Flag(name: .long, help: "Do not print the results (the summary still goes to stderr).")
    var quiet = false

    @Flag(name: .customLong("no-progress"), help: "No progress display on stderr.")
    var noProgress = false

    @OptionGroup var connection: ConnectionOptions

    func validate() throws {
        if timeout <= 0 { throw ValidationError("--timeout must be positive") }
    }

    func run() async throws {
        let client: CelerityClient
        do {
            let manifest = try await connection.loadManifest(required: false)
            client = try CelerityClient(broker: RedisURL(string: connection.brokerURL(manifest)), backend: try connection.backend(manifest), manifest: manifest)
        } catch {
            throw badInput(error)
        }
        // Read the calls.
        let text: String
        if let file {
            guard let t = try? String(contentsOfFile: file, encoding: .utf8) else { throw fail("cannot read \(file)", .badInput) }
            text = t
        } else {
            text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
        }
        var calls: [[JSONValue]] = []
        for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let s = line.trimmingCharacters(in: .whitespaces)
            if s.isEmpty { continue }
            let v = CallCommand.value(s)
            let args = v.arrayValue ?? [v]
            // The task's argument schema: one bad line and nothing is sent.
            do throws(ArgumentError) {
                try client.check(task, args: args, kwargs: [])
            } catch {
                throw fail("line \(n + 1): \(error.description.replacingOccurrences(of: "(not sent)", with: "(nothing sent)"))\(error.path.map { "\npath: \($0)" } ?? "")", .badInput)
            }
            calls.append(args)
        }
        if calls.isEmpty { throw fail("no calls given (one JSON argument list per line on stdin or in --file)", .badInput) }
        let options = CelerityClient.SendOptions(queue: queue)
        let started = Date()
        let handles: [AsyncResult]
        do {
            let messages = calls.map { client.message(task, args: $0, options: options) }
            if noWait {
                // Only the sends: no result subscription.
                try await client.publish(messages)
                handles = messages.map { AsyncResult(id: $0.id, client: client) }
            } else {
                handles = try await client.sendMany(messages)
            }
        } catch {
            throw fail(error)
        }
        let sentIn = -started.timeIntervalSinceNow
        if noWait {
            print(handles.map(\.id).joined(separator: "\n"))
            return
        }
        let progress = Progress(total: handles.count, enabled: !noProgress, started: started)
        let metas: [ResultMeta]
        do {
            metas = try await client.gather(handles, timeout: .milliseconds(Int(timeout * 1000))) { done, total in progress.show(done) }
        } catch {
            progress.finish()
            throw fail(error)
        }
        progress.finish()
        var failed = 0
        var out = ""
        out.reserveCapacity(metas.count * 8)
        for m in metas {
            if m.state == .success {
                if !quiet { out += m.result.serialized(); out += "\n" }
            } else {
                failed += 1
                let f = m.failure ?? TaskFailure(type: "Exception", message: m.state.rawValue)
                if !quiet { out += JSONValue.object([JSONMember("error", .string("\(f.type): \(f.message)"))]).serialized(); out += "\n" }
            }
        }
        FileHandle.standardOutput.write(Data(out.utf8))
        let took = -started.timeIntervalSinceNow
        FileHandle.standardError.write(Data(String(format: "%d calls: %d succeeded, %d failed; sent in %.2f s, all results in %.2f s (%.0f calls/s)\n",
                                                   metas.count, metas.count - failed, failed, sentIn, took, Double(metas.count) / took).utf8))
        if failed > 0 { throw ExitCode(.failed) }
    }
}

/// "12345/100000 results (12%), 23456/s" on stderr: redrawn in place on a terminal (at most
/// five times a second), a line every 10% otherwise; nothing for runs under a second.
final class Progress: Sendable {
    let total: Int
    let enabled: Bool
    let started: Date
    let tty = isatty(STDERR_FILENO) == 1
    private let last = Mutex<(shownAt: Date, tenth: Int, drawn: Bool)>((Date.distantPast, 0, false))

    init(total: Int, enabled: Bool, started: Date) {
        self.total = total
        self.enabled = enabled
        self.started = started
    }

    func show(_ done: Int) {
        guard enabled else { return }
        let elapsed = -started.timeIntervalSinceNow
        guard elapsed >= 1 else { return }
        let line = String(format: "%d/%d results (%d%%), %.0f/s", done, total, done * 100 / max(total, 1), Double(done) / elapsed)
        let write: String? = last.withLock { l in
            if tty {
                guard -l.shownAt.timeIntervalSinceNow >= 0.2 || done == total else { return nil }
                l.shownAt = Date()
                l.drawn = true
                return "\r\u{1B}[K" + line
            }
            let tenth = done * 10 / max(total, 1)
            guard tenth > l.tenth else { return nil }
            l.tenth = tenth
            return line + "\n"
        }
        if let write { FileHandle.standardError.write(Data(write.utf8)) }
    }

    func finish() {
        if last.withLock({ $0.drawn }) { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
