import Celerity
import Foundation
import RedisClient
import Testing

extension Integration {
    /// Restricted Redis ACL users, exactly as docs/security.md lists them: a worker and a
    /// client each logged in as their own user run calls end to end (Redis and rpc result
    /// backends); what a user may not do fails fast and clearly, never hangs.
    @Suite(.timeLimit(.minutes(3)))
    struct ACLTests {
        /// docs/security.md, "The worker" (`Q` stands for each queue it consumes).
        static let workerACL = """
        resetkeys resetchannels -@all
        ~Q* ~celerity:* ~celery-task-meta-* &celery-task-meta-* ~????????-????-????-????-????????????
        &/0.celeryev/* &/0.celery.pidbox ~_kombu.binding.reply.celery.pidbox ~*.reply.celery.pidbox ~celery-taskset-meta-*
        +ping +subscribe +unsubscribe +multi +exec +discard +evalsha +script|load
        +lmove +blmove +exists +lrange +lpos +llen +lrem +lpush +rpush +ltrim +expire +hincrby
        +get +set +del +sadd +srem +smembers +publish
        +zadd +zrem +zrange +zrangebyscore +zremrangebyscore
        +hgetall +hget +hset +time +zscore +zcard +rpop
        """
        /// docs/security.md, "A client (sender and waiter)".
        static let clientACL = """
        resetkeys resetchannels -@all
        ~Q* ~_kombu.binding.Q ~_kombu.binding_permanent.Q
        %R~celery-task-meta-* &celery-task-meta-* ~????????-????-????-????-????????????
        +lpush +sadd +get +mget +subscribe +psubscribe +unsubscribe +brpop
        """

        /// A private Redis whose default user needs a password, a manifest for one queue, and
        /// `ACL SETUSER` for users of the given rules.
        struct Setup {
            let redis: RedisServer
            let admin: Redis
            let queue: String
            let manifest: String
            static let adminPassword = "admin-\(UUID().uuidString.prefix(8))"

            init() async throws {
                redis = try await RedisServer.start(extra: ["--requirepass", Setup.adminPassword])
                admin = try Redis("redis://:\(Setup.adminPassword)@127.0.0.1:\(redis.port)/0", label: "admin")
                queue = "acl" + UUID().uuidString.prefix(6).lowercased()
                let dir = NSTemporaryDirectory() + "celerity-\(queue)"
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                manifest = dir + "/tasks.yaml"
                // params: null: the wrong call below must reach the worker (not be refused by the CLI),
                // so that its FAILURE is written by the restricted worker user.
                try "tasks:\n  a.add: {queue: \(queue), builtin: add, params: null}\n".write(toFile: manifest, atomically: true, encoding: .utf8)
            }

            /// Creates `name` with `rules` (Q replaced by the queue); returns its URL.
            func user(_ name: String, _ rules: String) async throws -> String {
                let words = rules.replacingOccurrences(of: "Q", with: queue).split(whereSeparator: \.isWhitespace).map(String.init)
                try await admin.send(RedisCommand("ACL", arguments: ["SETUSER", name, "reset", "on", ">pw-\(name)"] + words)).throwingError()
                return "redis://\(name):pw-\(name)@127.0.0.1:\(redis.port)/0"
            }

            func worker(_ url: String, backend: String, node: String = "w-\(UUID().uuidString.prefix(6))@acl") throws -> ChildProcess {
                try ChildProcess(name: "acl-worker", executable: Paths.celerity, arguments: ["worker", "-Q", queue, "-n", node, "-c", "2", "-l", "info", "--manifest", manifest],
                                 environment: ["CELERITY_BROKER_URL": url, "CELERITY_RESULT_BACKEND": backend])
            }

            func call(_ url: String, backend: String, _ args: [String]) async throws -> (status: Int32, output: String, seconds: Double) {
                let start = Date()
                let r = try await ChildProcess.run(Paths.celerity, ["call", "a.add"] + args + ["--manifest", manifest],
                                                   environment: ["CELERITY_BROKER_URL": url, "CELERITY_RESULT_BACKEND": backend])
                return (r.status, r.output, -start.timeIntervalSinceNow)
            }

            func stop() async { await redis.stop() }
        }

        static func waitReady(_ w: ChildProcess) async throws {
            for _ in 0..<150 where !w.output.contains("worker ready") && w.isRunning { try await Task.sleep(for: .milliseconds(100)) }
            #expect(w.output.contains("worker ready"), "\(w.output)")
        }

        @Test(arguments: ["redis", "rpc"])
        func restrictedWorkerAndClientRunCallsEndToEnd(backend: String) async throws {
            let s = try await Setup()
            let workerURL = try await s.user("celerity-worker", Self.workerACL)
            let clientURL = try await s.user("celerity-client", Self.clientACL)
            // A dead worker's message, left in its processing list: the restricted worker's recovery sweep hands it back.
            let ghost = "ghost-\(UUID().uuidString.prefix(6))@acl"
            let orphan = try CelerityClient(broker: "redis://127.0.0.1:1/0", resultBackend: "none").message("a.add", args: [40, 2], options: .init(queue: s.queue))
            try await s.admin.call("SADD", Keys.workers, ghost)
            try await s.admin.call("RPUSH", Keys.processing(ghost), orphan.encode())
            let w = try s.worker(workerURL, backend: backend == "rpc" ? "rpc://" : workerURL)
            try await Self.waitReady(w)
            let results = backend == "rpc" ? "rpc://" : clientURL
            let ok = try await s.call(clientURL, backend: results, ["2", "3", "--timeout", "20"])
            #expect(ok.status == 0, "\(ok.output)\n\(w.output)")
            #expect(ok.output.trimmingCharacters(in: .whitespacesAndNewlines) == "5")
            let failed = try await s.call(clientURL, backend: results, ["1", "--timeout", "20"])
            #expect(failed.status == 1, "\(failed.output)")
            #expect(failed.output.contains("TypeError"))
            // Delayed: the worker parks it (ZADD) and its forwarder moves it back when due.
            let later = try await s.call(clientURL, backend: results, ["4", "4", "--countdown", "1", "--timeout", "20"])
            #expect(later.status == 0, "\(later.output)\n\(w.output)")
            #expect(later.output.trimmingCharacters(in: .whitespacesAndNewlines) == "8")
            #expect(try await eventually(seconds: 15) { try await s.admin.call("LLEN", Keys.processing(ghost)).int == 0 })
            if backend == "redis" {
                #expect(try await eventually(seconds: 10) { try await s.admin.call("GET", Keys.resultMeta(orphan.id)).bytes != nil })
            }
            #expect(await w.stop(grace: 20) == 0)
            #expect(!w.output.contains("NOPERM") && !w.output.contains("refuse"), "\(w.output)")
            await s.stop()
        }

        @Test func aClientWithoutTheResultChannelFailsPromptlyAndNoWaitStillSends() async throws {
            let s = try await Setup()
            let workerURL = try await s.user("celerity-worker", Self.workerACL)
            let clientURL = try await s.user("no-channels", Self.clientACL.replacingOccurrences(of: "&celery-task-meta-*", with: ""))
            let w = try s.worker(workerURL, backend: workerURL)
            try await Self.waitReady(w)
            // Waiting needs the subscription: refused at once, named, exit 6; not a hang until --timeout.
            let r = try await s.call(clientURL, backend: clientURL, ["2", "3", "--timeout", "30"])
            #expect(r.status == 6, "\(r.output)")
            #expect(r.seconds < 10)
            #expect(r.output.contains("NOPERM") && r.output.contains("SUBSCRIBE celery-task-meta-"), "\(r.output)")
            #expect(r.output.contains("&celery-task-meta-*"), "\(r.output)")
            // --no-wait needs no subscription: it sends, prints the id, and the worker runs it.
            let n = try await s.call(clientURL, backend: clientURL, ["2", "3", "--no-wait", "--timeout", "5"])
            #expect(n.status == 0, "\(n.output)")
            let id = n.output.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(id.count == 36, "\(n.output)")
            #expect(try await eventually(seconds: 10) { try await s.admin.call("GET", Keys.resultMeta(id)).bytes != nil })
            // A user that may not even send: --no-wait fails at once, named, exit 6.
            let mute = try await s.user("no-lpush", Self.clientACL.replacingOccurrences(of: "+lpush", with: ""))
            let m = try await s.call(mute, backend: mute, ["2", "3", "--no-wait", "--timeout", "30"])
            #expect(m.status == 6, "\(m.output)")
            #expect(m.seconds < 10)
            #expect(m.output.contains("NOPERM") && m.output.contains("LPUSH"), "\(m.output)")
            #expect(await w.stop(grace: 20) == 0)
            await s.stop()
        }

        /// docs/security.md, "An operator (inspect, control, events, revoke)".
        static let operatorACL = """
        resetkeys resetchannels -@all
        &/0.celery.pidbox &/0.celeryev/*
        ~_kombu.binding.reply.celery.pidbox ~_kombu.binding_permanent.reply.celery.pidbox ~_kombu.binding_deadlines ~*.reply.celery.pidbox*
        ~_kombu.binding.celeryev ~_kombu.binding_permanent.celeryev ~celerity:revoked ~celerity:revoked:terminate
        +ping +publish +evalsha +script|load +time +sadd +srem +zadd +del +brpop +psubscribe +punsubscribe
        """

        /// `celerity inspect`, `control`, `events --dump` and `revoke` as a user with only the
        /// operator's rules; without PUBLISH, inspect exits 6 and names what was refused.
        @Test func anOperatorUserInspectsControlsWatchesAndRevokes() async throws {
            let s = try await Setup()
            let workerURL = try await s.user("celerity-worker", Self.workerACL)
            let operatorURL = try await s.user("celerity-operator", Self.operatorACL)
            let node = "w-\(UUID().uuidString.prefix(6))@acl"
            let w = try s.worker(workerURL, backend: workerURL, node: node)
            try await Self.waitReady(w)
            func cli(_ url: String, _ args: [String]) async throws -> (status: Int32, output: String) {
                let r = try await ChildProcess.run(Paths.celerity, args, environment: ["CELERITY_BROKER_URL": url])
                return (r.status, r.output)
            }
            let ping = try await cli(operatorURL, ["inspect", "ping"])
            #expect(ping.status == 0 && ping.output.contains("\(node): OK"), "\(ping.output)")
            let enable = try await cli(operatorURL, ["control", "enable_events", "-d", node])
            #expect(enable.status == 0 && enable.output.contains("task events enabled"), "\(enable.output)")
            let events = try await cli(operatorURL, ["events", "--dump", "--duration", "3"])
            #expect(events.status == 0 && events.output.contains("\"worker-heartbeat\""), "\(events.output)")
            let revoke = try await cli(operatorURL, ["revoke", UUID().uuidString.lowercased()])
            #expect(revoke.status == 0, "\(revoke.output)")
            // Nothing left behind: the reply queue's binding and the event receiver's are gone.
            #expect(try await s.admin.call("SCARD", "_kombu.binding.reply.celery.pidbox").int == 0)
            #expect(try await s.admin.call("SCARD", "_kombu.binding.celeryev").int == 0)
            // docs/security.md, "Other operator commands": queue pause/resume with ~celerity:paused +smembers added.
            let pauser = try await s.user("celerity-pauser", Self.operatorACL + "\n~celerity:paused +smembers")
            let paused = try await cli(pauser, ["queue", "pause", s.queue])
            #expect(paused.status == 0 && paused.output == "paused \(s.queue)\n", "\(paused.output)")
            let listed = try await cli(pauser, ["queue", "paused"])
            #expect(listed.status == 0 && listed.output == "\(s.queue)\n", "\(listed.output)")
            #expect(try await eventually(seconds: 5) {
                try await s.admin.call("GET", Keys.heartbeat(node)).bytes.map { try JSONValue(parsing: $0)["paused"] == [.string(s.queue)] } ?? false
            }, "\(w.output)")
            let resumed = try await cli(pauser, ["queue", "resume", s.queue])
            #expect(resumed.status == 0 && resumed.output == "resumed \(s.queue)\n", "\(resumed.output)")
            let noKey = try await cli(operatorURL, ["queue", "pause", s.queue])
            #expect(noKey.status == 6 && noKey.output.contains("NOPERM"), "\(noKey.status) \(noKey.output)")
            let mute = try await s.user("celerity-mute", Self.operatorACL.replacingOccurrences(of: "+publish ", with: ""))
            let refused = try await cli(mute, ["inspect", "ping"])
            #expect(refused.status == 6 && refused.output.contains("publish"), "\(refused.status) \(refused.output)")
            #expect(await w.stop(grace: 20) == 0)
            await s.stop()
        }

        @Test func aWorkerThatMayNotFetchExitsWithTheMissingPermission() async throws {
            let s = try await Setup()
            // No access to its processing list: it could never fetch.
            let url = try await s.user("no-processing", Self.workerACL.replacingOccurrences(of: "~celerity:*", with: "~celerity:worker* ~celerity:dead ~celerity:delayed ~celerity:revoked* ~celerity:lock:*"))
            let w = try s.worker(url, backend: url)
            let status = await w.wait(seconds: 20)
            #expect(status == 6, "\(w.output)")
            #expect(w.output.contains("LMOVE \(s.queue)") && w.output.contains("NOPERM"), "\(w.output)")
            if w.isRunning { await w.stop() }
            await s.stop()
        }

        @Test func aRefusedBackgroundDutyIsLoggedAsAnErrorOnceNotEveryTwoSeconds() async throws {
            let s = try await Setup()
            let url = try await s.user("no-llen", Self.workerACL.replacingOccurrences(of: "+llen", with: ""))
            // A dead worker to sweep: the sweep needs LLEN on its processing list.
            try await s.admin.call("SADD", Keys.workers, "ghost-\(UUID().uuidString.prefix(6))@acl")
            let w = try s.worker(url, backend: url)
            try await Self.waitReady(w)
            try await Task.sleep(for: .seconds(7))
            let lines = w.output.split(separator: "\n").filter { $0.contains("refused the worker's recovery sweep") }
            #expect(lines.count == 1, "\(w.output)")
            #expect(lines.first?.contains("error") == true && lines.first?.contains("LLEN celerity:processing:ghost") == true, "\(w.output)")
            #expect(await w.stop(grace: 20) == 0)
            await s.stop()
        }
    }
}
