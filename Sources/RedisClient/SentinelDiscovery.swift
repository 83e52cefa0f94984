import Foundation
import Synchronization

/// Finds the current master of a Sentinel group, as the Sentinel client spec says
/// (https://redis.io/docs/reference/sentinel-clients/): ask the sentinels in turn, each with a
/// short timeout, `SENTINEL get-master-addr-by-name <name>`; the first that answers wins and
/// moves to the front of the list, so the next discovery asks it first. `RedisConnection`
/// then checks with `ROLE` that the address is a master.
///
/// Discovery runs every time a connection is opened, and a connection is opened again after
/// it broke (the old master died) or answered `READONLY` (it was demoted): that is how
/// workers and clients follow a failover. No `+switch-master` subscription: like redis-py
/// and kombu, a client learns of a failover when its connection fails.
///
/// Written here because no Swift package on this machine's mirror speaks Sentinel (the
/// mirror has no Redis client package at all; see DESIGN.md).
enum SentinelDiscovery {
    /// The sentinels' order per group, the one that answered last first. Shared by every
    /// connection of the process.
    private static let preferred = Mutex<[SentinelGroup: [SentinelGroup.Node]]>([:])

    static func master(of group: SentinelGroup, tls: TLSOptions?, connectTimeout: Double) throws(RedisError) -> SentinelGroup.Node {
        let order = preferred.withLock { $0[group] } ?? group.sentinels
        var failures: [String] = []
        let timeout = min(max(connectTimeout, 0.1), tls == nil ? 1.0 : 2.0)
        for node in order {
            let url = RedisURL(endpoint: .tcp(host: node.host, port: node.port), db: 0, username: group.username, password: group.password, tls: tls)
            do throws(RedisError) {
                let sentinel = try RedisConnection(url: url, connectTimeout: timeout, commandTimeout: timeout)
                let reply = try sentinel.command(RedisCommand("SENTINEL", "get-master-addr-by-name", group.masterName))
                switch reply {
                case let .array(items) where items.count == 2:
                    guard let host = items[0].string, let port = items[1].string.flatMap({ Int($0) }) else {
                        failures.append("\(node.host):\(node.port) answered \(reply)")
                        continue
                    }
                    if order.first != node {
                        preferred.withLock { $0[group] = [node] + order.filter { $0 != node } }
                    }
                    return SentinelGroup.Node(host: host, port: port)
                case .null, .array:
                    failures.append("\(node.host):\(node.port) knows no master named '\(group.masterName)'")
                case let .error(message):
                    failures.append("\(node.host):\(node.port): \(message)")
                default:
                    failures.append("\(node.host):\(node.port) answered \(reply)")
                }
            } catch {
                if error.isPermissionDenied { failures.append("\(node.host):\(node.port): \(error.message) (sentinel_password?)") }
                else { failures.append("\(node.host):\(node.port): \(error.message)") }
            }
        }
        throw RedisError(.connection, "no sentinel gave the address of master '\(group.masterName)': " + failures.joined(separator: "; "))
    }
}
