import Celerity
import Foundation
import RedisClient
import Testing

extension Integration {
    /// Secrets never reach a command line: `celerity up` hands the broker URL to its workers
    /// in their environment.
    @Suite(.timeLimit(.minutes(2)))
    struct SecretsTests {
        @Test func upKeepsTheRedisPasswordOffItsWorkersCommandLines() async throws {
            let password = "pw-\(UUID().uuidString.prefix(12))"
            let redis = try await RedisServer.start(extra: ["--requirepass", password])
            defer { redis.child.signal(SIGKILL) }
            let broker = "redis://:\(password)@127.0.0.1:\(redis.port)/0"
            let queue = "sec" + UUID().uuidString.prefix(6).lowercased()
            let dir = NSTemporaryDirectory() + "celerity-\(queue)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let manifest = dir + "/tasks.yaml"
            // The password is only in the manifest; the result backend is the broker's Redis.
            try """
            broker: \(broker)
            tasks:
              s.add: {queue: \(queue), builtin: add}
            workers:
              a: {queues: [\(queue)], concurrency: 1}
              b: {queues: [\(queue)], concurrency: 1}
            """.write(toFile: manifest, atomically: true, encoding: .utf8)
            let up = try ChildProcess(name: "up-\(queue)", executable: Paths.celerity, arguments: ["up", "--manifest", manifest, "-l", "info"])
            var workers: [Int32] = []
            for _ in 0..<100 where workers.count < 2 {
                try await Task.sleep(for: .milliseconds(100))
                workers = Self.children(of: up.pid)
            }
            #expect(workers.count == 2, "\(up.output)")
            // The workers serve calls (so they did get the password) ...
            for i in 0..<4 {
                let r = try await ChildProcess.run(Paths.celerity, ["call", "s.add", String(i), "1", "--manifest", manifest, "--timeout", "20"])
                #expect(r.status == 0, "\(r.output)\n\(up.output)")
                #expect(r.output.trimmingCharacters(in: .whitespacesAndNewlines) == String(i + 1))
            }
            // ... and neither they nor `up` itself show it to `ps`.
            for pid in workers + [up.pid] {
                let cmdline = Self.cmdline(pid)
                #expect(cmdline.contains("worker") || pid == up.pid)
                #expect(!cmdline.contains(password), "pid \(pid): \(cmdline)")
            }
            #expect(!up.output.contains(password))
            #expect(await up.stop(grace: 30) == 0)
        }

        /// The pids whose parent is `pid` (from /proc/*/stat).
        static func children(of pid: Int32) -> [Int32] {
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
            return entries.compactMap { e -> Int32? in
                guard let p = Int32(e), let stat = try? String(contentsOfFile: "/proc/\(e)/stat", encoding: .utf8),
                      let close = stat.range(of: ")", options: .backwards) else { return nil }
                // After "pid (comm) ": state, then the parent's pid.
                let fields = stat[close.upperBound...].split(separator: " ")
                return fields.count > 2 && Int32(fields[1]) == pid ? p : nil
            }
        }

        /// A process's command line as `ps` shows it (NULs as spaces).
        static func cmdline(_ pid: Int32) -> String {
            let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") ?? Data()
            return String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
        }
    }
}
