@testable import Celerity
import Foundation
import RedisClient

/// A worker's broker side without a worker: a node and a queue of its own on a real Redis,
/// with a client to build messages and a plain connection to look at the keys.
struct BrokerFixture {
    let redis: Redis
    let broker: WorkerBroker
    let node: String
    let queue: String
    let client: CelerityClient
    init(_ server: RedisServer, _ name: String) throws {
        node = "\(name)-\(UUID().uuidString.prefix(8))@test"
        queue = "\(name)-\(UUID().uuidString.prefix(8))"
        broker = WorkerBroker(url: try RedisURL(string: server.url), node: node)
        redis = try Redis(server.url, label: "test")
        client = try CelerityClient(broker: server.url, resultBackend: server.url)
    }
    /// An encoded call of `t.add` routed to `queue`.
    func message(_ args: [JSONValue]) -> [UInt8] { client.message("t.add", args: args, options: .init(queue: queue)).encode() }
}
