import Foundation
import RedisClient
import Testing

@Suite struct SentinelURLTests {
    @Test func parsesKombusSentinelForm() throws {
        let u = try RedisURL(string: "sentinel://:pw@10.0.0.1:26379;sentinel://10.0.0.2;sentinel://10.0.0.3:26380/2?master_name=mymaster&sentinel_password=spw")
        guard case let .sentinel(g) = u.endpoint else { Issue.record("not a sentinel endpoint: \(u)"); return }
        #expect(g.sentinels == [.init(host: "10.0.0.1", port: 26379), .init(host: "10.0.0.2", port: 26379), .init(host: "10.0.0.3", port: 26380)])
        #expect(g.masterName == "mymaster")
        #expect(g.password == "spw")
        #expect(u.password == "pw" && u.db == 2)
        #expect(!u.description.contains("pw@") && !u.description.contains("spw"))
        #expect(!RedisURL.redact("sentinel://h:1/0?master_name=m&sentinel_password=hunter2").contains("hunter2"))
    }

    @Test func aSentinelURLNeedsTheMastersName() {
        #expect(throws: RedisError.self) { try RedisURL(string: "sentinel://h1:26379;sentinel://h2:26379/0") }
        do { _ = try RedisURL(string: "sentinel://h1:26379/0") } catch { #expect(error.message.contains("master_name")) }
        // tasks.yaml's broker_transport_options.master_name completes it.
        let s = RedisURL.withMasterName("sentinel://h1:26379;sentinel://h2:26379/0", "mymaster")
        #expect(s.hasSuffix("?master_name=mymaster"))
        #expect(RedisURL.withMasterName("redis://h:1/0", "mymaster") == "redis://h:1/0")
        #expect(RedisURL.withMasterName("sentinel://h:1/0?master_name=a", "b") == "sentinel://h:1/0?master_name=a")
        #expect(throws: RedisError.self) { try RedisURL(string: "sentinel://h1/0?master_name=m&typo=1") }
        #expect(throws: RedisError.self) { try RedisURL(string: "redis://h1/0?wait_replicas=-1") }
        #expect((try? RedisURL(string: "redis://h1/0?wait_replicas=1&wait_timeout=250"))?.waitReplicas == 1)
    }

    @Test func noSentinelAnsweringIsAClearConnectionError() async throws {
        let dead = RedisServer.freePort()
        let r = Redis(url: try RedisURL(string: "sentinel://127.0.0.1:\(dead)/0?master_name=mymaster"), label: "s", connectTimeout: 0.5)
        do {
            try await r.ping()
            Issue.record("a ping through no sentinel succeeded")
        } catch let e as RedisError {
            #expect(e.code == .connection)
            #expect(e.message.contains("no sentinel gave the address of master 'mymaster'"), "\(e.message)")
            #expect(e.message.contains("127.0.0.1:\(dead)"), "\(e.message)")
        }
    }

    @Test func aSentinelThatDoesNotKnowTheNameSaysSo() async throws {
        let port = RedisServer.freePort()
        let dir = NSTemporaryDirectory() + "celerity-sentinel-\(port)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let conf = dir + "/sentinel.conf"
        try "port \(port)\nbind 127.0.0.1\ndir \(dir)\n".write(toFile: conf, atomically: true, encoding: .utf8)
        let sentinel = try ChildProcess(name: "sentinel", executable: Paths.which("redis-server"), arguments: [conf, "--sentinel"])
        defer { sentinel.signal(SIGKILL) }
        let up = try await eventually(seconds: 10) {
            (try? await Redis(url: try RedisURL(string: "redis://127.0.0.1:\(port)/0"), label: "p").ping()) != nil
        }
        #expect(up, "the sentinel did not start: \(sentinel.output)")
        let r = Redis(url: try RedisURL(string: "sentinel://127.0.0.1:\(port)/0?master_name=nosuch"), label: "s", connectTimeout: 0.5)
        do {
            try await r.ping()
            Issue.record("a ping through a sentinel that knows no such master succeeded")
        } catch let e as RedisError {
            #expect(e.message.contains("knows no master named 'nosuch'"), "\(e.message)")
        }
    }
}

extension Integration {
    /// scripts/sentinel_failover.py: a master, a replica and three sentinels; two workers and
    /// a real Celery client given only the sentinels. The master is SIGKILLed a third of the
    /// way through 20,000 calls (workers and the client must follow the promoted replica;
    /// nothing lost), then a planned failover (SENTINEL FAILOVER) with min-replicas-to-write
    /// on the servers: nothing lost either. `celerity call` works through the sentinels
    /// afterwards; the cost of wait_replicas is measured.
    @Suite(.timeLimit(.minutes(8)))
    struct SentinelFailoverTests {
        @Test func workersAndClientsFollowAFailoverMidDrainWithNothingLost() async throws {
            let r = try await ChildProcess.run(Paths.python3, [Paths.root + "/scripts/sentinel_failover.py", "--binary", Paths.celerity,
                                                               "--tasks", "20000", "--wait-cost", "5000", "--timeout", "240"], name: "failover")
            print(r.output)
            #expect(r.status == 0, "\(r.output.suffix(4000))")
            #expect(r.output.contains("failover: lost: 0,"))
            #expect(r.output.contains("wrong: 0"))
            #expect(r.output.contains("celerity call after the failover: exit 0, result 42"))
            #expect(r.output.contains("results stored again"))
            #expect(r.output.contains("failover: PASS"))
        }
    }
}

extension Integration.TLSTests {
    /// Sentinel and TLS together: a TLS-only master and a TLS-only sentinel; `celerity up` and
    /// `celerity call` given only `sentinel://…?ssl_…` (master_name from tasks.yaml) reach
    /// the master, and the sentinels, over TLS.
    @Test func aSentinelBackedTLSBroker() async throws {
        let certs = try await TLSCertificates.make()
        let master = try await TLSRedisServer.start(certs: certs, clientCertRequired: false)
        let sentinelPort = RedisServer.freePort()
        let conf = certs.dir + "/sentinel.conf"
        try """
        port 0
        tls-port \(sentinelPort)
        bind 127.0.0.1
        dir \(certs.dir)
        tls-cert-file \(certs.serverCert)
        tls-key-file \(certs.serverKey)
        tls-ca-cert-file \(certs.ca)
        tls-auth-clients no
        tls-replication yes
        sentinel monitor tlsmaster 127.0.0.1 \(master.port) 1
        """.write(toFile: conf, atomically: true, encoding: .utf8)
        let sentinel = try ChildProcess(name: "sentinel-tls", executable: Paths.which("redis-server"), arguments: [conf, "--sentinel"])
        defer { sentinel.signal(SIGKILL) }
        let url = "sentinel://127.0.0.1:\(sentinelPort)/0?ssl_cert_reqs=required&ssl_ca_certs=\(certs.ca)"
        // The URL alone (no master_name) is refused; with the name, a round trip to the master.
        #expect(throws: RedisError.self) { try RedisURL(string: url) }
        let redis = Redis(url: try RedisURL(string: url + "&master_name=tlsmaster"), label: "sentinel-tls", connectTimeout: 1)
        let reached = try await eventually(seconds: 10) { (try? await redis.call("SET", "sentinel-tls-key", "yes")) != nil }
        #expect(reached, "sentinel:\n\(sentinel.output)")
        #expect(try await redis.call("GET", "sentinel-tls-key").string == "yes")
        // A plain (non-TLS) sentinel URL to the TLS-only sentinel fails, saying which sentinel.
        let plain = Redis(url: try RedisURL(string: "sentinel://127.0.0.1:\(sentinelPort)/0?master_name=tlsmaster"), label: "plain", connectTimeout: 0.5)
        await #expect(throws: RedisError.self) { try await plain.ping() }

        let queue = "stls" + UUID().uuidString.prefix(6).lowercased()
        let manifest = certs.dir + "/tasks.yaml"
        try """
        broker: \(url)
        broker_transport_options:
          master_name: tlsmaster
        tasks:
          stls.add:
            queue: \(queue)
            builtin: add
        workers:
          \(queue):
            queues: [\(queue)]
            concurrency: 2
        """.write(toFile: manifest, atomically: true, encoding: .utf8)
        let up = try ChildProcess(name: "up-sentinel-tls", executable: Paths.celerity, arguments: ["up", "--manifest", manifest, "-l", "info"])
        let call = try await ChildProcess.run(Paths.celerity, ["call", "stls.add", "40", "2", "--manifest", manifest, "--timeout", "30"])
        #expect(call.status == 0 && call.output.trimmingCharacters(in: .whitespacesAndNewlines) == "42", "\(call.output)\nup:\n\(up.output.suffix(3000))")
        #expect(!up.output.contains("starting a private redis-server"))
        #expect(await up.stop(grace: 30) == 0, "up:\n\(up.output.suffix(3000))")
        await master.stop()
    }
}
