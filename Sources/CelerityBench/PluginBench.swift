import Celerity
import Foundation

/// Per-call overhead and throughput of a trivial task (add) in each handler kind, through one
/// real worker on one private redis-server, in one run.
func pluginBenchmarks() async {
    let args = CommandLine.arguments
    let calls = args.firstIndex(of: "--calls").flatMap { Int(args[$0 + 1]) } ?? 2000
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    let me = CommandLine.arguments[0].hasPrefix("/") ? CommandLine.arguments[0] : FileManager.default.currentDirectoryPath + "/" + CommandLine.arguments[0]
    let bin = URL(fileURLWithPath: me).deletingLastPathComponent().appendingPathComponent("celerity").standardizedFileURL.path
    let port = 20000 + Int(getpid() % 20000)
    let dir = NSTemporaryDirectory() + "celerity-bench-\(getpid())"
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let manifest = dir + "/tasks.yaml"
    try? """
    tasks:
      b.add:
        queue: b
        builtin: add
      plugins.add:
        queue: pyo
        plugin: [python3, \(root)/plugins/tutorial_tasks.py]
      plugins.py_add:
        queue: pyp
        plugin: [python3, \(root)/plugins/py_tasks.py]
        mode: persistent
        processes: 1
      plugins.py_quick_add:
        queue: pyq
        plugin: [python3, \(root)/plugins/py_quick.py]
        mode: persistent
        processes: 1
      plugins.js_tutorial_add:
        queue: jso
        plugin: [node, \(root)/plugins/tutorial_tasks.js]
      plugins.js_add:
        queue: jsp
        plugin: [node, \(root)/plugins/js_add.js]
        mode: persistent
        processes: 1
    """.write(toFile: manifest, atomically: true, encoding: .utf8)
    func spawn(_ exe: String, _ a: [String], log: String) -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = a
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let h = FileHandle(forWritingAtPath: log) ?? FileHandle.nullDevice
        p.standardOutput = h
        p.standardError = h
        do { try p.run() } catch { print("cannot start \(exe): \(error)") }
        return p
    }
    let redis = spawn("/usr/bin/redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], log: dir + "/redis.log")
    let broker = "redis://127.0.0.1:\(port)/0"
    try? await Task.sleep(for: .milliseconds(300))
    let worker = spawn(bin, ["worker", "-Q", "b,pyo,pyp,pyq,jso,jsp", "-n", "bench@local", "-c", "8", "-l", "warning", "--manifest", manifest, "--broker", broker], log: dir + "/worker.log")
    defer {
        // SIGKILL: a benchmark's throwaway worker and Redis need no graceful stop.
        kill(worker.processIdentifier, SIGKILL)
        kill(redis.processIdentifier, SIGKILL)
    }
    guard let client = try? CelerityClient(broker: broker, resultBackend: broker, manifest: try Manifest.load(path: manifest)) else {
        print("cannot set up the client"); return
    }
    // Warm up: every handler answers once (persistent processes started, one-shot paths cached).
    for t in ["b.add", "plugins.add", "plugins.py_add", "plugins.py_quick_add", "plugins.js_tutorial_add", "plugins.js_add"] {
        do { _ = try await client.send(t, args: [1, 2]).get(timeout: .seconds(20)) } catch {
            print("warm-up of \(t) failed: \(error) (worker log: \(dir)/worker.log)")
            return
        }
    }
    struct Row { var name: String; var n: Int; var p50: Double; var mean: Double; var perSecond: Double }
    func measure(_ task: String, _ label: String, _ n: Int) async -> Row {
        // Latency: one call at a time.
        var lat: [Double] = []
        for i in 0..<n {
            let t0 = ContinuousClock.now
            _ = try? await client.send(task, args: [.int(i), 1]).get(timeout: .seconds(30))
            let d = ContinuousClock.now - t0
            lat.append(Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15)
        }
        lat.sort()
        // Throughput: n calls sent at once (one pipeline), then every result collected (gather).
        let t0 = ContinuousClock.now
        let handles = (try? await client.sendMany((0..<n).map { client.message(task, args: [.int($0), 1]) })) ?? []
        _ = try? await client.gather(handles, timeout: .seconds(300))
        let d = ContinuousClock.now - t0
        let secs = Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
        return Row(name: label, n: n, p50: lat[lat.count / 2], mean: lat.reduce(0, +) / Double(lat.count), perSecond: Double(n) / secs)
    }
    var rows: [Row] = []
    print("measuring (\(calls) calls per persistent/built-in handler)…")
    rows.append(await measure("b.add", "built-in Swift add", calls))
    rows.append(await measure("plugins.py_add", "Python, persistent (1 process)", calls))
    rows.append(await measure("plugins.py_quick_add", "Python, 1 process, pipelined", calls))
    rows.append(await measure("plugins.js_add", "Node, persistent (1 process)", calls))
    rows.append(await measure("plugins.add", "Python, one-shot", max(calls / 40, 20)))
    rows.append(await measure("plugins.js_tutorial_add", "Node, one-shot", max(calls / 40, 20)))
    let base = rows[0].p50
    func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
    func lpad(_ s: String, _ n: Int) -> String { s.count >= n ? s : String(repeating: " ", count: n - s.count) + s }
    print("add(i, 1) through one worker (-c 8) on one redis-server; latency = send + wait for the result, one call at a time")
    print(pad("handler", 34) + lpad("calls", 7) + lpad("p50 ms", 10) + lpad("mean ms", 10) + lpad("overhead", 11) + lpad("calls/s", 10))
    for r in rows {
        print(pad(r.name, 34) + lpad(String(r.n), 7) + lpad(String(format: "%.3f", r.p50), 10) + lpad(String(format: "%.3f", r.mean), 10)
              + lpad(String(format: "%+.3f", r.p50 - base), 11) + lpad(String(format: "%.0f", r.perSecond), 10))
    }
    print("overhead = p50 minus the built-in's p50: the plugin's per-call cost beyond the worker's own path")
}
