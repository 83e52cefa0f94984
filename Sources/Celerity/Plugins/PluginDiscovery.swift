import Foundation
import Synchronization

/// A folder of drop-in plugins (`plugin_dirs` in tasks.yaml).
public struct PluginDirectory: Sendable, Hashable {
    /// As written in tasks.yaml.
    public var path: String
    /// Resolved against the manifest's folder.
    public var absolutePath: String
    /// The queue of the tasks found here that do not suggest one (default: the folder's name).
    public var queue: String
    public init(path: String, absolutePath: String, queue: String? = nil) {
        self.path = path
        self.absolutePath = absolutePath
        self.queue = queue ?? URL(fileURLWithPath: absolutePath).lastPathComponent
    }
}

/// What discovery found, for `celerity check` and the worker's log.
public struct DiscoveryReport: Sendable, Hashable {
    public struct Found: Sendable, Hashable {
        public var task: String
        /// The plugin file, relative to the manifest's folder.
        public var file: String
        public var argv: [String]
        /// The plugin_dirs entry it was found in, as written.
        public var directory: String
        /// Keys tasks.yaml set for this task over the plugin's suggestion.
        public var overridden: [String]
    }
    public struct Problem: Sendable, Hashable, CustomStringConvertible {
        /// The plugin file, relative to the manifest's folder.
        public var file: String
        public var message: String
        public var description: String { "\(file): \(message)" }
    }
    public var directories: [PluginDirectory] = []
    public var found: [Found] = []
    public var problems: [Problem] = []
    /// Plugin files asked to describe themselves, and how many answers came from the cache.
    public var plugins = 0
    public var cached = 0
    public init() {}
}

/// One plugin file of a plugin folder and its answer to `describe`.
struct DiscoveredPlugin: Sendable {
    var file: String            // relative to the manifest's folder
    var absolutePath: String
    var argv: [String]          // as a tasks.yaml `plugin:` would say it (relative paths)
    var directory: PluginDirectory
    var answer: Result<PluginDescription, DescribeError>
    var fromCache: Bool
}

/// Finds the plugins of the `plugin_dirs` and asks each to describe itself (`describe` in the
/// plugin protocol, one-shot form: `CELERITY_MODE=describe`, the request on stdin).
///
/// Written here rather than with swift-subprocess: the manifest is loaded synchronously (by the
/// CLI before anything runs, and by a reloading worker on a thread of its own), and
/// Foundation's `Process` runs a program synchronously with a time limit.
enum PluginDiscovery {
    /// Seconds a plugin has to answer `describe`.
    static let timeout: Double = 10
    /// Largest describe answer read.
    static let maxAnswerBytes = 1 << 20

    /// Interpreters by file extension, for plugins that are not executable themselves.
    static let interpreters: [String: String] = ["py": "python3", "js": "node", "mjs": "node", "cjs": "node", "sh": "sh", "rb": "ruby"]

    /// The plugin files of `dir` (top level only), with the argv each is run with; files that are not
    /// plugins are skipped (see docs/plugins.md, "Discovery").
    static func candidates(in dir: PluginDirectory, baseDirectory: String) -> [(file: String, absolute: String, argv: [String])] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir.absolutePath) else { return [] }
        var out: [(String, String, [String])] = []
        for name in names.sorted() {
            if name.hasPrefix(".") || name.hasPrefix("_") || name.hasPrefix("test_") || name.contains("_test.") || name.contains(".test.")
                || name.hasPrefix("celerity_plugin.") { continue }
            let absolute = (dir.absolutePath as NSString).appendingPathComponent(name)
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: absolute, isDirectory: &isDir), !isDir.boolValue else { continue }
            let ext = (name as NSString).pathExtension
            let relative = relativePath(absolute, to: baseDirectory)
            let argv: [String]
            if let interpreter = interpreters[ext] {
                argv = [interpreter, relative]
            } else if Executables.isExecutableFile(absolute) {
                argv = [relative.contains("/") ? relative : "./" + relative]
            } else {
                continue
            }
            if optedOut(absolute) { continue }
            out.append((relative, absolute, argv))
        }
        return out
    }

    /// A helper library or other non-plugin says `celerity-check: none` near its top.
    static func optedOut(_ path: String) -> Bool {
        guard let handle = FileHandle(forReadingAtPath: path) else { return true }
        defer { try? handle.close() }
        let head = (try? handle.read(upToCount: 2048)) ?? Data()
        let lines = String(decoding: head, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).prefix(5)
        return lines.contains { $0.contains("celerity-check: none") }
    }

    static func relativePath(_ absolute: String, to base: String) -> String {
        let b = (base as NSString).standardizingPath
        let a = (absolute as NSString).standardizingPath
        if a.hasPrefix(b + "/") { return String(a.dropFirst(b.count + 1)) }
        return a
    }

    /// Every plugin of `dirs`, each described (in parallel; answers cached by file identity).
    static func discover(_ dirs: [PluginDirectory], baseDirectory: String) -> [DiscoveredPlugin] {
        let found = dirs.flatMap { d in candidates(in: d, baseDirectory: baseDirectory).map { (d, $0) } }
        if found.isEmpty { return [] }
        let cache = DescribeCache.load()
        let results = Mutex<[Int: DiscoveredPlugin]>([:])
        DispatchQueue.concurrentPerform(iterations: found.count) { i in
            let (dir, c) = found[i]
            let key = DescribeCache.key(argv: c.argv, script: c.absolute)
            let answer: Result<JSONValue, DescribeError>
            let fromCache: Bool
            if let hit = cache.answer(for: key) {
                answer = hit
                fromCache = true
            } else {
                answer = describe(argv: c.argv, baseDirectory: baseDirectory)
                fromCache = false
            }
            let parsed = answer.flatMap { doc in Result { () throws(DescribeError) in try PluginDescription.parse(doc) } }
            results.withLock {
                $0[i] = DiscoveredPlugin(file: c.file, absolutePath: c.absolute, argv: c.argv, directory: dir, answer: parsed, fromCache: fromCache)
            }
            if !fromCache, !key.isEmpty, answer.cacheable { cache.store(key: key, answer: answer) }
        }
        cache.save()
        return results.withLock { r in (0..<found.count).compactMap { r[$0] } }
    }

    /// Runs one plugin in describe mode and returns its answer (the JSON document) or what went wrong.
    static func describe(argv: [String], baseDirectory: String) -> Result<JSONValue, DescribeError> {
        let program = argv[0]
        let executable: String
        if program.contains("/") {
            executable = program.hasPrefix("/") ? program : (baseDirectory as NSString).appendingPathComponent(program)
        } else if let found = Executables.find(program) {
            executable = found
        } else {
            return .failure(DescribeError("'\(program)' (to run it) not found on PATH"))
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = Array(argv.dropFirst())
        process.currentDirectoryURL = URL(fileURLWithPath: baseDirectory)
        let mine = ProcessInfo.processInfo.environment
        var env: [String: String] = ["CELERITY_PROTOCOL": "1", "CELERITY_MODE": "describe"]
        for name in OneShotPlugin.passThrough { if let v = mine[name] { env[name] = v } }
        process.environment = env
        let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stderr
        let done = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in done.signal() }
        do { try process.run() } catch {
            return .failure(DescribeError("could not start \(argv.joined(separator: " ")): \(error.localizedDescription)"))
        }
        // Read both pipes while the program runs (a full pipe would stall it).
        let out = ByteSink(cap: maxAnswerBytes), err = ByteSink(cap: 64 << 10)
        let readers = DispatchGroup()
        for (pipe, sink) in [(stdout, out), (stderr, err)] {
            DispatchQueue.global().async(group: readers) {
                let handle = pipe.fileHandleForReading
                while let chunk = try? handle.read(upToCount: 65536), !chunk.isEmpty { sink.append(chunk) }
            }
        }
        // A plugin that exits without reading stdin must not kill this process with SIGPIPE.
        PipeWriter.ignoreSIGPIPE
        let request = Data(#"{"method": "describe", "protocol": 1}"#.utf8 + [0x0A])
        try? stdin.fileHandleForWriting.write(contentsOf: request)
        try? stdin.fileHandleForWriting.close()
        var timedOut = false
        if done.wait(timeout: .now() + timeout) == .timedOut {
            timedOut = true
            kill(process.processIdentifier, SIGKILL)
            _ = done.wait(timeout: .now() + 2)
        }
        // A grandchild may still hold the pipes open: give the readers a moment, no more.
        _ = readers.wait(timeout: .now() + 2)
        let errText = String(decoding: err.bytes, as: UTF8.self)
        let tail = errText.split(separator: "\n").suffix(3).joined(separator: " | ")
        let said = tail.isEmpty ? "" : " (stderr: \(tail))"
        if timedOut { return .failure(DescribeError("no describe answer within \(Int(timeout)) s; killed\(said)", transient: true)) }
        let status = process.terminationStatus
        if process.terminationReason == .uncaughtSignal {
            return .failure(DescribeError("killed by signal \(status) while describing itself\(said)"))
        }
        let bytes = out.bytes
        let text = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if status != 0 {
            return .failure(DescribeError("does not answer describe: exit status \(status)\(said)"))
        }
        if text.isEmpty { return .failure(DescribeError("does not answer describe: nothing on stdout\(said)")) }
        do {
            return .success(try JSONValue(parsing: text))
        } catch {
            let shown = text.count > 120 ? String(text.prefix(120)) + "…" : text
            return .failure(DescribeError("does not answer describe: stdout is not one JSON document (\(error)): \(shown)"))
        }
    }
}

/// What a pipe gave, up to a cap (the rest is read and dropped).
final class ByteSink: Sendable {
    private let data = Mutex(Data())
    let cap: Int
    init(cap: Int) { self.cap = cap }
    func append(_ chunk: Data) { data.withLock { if $0.count < cap { $0.append(chunk.prefix(cap - $0.count)) } } }
    var bytes: Data { data.withLock { $0 } }
}

extension Result where Success == JSONValue, Failure == DescribeError {
    /// A time-out may not happen again: it is not remembered.
    var cacheable: Bool {
        if case let .failure(e) = self { return !e.transient }
        return true
    }
}

/// Describe answers remembered by plugin file identity (size, modification time and inode of the
/// script and of the language helpers beside it), so that `celerity call` does not start every
/// plugin each time. `$CELERITY_CACHE_DIR` (or `$XDG_CACHE_HOME/celerity`, `~/.cache/celerity`)
/// holds `describe.json`; `CELERITY_CACHE_DIR=off` turns it off. Entries of files that changed are
/// replaced, so it does not grow with edits.
final class DescribeCache: Sendable {
    private let path: String?
    private let entries: Mutex<[String: JSONValue]>
    /// The entries this process found, written over the file's current ones at `save`.
    private let stored = Mutex<[String: JSONValue]>([:])

    private init(path: String?, entries: [String: JSONValue]) {
        self.path = path
        self.entries = Mutex(entries)
    }

    static func location() -> String? {
        let env = ProcessInfo.processInfo.environment
        if let d = env["CELERITY_CACHE_DIR"] { return d == "off" || d.isEmpty ? nil : d + "/describe.json" }
        if let x = env["XDG_CACHE_HOME"], !x.isEmpty { return x + "/celerity/describe.json" }
        if let h = env["HOME"], !h.isEmpty { return h + "/.cache/celerity/describe.json" }
        return nil
    }

    static func load() -> DescribeCache {
        guard let path = location() else { return DescribeCache(path: nil, entries: [:]) }
        var entries: [String: JSONValue] = [:]
        if let data = FileManager.default.contents(atPath: path), let doc = try? JSONValue(parsing: String(decoding: data, as: UTF8.self)),
           let members = doc.objectValue {
            for m in members { entries[m.key] = m.value }
        }
        return DescribeCache(path: path, entries: entries)
    }

    /// "script\u{1F}argv\u{1E}identity": the entry's name is the script and argv; its value
    /// remembers the identity: the `FileStamp` (size, mtime, inode, as `--reload` tells a change)
    /// of the script and of the `celerity_plugin.*` helpers beside it.
    static func key(argv: [String], script: String) -> String {
        var ids = [identity(script)]
        let dir = (script as NSString).deletingLastPathComponent
        let helpers = (try? FileManager.default.contentsOfDirectory(atPath: dir))?.filter { $0.hasPrefix("celerity_plugin.") }.sorted() ?? []
        for helper in helpers { ids.append(helper + "=" + identity((dir as NSString).appendingPathComponent(helper))) }
        return (script as NSString).standardizingPath + "\u{1F}" + argv.joined(separator: "\u{1F}") + "\u{1E}" + ids.joined(separator: ",")
    }

    static func identity(_ path: String) -> String { FileStamp.of(path)?.description ?? "missing" }

    private static func split(_ key: String) -> (name: String, identity: String) {
        let parts = key.split(separator: "\u{1E}", maxSplits: 1, omittingEmptySubsequences: false)
        return (String(parts[0]), parts.count > 1 ? String(parts[1]) : "")
    }

    func answer(for key: String) -> Result<JSONValue, DescribeError>? {
        guard path != nil else { return nil }
        let (name, identity) = Self.split(key)
        guard let entry = entries.withLock({ $0[name] }), entry["identity"]?.stringValue == identity else { return nil }
        if let doc = entry["answer"] { return .success(doc) }
        if let e = entry["error"]?.stringValue { return .failure(DescribeError(e)) }
        return nil
    }

    func store(key: String, answer: Result<JSONValue, DescribeError>) {
        guard path != nil else { return }
        let (name, identity) = Self.split(key)
        let value: JSONValue
        switch answer {
        case let .success(doc): value = .object([JSONMember("identity", .string(identity)), JSONMember("answer", doc)])
        case let .failure(e): value = .object([JSONMember("identity", .string(identity)), JSONMember("error", .string(e.message))])
        }
        entries.withLock { $0[name] = value }
        stored.withLock { $0[name] = value }
    }

    /// Merged into the file as it is now (other processes may have added entries since it was
    /// read), under an exclusive lock, and written atomically (a temporary file renamed), so
    /// concurrent CLIs neither lose entries nor read half a file.
    func save() {
        let mine = stored.withLock { $0 }
        guard let path, !mine.isEmpty else { return }
        let dir = (path as NSString).deletingLastPathComponent
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let lock = open(path + ".lock", O_CREAT | O_RDWR | O_CLOEXEC, 0o644)
        guard lock >= 0 else { return }
        defer { close(lock) }
        guard flock(lock, LOCK_EX) == 0 else { return }
        defer { flock(lock, LOCK_UN) }
        var current = DescribeCache.load().entries.withLock { $0 }
        for (k, v) in mine { current[k] = v }
        let doc = JSONValue.object(current.keys.sorted().map { JSONMember($0, current[$0]!) })
        let tmp = path + ".\(getpid()).tmp"
        guard FileManager.default.createFile(atPath: tmp, contents: Data(doc.serializedBytes())) else { return }
        if rename(tmp, path) != 0 { unlink(tmp) }
    }
}
