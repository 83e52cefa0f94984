import Celerity
import Foundation
import RedisClient

/// A manifest written for one test, with queue names of its own, and a real
/// `celerity worker` process consuming them.
final class WorkerHarness: Sendable {
    let redis: RedisServer
    let prefix: String
    let manifestPath: String
    let worker: ChildProcess
    let node: String
    let broker: String
    let resultBackend: String

    /// `tasks` is the YAML of the `tasks:` mapping, with `{q}` standing for this test's queue;
    /// `preamble`, top-level YAML written before it (`defaults:`, `result_backend:`).
    init(redis: RedisServer, tasks: String, preamble: String = "", concurrency: Int = 2, resultBackend: String? = nil, db: Int = 0, extraArgs: [String] = [], node: String? = nil, reusing other: WorkerHarness? = nil, reusingQueueOf sibling: WorkerHarness? = nil, extraEnvironment: [String: String] = [:], startWorker: Bool = true) throws {
        self.redis = redis
        prefix = other?.prefix ?? sibling?.prefix ?? "t" + UUID().uuidString.prefix(8).lowercased()
        broker = redis.url(db: db)
        self.resultBackend = resultBackend ?? broker
        let dir = NSTemporaryDirectory() + "celerity-\(prefix)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        manifestPath = dir + "/tasks.yaml"
        let yaml = preamble + (preamble.isEmpty || preamble.hasSuffix("\n") ? "" : "\n") + "tasks:\n" + tasks.replacingOccurrences(of: "{q}", with: prefix).replacingOccurrences(of: "{root}", with: Paths.root)
        try yaml.write(toFile: manifestPath, atomically: true, encoding: .utf8)
        self.node = other?.node ?? node ?? "\(prefix)@test"
        if startWorker {
            worker = try ChildProcess(name: "worker-\(prefix)", executable: Paths.celerity, arguments: [
                "worker", "-Q", prefix, "-n", self.node, "-c", String(concurrency), "-l", "debug",
                "--manifest", manifestPath, "--broker", broker, "--result-backend", self.resultBackend,
            ] + extraArgs.map { [prefix] in $0.replacingOccurrences(of: "{q}", with: prefix) }, environment: extraEnvironment.isEmpty ? nil : extraEnvironment)
        } else {
            worker = try ChildProcess(name: "noop", executable: "/bin/true", arguments: [])
        }
    }

    var queue: String { prefix }

    func client() throws -> CelerityClient {
        try CelerityClient(broker: broker, resultBackend: resultBackend, manifest: try Manifest.load(path: manifestPath))
    }

    func redisClient() throws -> Redis { try Redis(broker, label: "test") }

    /// Calls `task` and waits for its value (throws the TaskFailure on FAILURE).
    func call(_ task: String, _ args: [JSONValue], timeout: Double = 30) async throws -> JSONValue {
        let h = try await client().send(task, args: args)
        return try await h.get(timeout: .milliseconds(Int(timeout * 1000)))
    }

    /// Calls and expects a failure; returns it.
    func callFailing(_ task: String, _ args: [JSONValue], timeout: Double = 30) async throws -> TaskFailure {
        do {
            let v = try await call(task, args, timeout: timeout)
            throw TestFailure("expected \(task) to fail, got \(v)")
        } catch let f as TaskFailure {
            return f
        }
    }

    func stop() async -> Int32 { await worker.stop(grace: 20) }
}
