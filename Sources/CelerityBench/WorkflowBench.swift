import Celerity
import Foundation

/// Workflows from Celerity's Swift client against a worker that is already running (started
/// by bench/run.py): a chain of N add steps, or a chord of N add parts with a sum body.
/// Timed from the start of `apply` (building the messages included) to the final result;
/// the send (`apply` returning: ids frozen, chord size set, every message pushed) separately.
/// Prints one JSON object on stdout for the orchestrator, and a line for humans on stderr.
///
///   celerity-bench workflow --broker URL --chain-steps N [--task T] [--queue Q]
///   celerity-bench workflow --broker URL --chord-parts N [--task T] [--body B] [--queue Q]
func workflowBenchmark() async {
    let a = CommandLine.arguments
    func opt(_ name: String) -> String? { a.firstIndex(of: name).flatMap { $0 + 1 < a.count ? a[$0 + 1] : nil } }
    let broker = opt("--broker") ?? "redis://127.0.0.1:6379/0"
    let task = opt("--task") ?? "add_module.tasks.add"
    let body = opt("--body") ?? "add_module.tasks.tsum"
    let queue = opt("--queue") ?? "add"
    let steps = opt("--chain-steps").flatMap(Int.init)
    let parts = opt("--chord-parts").flatMap(Int.init)
    guard (steps ?? 0) > 0 || (parts ?? 0) > 0, steps == nil || parts == nil else {
        FileHandle.standardError.write(Data("workflow: give one of --chain-steps N or --chord-parts N (N > 0)\n".utf8))
        exit(2)
    }
    let client: CelerityClient
    do { client = try CelerityClient(broker: broker) } catch {
        FileHandle.standardError.write(Data("cannot make a client for \(broker): \(error)\n".utf8))
        exit(2)
    }
    let options = CelerityClient.SendOptions(queue: queue)
    func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
    // Warm-up: connections, subscription, the worker's first call, a short workflow.
    for i in 0..<20 { _ = try? await client.send(task, args: [.int(i), .int(i)], options: options).get(timeout: .seconds(60)) }
    _ = try? await client.apply(client.chain([client.signature(task, args: [1, 1], options: options), client.signature(task, args: [1], options: options)]))
        .get(timeout: .seconds(60))

    let kind = steps != nil ? "chain" : "chord"
    let n = steps ?? parts!
    let expected: Int
    let t0 = ContinuousClock.now
    let workflow: Signature
    if let steps {
        // add(1, 1), then add(previous, 1) steps - 1 times: steps + 1.
        workflow = client.chain([client.signature(task, args: [1, 1], options: options)]
                                + (1..<steps).map { _ in client.signature(task, args: [1], options: options) })
        expected = steps + 1
    } else {
        // add(i, i) for i < parts, then sum: parts × (parts - 1).
        workflow = client.chord((0..<n).map { client.signature(task, args: [.int($0), .int($0)], options: options) },
                                client.signature(body, options: options))
        expected = n * (n - 1)
    }
    let handle: WorkflowResult
    do { handle = try await client.apply(workflow) } catch {
        FileHandle.standardError.write(Data("workflow: send failed: \(error)\n".utf8)); exit(1)
    }
    let sent = seconds(ContinuousClock.now - t0)
    let value: JSONValue
    do { value = try await handle.get(timeout: .seconds(900)) } catch {
        FileHandle.standardError.write(Data("workflow: no result: \(error)\n".utf8)); exit(1)
    }
    let total = seconds(ContinuousClock.now - t0)
    let ok = value.intValue == expected
    let report: [JSONMember] = [
        JSONMember("mode", "workflow"), JSONMember("kind", .string(kind)), JSONMember("size", .int(n)),
        JSONMember("send_seconds", .double(sent)), JSONMember("seconds", .double(total)),
        JSONMember("result", value), JSONMember("expected", .int(expected)), JSONMember("ok", .bool(ok)),
    ]
    let verdict = ok ? "correct" : "WRONG: \(value.serialized())"
    FileHandle.standardError.write(Data(("workflow: \(kind) of \(n): " + String(format: "sent in %.3f s, result in %.3f s", sent, total) + " (\(verdict))\n").utf8))
    print(JSONValue.object(report).serialized())
}
