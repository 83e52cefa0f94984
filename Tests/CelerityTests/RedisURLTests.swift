import RedisClient
import Testing

@Suite struct RedisURLTests {
    @Test func parsesHostPortDatabaseAndACLCredentials() throws {
        let u = try RedisURL(string: "redis://alice:s3cr%40t@example.org:6390/4")
        #expect(u.endpoint == .tcp(host: "example.org", port: 6390))
        #expect(u.db == 4)
        #expect(u.username == "alice")
        #expect(u.password == "s3cr@t")
        #expect(u.description == "redis://alice:***@example.org:6390/4")
        let p = try RedisURL(string: "redis://:onlypass@localhost")
        #expect(p.username == nil && p.password == "onlypass" && p.db == 0)
        #expect(p.endpoint == .tcp(host: "localhost", port: 6379))
    }

    @Test func parsesUnixSockets() throws {
        let u = try RedisURL(string: "unix:///run/redis/redis.sock?db=2")
        #expect(u.endpoint == .unix(path: "/run/redis/redis.sock"))
        #expect(u.db == 2)
    }

    @Test func errorsNeverShowThePassword() {
        for bad in ["redis://user:hunter2@host:99999/0", "redis://user:hunter2@host/abc", "mysql://user:hunter2@host", "rediss://user:hunter2@host?ssl_cert_reqs=bogus"] {
            do {
                _ = try RedisURL(string: bad)
                Issue.record("\(bad) was accepted")
            } catch {
                #expect(!error.description.contains("hunter2"), "\(error)")
                #expect(error.code == .invalidURL)
            }
        }
        #expect(RedisURL.redact("redis://u:pw@h:1/0") == "redis://u:***@h:1/0")
    }
}
