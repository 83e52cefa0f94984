import Celerity
import Foundation
import RedisClient
import Testing

/// Certificates made for one test run with the `openssl` CLI: a CA, a server certificate for
/// localhost and 127.0.0.1 signed by it, a client certificate signed by it, and a second CA
/// that signed nothing of this (the "wrong CA").
struct TLSCertificates {
    let dir: String
    var ca: String { dir + "/ca.pem" }
    var otherCA: String { dir + "/other-ca.pem" }
    var serverCert: String { dir + "/server.pem" }
    var serverKey: String { dir + "/server.key" }
    var clientCert: String { dir + "/client.pem" }
    var clientKey: String { dir + "/client.key" }

    static func make() async throws -> TLSCertificates {
        let dir = NSTemporaryDirectory() + "celerity-tls-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
        let script = """
        set -e
        cd '\(dir)'
        openssl req -x509 \(key) -keyout ca.key -out ca.pem -days 2 -subj '/CN=Celerity test CA'
        openssl req -x509 \(key) -keyout other-ca.key -out other-ca.pem -days 2 -subj '/CN=Another CA'
        openssl req \(key) -keyout server.key -out server.csr -subj '/CN=localhost'
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile server.ext
        openssl req \(key) -keyout client.key -out client.csr -subj '/CN=celerity-client'
        openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2
        """
        let r = try await ChildProcess.run("/bin/sh", ["-c", script], name: "openssl-certs")
        guard r.status == 0 else { throw TestFailure("openssl could not make the test certificates:\n\(r.output)") }
        return TLSCertificates(dir: dir)
    }
}

/// Debian's redis-server with TLS only (`--port 0 --tls-port P`), on loopback (127.0.0.1, and
/// 127.0.0.2, an address its certificate does not name).
final class TLSRedisServer: Sendable {
    let port: Int
    let certs: TLSCertificates
    let child: ChildProcess
    let clientCertRequired: Bool

    /// `rediss://127.0.0.1:P/db?…` trusting the test CA (and with the client certificate when
    /// the server asks for one).
    func url(db: Int = 0, host: String = "127.0.0.1") -> String {
        var u = "rediss://\(host):\(port)/\(db)?ssl_cert_reqs=required&ssl_ca_certs=\(certs.ca)"
        if clientCertRequired { u += "&ssl_certfile=\(certs.clientCert)&ssl_keyfile=\(certs.clientKey)" }
        return u
    }

    private init(port: Int, certs: TLSCertificates, child: ChildProcess, clientCertRequired: Bool) {
        self.port = port
        self.certs = certs
        self.child = child
        self.clientCertRequired = clientCertRequired
    }

    static func start(certs: TLSCertificates, clientCertRequired: Bool) async throws -> TLSRedisServer {
        let port = RedisServer.freePort()
        let child = try ChildProcess(name: "redis-tls-\(port)", executable: Paths.which("redis-server"), arguments: [
            "--port", "0", "--tls-port", String(port), "--bind", "127.0.0.1", "127.0.0.2", "--save", "", "--appendonly", "no",
            "--dir", NSTemporaryDirectory(), "--tls-cert-file", certs.serverCert, "--tls-key-file", certs.serverKey,
            "--tls-ca-cert-file", certs.ca, "--tls-auth-clients", clientCertRequired ? "yes" : "no",
        ])
        let server = TLSRedisServer(port: port, certs: certs, child: child, clientCertRequired: clientCertRequired)
        let deadline = Date().addingTimeInterval(10)
        var last = ""
        while Date() < deadline {
            do {
                try await Redis(url: try RedisURL(string: server.url()), label: "probe", connectTimeout: 0.5).ping()
                return server
            } catch { last = "\(error)" }
            try await Task.sleep(for: .milliseconds(50))
        }
        child.signal(SIGKILL)
        throw TestFailure("TLS redis-server on port \(port) did not answer: \(last)\n\(child.output)")
    }

    func stop() async {
        _ = try? await Redis(url: try! RedisURL(string: url()), label: "shutdown", connectTimeout: 1).send(RedisCommand("SHUTDOWN", "NOSAVE"))
        child.signal(SIGKILL)
        _ = await child.wait()
    }
}

/// rediss:// parsing (no server needed).
@Suite struct TLSURLTests {
    @Test func parsesKombusQueryParameters() throws {
        let u = try RedisURL(string: "rediss://:pw@redis.example:6380/2?ssl_cert_reqs=CERT_REQUIRED&ssl_ca_certs=/etc/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem")
        #expect(u.endpoint == .tcp(host: "redis.example", port: 6380))
        #expect(u.db == 2 && u.password == "pw")
        #expect(u.tls == TLSOptions(verify: .required, caFile: "/etc/ca.pem", certFile: "/c.pem", keyFile: "/k.pem"))
        #expect(u.description == "rediss://:***@redis.example:6380/2?ssl_cert_reqs=required&ssl_ca_certs=/etc/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem")
        #expect(try RedisURL(string: u.description.replacingOccurrences(of: "***", with: "pw")) == u)
        #expect(try RedisURL(string: "rediss://h").tls == TLSOptions())   // redis-py's default: required
        for (text, verify) in [("none", TLSOptions.Verify.none), ("CERT_NONE", .none), ("optional", .optional), ("CERT_OPTIONAL", .optional), ("required", .required)] {
            #expect(try RedisURL(string: "rediss://h/0?ssl_cert_reqs=\(text)").tls?.verify == verify)
        }
        #expect(try RedisURL(string: "rediss://h/0?ssl_check_hostname=false").tls?.checkHostname == false)
        #expect(try RedisURL(string: "redis://h/0").tls == nil)
    }

    @Test func badTLSParametersAreRefusedClearly() {
        let cases: [(String, String)] = [
            ("rediss://u:hunter2@h/0?ssl_cert_reqs=maybe", "ssl_cert_reqs must be required, optional or none"),
            ("rediss://h/0?ssl_ca_cert=/x.pem", "unknown TLS parameter 'ssl_ca_cert'"),
            ("redis://h/0?ssl_cert_reqs=required", "use rediss:// for TLS"),
            ("rediss://h/0?ssl_keyfile=/k.pem", "ssl_keyfile is set but ssl_certfile is not"),
            ("rediss://h/0?ssl_ca_certs=", "ssl_ca_certs is empty"),
        ]
        for (url, expected) in cases {
            do {
                _ = try RedisURL(string: url)
                Issue.record("\(url) was accepted")
            } catch {
                #expect(error.code == .invalidURL)
                #expect(error.message.contains(expected), "\(error)")
                #expect(!error.message.contains("hunter2"))
            }
        }
    }

    @Test func theManifestAcceptsRedissResultBackends() throws {
        let cfg = try ResultBackendConfig.parse("rediss://h:6380/1?ssl_cert_reqs=required")
        #expect(cfg.kind == .redis("rediss://h:6380/1?ssl_cert_reqs=required"))
    }
}

extension Integration {
    /// rediss:// end to end against Debian's redis-server with TLS on (docs/tls.md).
    @Suite(.timeLimit(.minutes(5)))
    struct TLSTests {
        /// `celerity up` from a manifest whose broker is rediss:// (the result backend is the
        /// broker's Redis, so results come back over TLS pub/sub), a Swift client's call, the
        /// CLI's `call` and `inspect ping` (the worker's pidbox is a pub/sub subscriber).
        @Test func workersClientsAndTheCLIWorkOverTLS() async throws {
            let certs = try await TLSCertificates.make()
            let server = try await TLSRedisServer.start(certs: certs, clientCertRequired: false)
            let dir = certs.dir
            let queue = "tls" + UUID().uuidString.prefix(6).lowercased()
            let manifest = dir + "/tasks.yaml"
            try """
            broker: \(server.url())
            tasks:
              tls.add:
                queue: \(queue)
                builtin: add
            workers:
              \(queue):
                queues: [\(queue)]
                concurrency: 2
            """.write(toFile: manifest, atomically: true, encoding: .utf8)
            let up = try ChildProcess(name: "up-tls", executable: Paths.celerity, arguments: ["up", "--manifest", manifest, "-l", "info"])
            let client = try CelerityClient(broker: server.url(), manifest: try Manifest.load(path: manifest))
            let value = try await client.send("tls.add", args: [.int(40), .int(2)]).get(timeout: .seconds(30))
            #expect(value == .int(42), "up:\n\(up.output.suffix(3000))")
            // Many at once: pipelined writes and replies larger than one TLS record.
            let handles = try await client.sendMany((0..<500).map { client.message("tls.add", args: [.int($0), .int($0)]) })
            let metas = try await client.gather(handles, timeout: .seconds(60))
            #expect(metas.enumerated().allSatisfy { $0.element.result == .int(2 * $0.offset) })
            let call = try await ChildProcess.run(Paths.celerity, ["call", "tls.add", "5", "6", "--manifest", manifest])
            #expect(call.status == 0 && call.output.trimmingCharacters(in: .whitespacesAndNewlines) == "11", "\(call.output)")
            let ping = try await ChildProcess.run(Paths.celerity, ["inspect", "ping", "--manifest", manifest])
            #expect(ping.status == 0 && ping.output.contains("\(queue)@") && ping.output.contains(": OK"), "\(ping.output)")
            #expect(!up.output.contains("starting a private redis-server"))
            #expect(await up.stop(grace: 30) == 0, "up:\n\(up.output.suffix(3000))")
            await server.stop()
        }

        /// Each misconfiguration fails at once with a message that says what is wrong.
        @Test func misconfigurationsGiveClearErrors() async throws {
            let certs = try await TLSCertificates.make()
            let server = try await TLSRedisServer.start(certs: certs, clientCertRequired: false)
            let plain = try await sharedRedis.value
            func failure(_ url: String) async -> String {
                do {
                    try await Redis(url: try RedisURL(string: url), label: "tls-bad", connectTimeout: 2, commandTimeout: 3).ping()
                    return "connected"
                } catch { return "\(error)" }
            }
            let p = server.port
            let wrongCA = await failure("rediss://127.0.0.1:\(p)/0?ssl_cert_reqs=required&ssl_ca_certs=\(certs.otherCA)")
            #expect(wrongCA.contains("certificate verify failed"), "\(wrongCA)")
            #expect(wrongCA.contains("ssl_ca_certs"), "\(wrongCA)")
            let noSuchCA = await failure("rediss://127.0.0.1:\(p)/0?ssl_ca_certs=\(certs.dir)/missing.pem")
            #expect(noSuchCA.contains("ssl_ca_certs (the CA file) \(certs.dir)/missing.pem does not exist"), "\(noSuchCA)")
            let notPEM = await failure("rediss://127.0.0.1:\(p)/0?ssl_ca_certs=\(certs.dir)/server.ext")
            #expect(notPEM.contains("cannot load the CA file"), "\(notPEM)")
            let plainToTLS = await failure("redis://127.0.0.1:\(p)/0")
            #expect(plainToTLS.contains("use rediss://"), "\(plainToTLS)")
            let tlsToPlain = await failure("rediss://127.0.0.1:\(plain.port)/0?ssl_cert_reqs=none")
            #expect(tlsToPlain.contains("TLS handshake") && tlsToPlain.contains("TLS"), "\(tlsToPlain)")
            // The certificate names localhost and 127.0.0.1, not 127.0.0.2 (also loopback).
            let wrongHost = await failure("rediss://127.0.0.2:\(p)/0?ssl_ca_certs=\(certs.ca)")
            #expect(wrongHost.contains("certificate does not name this host"), "\(wrongHost)")
            // What does work: by name, without the hostname check, and unverified.
            #expect(await failure("rediss://localhost:\(p)/0?ssl_ca_certs=\(certs.ca)") == "connected")
            #expect(await failure("rediss://127.0.0.2:\(p)/0?ssl_ca_certs=\(certs.ca)&ssl_check_hostname=false") == "connected")
            #expect(await failure("rediss://127.0.0.1:\(p)/0?ssl_cert_reqs=none") == "connected")
            // A worker pointed at the wrong CA says so in its log and does not crash.
            let worker = try ChildProcess(name: "tls-worker-wrong-ca", executable: Paths.celerity, arguments: [
                "worker", "-Q", "tlsnothing", "-n", "tlsbad@test", "--broker", "rediss://127.0.0.1:\(p)/0?ssl_ca_certs=\(certs.otherCA)",
            ])
            #expect(try await eventually(seconds: 15) { worker.output.contains("certificate verify failed") }, "\(worker.output)")
            _ = await worker.stop()
            await server.stop()
        }

        /// `tls-auth-clients yes`: with the client certificate it works, without it the error
        /// says a client certificate is wanted.
        @Test func clientCertificates() async throws {
            let certs = try await TLSCertificates.make()
            let server = try await TLSRedisServer.start(certs: certs, clientCertRequired: true)
            let withCert = Redis(url: try RedisURL(string: server.url()), label: "tls-cert")
            #expect(try await withCert.call("SET", "k", "v").string == "OK")
            #expect(try await withCert.call("GET", "k").string == "v")
            // The key inside the certificate file (ssl_keyfile left out), as Python's ssl allows.
            let both = certs.dir + "/client-both.pem"
            try (String(contentsOfFile: certs.clientCert, encoding: .utf8) + String(contentsOfFile: certs.clientKey, encoding: .utf8))
                .write(toFile: both, atomically: true, encoding: .utf8)
            let oneFile = Redis(url: try RedisURL(string: "rediss://127.0.0.1:\(server.port)/0?ssl_ca_certs=\(certs.ca)&ssl_certfile=\(both)"), label: "tls-one")
            #expect(try await oneFile.call("GET", "k").string == "v")
            let without = Redis(url: try RedisURL(string: "rediss://127.0.0.1:\(server.port)/0?ssl_ca_certs=\(certs.ca)"), label: "tls-nocert", connectTimeout: 2, commandTimeout: 3)
            do {
                _ = try await without.call("GET", "k")
                Issue.record("a client without a certificate was served")
            } catch let e as RedisError {
                #expect(e.message.contains("client certificate"), "\(e)")
                #expect(e.isConnectionProblem)
            }
            await server.stop()
        }

        /// Real Python Celery (kombu and redis-py over rediss://, checking the certificate)
        /// calls a Celerity worker: the tutorial's three tasks.
        @Test func pythonCeleryCallsACelerityWorkerOverTLS() async throws {
            let certs = try await TLSCertificates.make()
            let server = try await TLSRedisServer.start(certs: certs, clientCertRequired: false)
            let url = server.url()
            let worker = try ChildProcess(name: "tls-interop-worker", executable: Paths.celerity, arguments: [
                "worker", "-Q", "add,factorial,mat_mul", "-n", "tls-interop@test", "-c", "3", "--manifest", Paths.root + "/tasks.yaml",
            ], environment: ["CELERITY_BROKER_URL": url, "CELERITY_RESULT_BACKEND": url])
            let client = try await ChildProcess.run(Paths.python3, [Paths.root + "/interop/tutorial_clients.py", "--timeout", "150"],
                                                    environment: ["CELERITY_BROKER_URL": url, "CELERITY_RESULT_BACKEND": url], name: "tls-tutorial-clients")
            #expect(client.status == 0, "tutorial clients failed:\n\(client.output)\nworker log:\n\(worker.output.suffix(3000))")
            #expect(client.output.contains("OK   add_module.tasks.add(4, 6) = 10"))
            #expect(client.output.contains("OK   factorial_module.tasks.factorial(20000) = exact, 77338 digits"))
            #expect(client.output.contains("OK   mat_mul_module.tasks.mat_mul(20, 20) = 20x20 floats"))
            #expect(await worker.stop() == 0)
            await server.stop()
        }
    }
}
