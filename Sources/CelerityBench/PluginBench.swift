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
    func ms(_ d: Duration) -> Double { Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15 }
    /// Latency of sequential calls, the handlers taking turns in blocks of 50 calls, so that
    /// the machine's ups and downs fall on all of them alike (the overhead is a difference).
    /// Blocks, not single calls: a plugin process left idle while three others take their
    /// turn wakes up cold (measured: +0.1 ms per call for Python), which is not the worker's
    /// doing, and the plugin's own cost (`pluginAlone`) is measured with consecutive calls too.
    func latencies(_ tasks: [String], _ n: Int) async -> [[Double]] {
        var lat = Array(repeating: [Double](), count: tasks.count)
        let block = min(50, n)
        var i = 0
        while i < n {
            for (k, task) in tasks.enumerated() {
                for j in i..<min(i + block, n) {
                    let t0 = ContinuousClock.now
                    _ = try? await client.send(task, args: [.int(j), 1]).get(timeout: .seconds(30))
                    lat[k].append(ms(ContinuousClock.now - t0))
                }
            }
            i += block
        }
        return lat.map { $0.sorted() }
    }
    /// Throughput: n calls sent at once (one pipeline), then every result collected (gather).
    func throughput(_ task: String, _ n: Int) async -> Double {
        let t0 = ContinuousClock.now
        let handles = (try? await client.sendMany((0..<n).map { client.message(task, args: [.int($0), 1]) })) ?? []
        let results = (try? await client.gather(handles, timeout: .seconds(300))) ?? []
        let secs = ms(ContinuousClock.now - t0) / 1000
        let right = results.enumerated().filter { i, m in m.state == .success && m.result.intValue == i + 1 }.count
        if right != n { print("warning: \(task): \(n - right) of \(n) results missing or wrong") }
        return Double(n) / secs
    }
    let handlers: [(task: String, label: String, oneShot: Bool)] = [
        ("b.add", "built-in Swift add", false),
        ("plugins.py_add", "Python, persistent (1 process)", false),
        ("plugins.py_quick_add", "Python, 1 process, pipelined", false),
        ("plugins.js_add", "Node, persistent (1 process)", false),
        ("plugins.add", "Python, one-shot", true),
        ("plugins.js_tutorial_add", "Node, one-shot", true),
    ]
    print("measuring (\(calls) calls per persistent/built-in handler)…")
    let small = max(calls / 40, 20)
    let fast = handlers.filter { !$0.oneShot }
    let slow = handlers.filter { $0.oneShot }
    let fastLat = await latencies(fast.map(\.task), calls)
    let slowLat = await latencies(slow.map(\.task), small)
    var rows: [Row] = []
    for (k, h) in fast.enumerated() {
        let l = fastLat[k]
        rows.append(Row(name: h.label, n: calls, p50: l[l.count / 2], mean: l.reduce(0, +) / Double(l.count), perSecond: await throughput(h.task, calls)))
    }
    for (k, h) in slow.enumerated() {
        let l = slowLat[k]
        rows.append(Row(name: h.label, n: small, p50: l[l.count / 2], mean: l.reduce(0, +) / Double(l.count), perSecond: await throughput(h.task, small)))
    }
    // The plugin's own cost per call: the same calls sent straight to one process over its
    // pipes (a blocking loop on a thread of its own), no worker and no Redis in between.
    var alone: [String: Double] = [:]
    alone["plugins.py_add"] = await pluginAlone(["python3", root + "/plugins/py_tasks.py"], task: "plugins.py_add", calls)
    alone["plugins.py_quick_add"] = await pluginAlone(["python3", root + "/plugins/py_quick.py"], task: "plugins.py_quick_add", calls)
    alone["plugins.js_add"] = await pluginAlone(["node", root + "/plugins/js_add.js"], task: "plugins.js_add", calls)
    let base = rows[0].p50
    func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
    func lpad(_ s: String, _ n: Int) -> String { s.count >= n ? s : String(repeating: " ", count: n - s.count) + s }
    print("add(i, 1) through one worker (-c 8) on one redis-server; latency = send + wait for the result, one call at a time")
    print(pad("handler", 34) + lpad("calls", 7) + lpad("p50 ms", 10) + lpad("mean ms", 10) + lpad("overhead", 11)
          + lpad("plugin", 9) + lpad("worker", 9) + lpad("calls/s", 10))
    for (k, r) in rows.enumerated() {
        let own = alone[handlers[k].task]
        let overhead = r.p50 - base
        print(pad(r.name, 34) + lpad(String(r.n), 7) + lpad(String(format: "%.3f", r.p50), 10) + lpad(String(format: "%.3f", r.mean), 10)
              + lpad(String(format: "%+.3f", overhead), 11) + lpad(own.map { String(format: "%.3f", $0) } ?? "-", 9)
              + lpad(own.map { String(format: "%+.3f", overhead - $0) } ?? "-", 9) + lpad(String(format: "%.0f", r.perSecond), 10))
    }
    print("overhead = p50 minus the built-in's p50: the plugin's per-call cost beyond the worker's own path;")
    print("plugin = p50 of the same call sent straight to one plugin process over its pipes (its own work: reading,")
    print("parsing, running, answering); worker = overhead minus that: what the worker adds for a plugin call")
}

/// p50 (ms) of `n` sequential calls sent straight to a persistent plugin process over its pipes.
func pluginAlone(_ argv: [String], task: String, _ n: Int) async -> Double {
    await withCheckedContinuation { (done: CheckedContinuation<Double, Never>) in
        let t = Thread {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = argv
            p.environment = ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin", "CELERITY_MODE": "persistent"]
            let input = Pipe(), output = Pipe()
            p.standardInput = input
            p.standardOutput = output
            p.standardError = FileHandle.nullDevice
            do { try p.run() } catch { done.resume(returning: .nan); return }
            let w = input.fileHandleForWriting.fileDescriptor, r = output.fileHandleForReading.fileDescriptor
            var pending: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 65536)
            func roundTrip(_ line: String) -> Bool {
                let bytes = Array((line + "\n").utf8)
                guard bytes.withUnsafeBytes({ write(w, $0.baseAddress, $0.count) }) == bytes.count else { return false }
                while true {
                    if let nl = pending.firstIndex(of: 10) { pending.removeSubrange(...nl); return true }
                    let got = buffer.withUnsafeMutableBytes { read(r, $0.baseAddress, $0.count) }
                    if got <= 0 { return false }
                    pending.append(contentsOf: buffer[0..<got])
                }
            }
            var lat: [Double] = []
            if roundTrip(#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocol":1}}"#) {
                for i in 0..<(n + 100) {
                    let line = #"{"jsonrpc":"2.0","id":"c\#(i)","method":"task/run","params":{"id":"c\#(i)","task":"\#(task)","args":[\#(i),1],"kwargs":{},"attempt":1,"deadline":null,"meta":{"queue":"q","root_id":null,"parent_id":null,"retries":0}}}"#
                    let t0 = ContinuousClock.now
                    guard roundTrip(line) else { break }
                    let d = ContinuousClock.now - t0
                    if i >= 100 { lat.append(Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15) }   // the first 100 warm up
                }
            }
            try? input.fileHandleForWriting.close()
            p.waitUntilExit()
            lat.sort()
            done.resume(returning: lat.isEmpty ? .nan : lat[lat.count / 2])
        }
        t.start()
    }
}
