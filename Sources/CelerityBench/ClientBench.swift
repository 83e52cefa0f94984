import Celerity
import Foundation

/// Client-side measurements against a worker that is already running (started by
/// bench/run.py): end-to-end throughput with bulk send + gather, and sequential latency.
/// Prints one JSON object on stdout for the orchestrator, and a line for humans on stderr.
///
///   celerity-bench e2e --broker URL [--calls N] [--task T] [--queue Q]
///   celerity-bench latency --broker URL [--calls N] [--task T] [--queue Q] [--args JSON]
func clientBenchmarks(_ mode: String) async {
    let a = CommandLine.arguments
    func opt(_ name: String) -> String? { a.firstIndex(of: name).flatMap { $0 + 1 < a.count ? a[$0 + 1] : nil } }
    let broker = opt("--broker") ?? "redis://127.0.0.1:6379/0"
    let calls = opt("--calls").flatMap(Int.init) ?? (mode == "e2e" ? 100_000 : 2000)
    let task = opt("--task") ?? "add_module.tasks.add"
    let queue = opt("--queue") ?? "add"
    let fixedArgs = opt("--args").flatMap { try? JSONValue(parsing: $0).arrayValue }
    let client: CelerityClient
    do { client = try CelerityClient(broker: broker) } catch {
        FileHandle.standardError.write(Data("cannot make a client for \(broker): \(error)\n".utf8))
        exit(2)
    }
    let options = CelerityClient.SendOptions(queue: queue)
    func args(_ i: Int) -> [JSONValue] { fixedArgs ?? [.int(i), .int(i)] }
    func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
    // Warm-up: connections, subscription, the worker's first call.
    for i in 0..<20 { _ = try? await client.send(task, args: args(i), options: options).get(timeout: .seconds(60)) }
    var report: [JSONMember] = [JSONMember("mode", .string(mode)), JSONMember("calls", .int(calls)), JSONMember("task", .string(task))]
    switch mode {
    case "e2e":
        let t0 = ContinuousClock.now
        let messages = (0..<calls).map { client.message(task, args: args($0), options: options) }
        let handles: [AsyncResult]
        do { handles = try await client.sendMany(messages) } catch {
            FileHandle.standardError.write(Data("send failed: \(error)\n".utf8)); exit(1)
        }
        let sent = ContinuousClock.now - t0
        let results: [ResultMeta]
        do { results = try await client.gather(handles, timeout: .seconds(600)) } catch {
            FileHandle.standardError.write(Data("gather failed: \(error)\n".utf8)); exit(1)
        }
        let total = seconds(ContinuousClock.now - t0)
        var wrong = 0
        for (i, m) in results.enumerated() where m.state != .success || (fixedArgs == nil && m.result.intValue != 2 * i) { wrong += 1 }
        report += [JSONMember("seconds", .double(total)), JSONMember("send_seconds", .double(seconds(sent))),
                   JSONMember("per_second", .double(Double(calls) / total)), JSONMember("wrong", .int(wrong))]
        FileHandle.standardError.write(Data(String(format: "e2e: %d calls sent in %.2f s, all results in %.2f s: %.0f calls/s, %d wrong\n",
                                                   calls, seconds(sent), total, Double(calls) / total, wrong).utf8))
    default:
        var lat: [Double] = []
        lat.reserveCapacity(calls)
        var failed = 0
        for i in 0..<calls {
            let t0 = ContinuousClock.now
            do { _ = try await client.send(task, args: args(i), options: options).get(timeout: .seconds(60)) } catch { failed += 1 }
            lat.append(seconds(ContinuousClock.now - t0) * 1000)
        }
        lat.sort()
        func pct(_ p: Double) -> Double { lat[min(Int(Double(lat.count) * p), lat.count - 1)] }
        report += [JSONMember("p50_ms", .double(pct(0.5))), JSONMember("p99_ms", .double(pct(0.99))),
                   JSONMember("mean_ms", .double(lat.reduce(0, +) / Double(lat.count))), JSONMember("failed", .int(failed))]
        FileHandle.standardError.write(Data(String(format: "latency: %d sequential calls: p50 %.3f ms, p99 %.3f ms, %d failed\n",
                                                   calls, pct(0.5), pct(0.99), failed).utf8))
    }
    print(JSONValue.object(report).serialized())
}
