import Foundation
import RedisClient

/// A real redis-server on a free loopback port, started for the test run. A watchdog
/// kills it when the test process goes away, so nothing outlives the run.
final class RedisServer: Sendable {
    let port: Int
    let unixSocket: String
    let child: ChildProcess

    var url: String { "redis://127.0.0.1:\(port)/0" }
    func url(db: Int) -> String { "redis://127.0.0.1:\(port)/\(db)" }

    private init(port: Int, unixSocket: String, child: ChildProcess) {
        self.port = port
        self.unixSocket = unixSocket
        self.child = child
    }

    /// Starts a server (on `port`, or a free one) and waits until it answers PING.
    static func start(port fixedPort: Int? = nil, extra: [String] = []) async throws -> RedisServer {
        let port = fixedPort ?? freePort()
        let sock = NSTemporaryDirectory() + "celerity-redis-\(port).sock"
        let args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--unixsocket", sock, "--unixsocketperm", "700", "--dir", NSTemporaryDirectory()] + extra
        // ChildProcess's watchdog SIGKILLs the server if this test process dies.
        let child = try ChildProcess(name: "redis-\(port)", executable: Paths.which("redis-server"), arguments: args)
        let server = RedisServer(port: port, unixSocket: sock, child: child)
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            let r = Redis(url: try RedisURL(string: server.url), label: "probe", connectTimeout: 0.5)
            do { try await r.ping(); return server } catch let e as RedisError where e.code == .server && e.message.hasPrefix("NOAUTH") {
                return server   // started with --requirepass: it answers, just not to us
            } catch {}
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestFailure("redis-server on port \(port) did not start: \(child.output)")
    }

    /// SHUTDOWN NOSAVE, then the watchdog goes too. (Signals are not used for redis itself:
    /// children spawned from test threads may inherit a mask that blocks SIGTERM.)
    func stop() async {
        let r = Redis(url: try! RedisURL(string: url), label: "shutdown", connectTimeout: 1)
        _ = try? await r.send(RedisCommand("SHUTDOWN", "NOSAVE"))
        child.signal(SIGKILL)
        _ = await child.wait()
    }

    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}

/// One server shared by the whole run; tests keep apart by queue names (and DB numbers where
/// a Python client insists on fixed queue names).
let sharedRedis = Task { try await RedisServer.start() }

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}
