import Foundation
import RedisClient
import Testing

@Suite(.timeLimit(.minutes(2)))
struct RedisClientTests {
    @Test func commandsAreBinarySafeAndRepliesTyped() async throws {
        let server = try await sharedRedis.value
        let r = try Redis(server.url)
        let key = "bin-\(UUID().uuidString)"
        let value: [UInt8] = [0, 1, 2, 0x06, 0x16, 0xff, 0, 10, 13]
        #expect(try await r.call("SET", key, value) == .status("OK"))
        #expect(try await r.call("GET", key) == .bulk(value))
        #expect(try await r.call("STRLEN", key) == .integer(value.count))
        #expect(try await r.call("GET", "missing-\(key)") == .null)
        #expect(try await r.call("MGET", key, "missing-\(key)") == .array([.bulk(value), .null]))
        // Server errors come back typed (send) or thrown (call).
        let e = try await r.send(RedisCommand("INCR", key))
        guard case let .error(message) = e else { Issue.record("expected an error reply, got \(e)"); return }
        #expect(message.hasPrefix("ERR"))
        await #expect(throws: RedisError.self) { try await r.call("NOSUCHCOMMAND") }
    }

    @Test func pipelinesReturnEveryReplyInOrder() async throws {
        let server = try await sharedRedis.value
        let r = try Redis(server.url)
        let key = "pipe-\(UUID().uuidString)"
        let commands = (0..<500).map { RedisCommand("RPUSH", key, $0) }
        let replies = try await r.pipeline(commands)
        #expect(replies.count == 500)
        #expect(replies.last == .integer(500))
        #expect(try await r.call("LINDEX", key, 499).string == "499")
    }

    /// Batches written without waiting (the event flusher's way): several in flight, large
    /// ones too, then their replies read in order, the error replies returned.
    @Test func batchesWrittenAheadOfTheirReplies() async throws {
        let server = try await sharedRedis.value
        let r = try Redis(server.url)
        let key = "ahead-\(UUID().uuidString)"
        let big = [UInt8](repeating: UInt8(ascii: "x"), count: 3 << 20)   // more than a socket buffer
        let errors = try await r.withSession { s throws(RedisError) -> [String] in
            var sent = 0
            for i in 0..<50 {
                var batch = RESPBatch()
                batch.command(arguments: 3)
                batch.argument("RPUSH")
                batch.argument(Array(key.utf8))
                batch.argument(i == 20 ? big : Array(String(i).utf8))
                if i == 30 {   // a command Redis refuses
                    batch.command(arguments: 2)
                    batch.argument("INCR")
                    batch.argument(Array(key.utf8))
                }
                try s.write(batch)
                sent += batch.count
            }
            return try s.readErrors(sent)
        }
        #expect(errors.count == 1 && errors[0].hasPrefix("WRONGTYPE"), "\(errors)")
        #expect(try await r.call("LLEN", key) == .integer(50))
        #expect(try await r.call("LINDEX", key, 49).string == "49")
        #expect(try await r.call("STRLEN", "no-\(key)") == .integer(0))   // the connection is still in step
    }

    @Test func authenticatesAsAnACLUserAndSelectsTheDatabase() async throws {
        let server = try await sharedRedis.value
        let admin = try Redis(server.url)
        let user = "u\(UUID().uuidString.prefix(6))"
        try await admin.call("ACL", "SETUSER", user, "on", ">pa55word", "~*", "&*", "+@all")
        let r = try Redis("redis://\(user):pa55word@127.0.0.1:\(server.port)/5")
        #expect(try await r.call("ACL", "WHOAMI").string == user)
        try await r.call("SET", "acl-db5", "yes")
        #expect(try await admin.call("GET", "acl-db5") == .null)       // db 0
        let db5 = try Redis(server.url(db: 5))
        #expect(try await db5.call("GET", "acl-db5").string == "yes")
        // A wrong password fails clearly, without echoing it.
        let wrong = try Redis("redis://\(user):nottheone@127.0.0.1:\(server.port)/0")
        do {
            try await wrong.ping()
            Issue.record("wrong password accepted")
        } catch let e as RedisError {
            #expect(e.code == .authentication)
            #expect(!e.description.contains("nottheone"))
        }
    }

    @Test func connectsOverAUnixSocket() async throws {
        let server = try await sharedRedis.value
        let r = try Redis("unix://\(server.unixSocket)?db=0")
        try await r.ping()
        try await r.call("SET", "via-unix", "1")
        #expect(try await Redis(server.url).call("GET", "via-unix").string == "1")
    }

    @Test func blockingCallsDoNotStallOtherTasks() async throws {
        let server = try await sharedRedis.value
        // Eight concurrent 2-second BLPOPs (four times the cooperative pool's 2 threads here),
        // then a PING on another connection: it must answer long before the BLPOPs time out.
        // If blocking calls ran on the pool, the PING could not run until they returned.
        let key = "block-\(UUID().uuidString)"
        let start = ContinuousClock.now
        let pingAfter = try await withThrowingTaskGroup(of: Duration?.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    let r = try Redis(server.url)
                    _ = try await r.blocking(RedisCommand("BLPOP", key, 2), timeout: 2)
                    return nil
                }
            }
            group.addTask {
                try await Task.sleep(for: .milliseconds(300))
                try await Redis(server.url).ping()
                return ContinuousClock.now - start
            }
            var ping: Duration?
            for try await d in group { if let d { ping = d } }
            return ping
        }
        let elapsed = try #require(pingAfter)
        #expect(elapsed < .milliseconds(1700), "PING took until \(elapsed) after the BLPOPs started")
    }

    @Test func reconnectsWithBackoffWhenTheServerComesBack() async throws {
        let server = try await RedisServer.start()
        let port = server.port
        let r = try Redis(server.url)
        try await r.call("SET", "k", "v")
        await server.stop()
        do {
            try await r.ping()
            Issue.record("ping succeeded with the server down")
        } catch let e as RedisError {
            #expect(e.isConnectionProblem)
        }
        let again = try await RedisServer.start(port: port)
        // Within the backoff window calls fail fast; then the connection is re-established.
        let deadline = Date().addingTimeInterval(10)
        var ok = false
        while Date() < deadline && !ok {
            ok = (try? await r.ping()) != nil
            if !ok { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(ok)
        await again.stop()
    }

    @Test func scriptsRunByShaAndReloadAfterScriptFlush() async throws {
        let server = try await sharedRedis.value
        let r = try Redis(server.url)
        let script = RedisScript("return tonumber(ARGV[1]) + 1")
        #expect(try await r.evalScript(script, keys: [], args: [41]) == .integer(42))
        try await Redis(server.url).call("SCRIPT", "FLUSH")
        #expect(try await r.evalScript(script, keys: [], args: [1]) == .integer(2))
    }
}
