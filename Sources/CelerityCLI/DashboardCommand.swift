import ArgumentParser
import Foundation

/// `celerity dashboard`: runs `celerity-dashboard` (its own executable, so that the worker's
/// binary does not link the web server), found beside this one or on PATH, with the same
/// arguments and environment.
struct DashboardCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dashboard",
        abstract: "Serve the web dashboard, JSON API and Prometheus /metrics (runs celerity-dashboard).",
        discussion: "Every argument goes to celerity-dashboard: see `celerity dashboard --help` there, or docs/dashboard.md.",
        helpNames: []
    )

    @Argument(parsing: .captureForPassthrough, help: "Arguments of celerity-dashboard (--host, --port, --manifest, --broker, ...; --help).")
    var arguments: [String] = []

    func run() throws {
        guard let binary = Self.locate() else {
            throw fail("celerity dashboard: celerity-dashboard not found beside \(Self.selfPath ?? "celerity") nor on PATH (build it: swift build -c release --product celerity-dashboard)", .badInput)
        }
        let argv = [binary] + arguments
        var cArgs = argv.map { strdup($0) } + [nil]
        execv(binary, &cArgs)
        throw fail("celerity dashboard: cannot run \(binary): \(String(cString: strerror(errno)))", .badInput)
    }

    static var selfPath: String? {
        try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
    }

    static func locate() -> String? {
        if let me = selfPath {
            let beside = URL(fileURLWithPath: me).deletingLastPathComponent().appendingPathComponent("celerity-dashboard").path
            if FileManager.default.isExecutableFile(atPath: beside) { return beside }
        }
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
            let p = dir + "/celerity-dashboard"
            if FileManager.default.isExecutableFile(atPath: String(p)) { return String(p) }
        }
        return nil
    }
}
