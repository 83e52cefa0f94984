import Foundation
import Yams

/// The tasks the plugins of `plugin_dirs` describe, by name, in folder, file and plugin order.
struct DiscoveryClaims {
    var order: [String] = []
    var byName: [String: [(plugin: DiscoveredPlugin, entry: [JSONMember])]] = [:]
    subscript(name: String) -> [(plugin: DiscoveredPlugin, entry: [JSONMember])]? { byName[name] }
}

/// `plugin_dirs` and merging what plugins describe with tasks.yaml (docs/plugins.md, "Discovery").
extension ManifestReader {
    /// `plugin_dirs: [plugins, {path: more, queue: q}]`: folders that must exist.
    func pluginDirectories(_ n: Node, baseDirectory: String) throws(ManifestError) -> [PluginDirectory] {
        let items: [Node]
        if case .scalar = n { items = [n] } else {
            guard case let .sequence(seq) = n else { throw fail(n, "plugin_dirs must be a list of folders, found \(kind(n))") }
            items = Array(seq)
        }
        var out: [PluginDirectory] = []
        for item in items {
            var path: String?
            var queue: String?
            if case .mapping = item {
                for (k, _, v) in try mapping(item, "an item of plugin_dirs", allowed: ["path", "queue"]) {
                    if k == "path" { path = try string(v, "plugin_dirs[].path") } else {
                        queue = try string(v, "plugin_dirs[].queue")
                        if queue!.isEmpty { throw fail(v, "plugin_dirs[].queue must not be empty") }
                    }
                }
                if path == nil { throw fail(item, "an item of plugin_dirs is missing 'path'") }
            } else {
                path = try string(item, "an item of plugin_dirs")
            }
            let p = path!
            if p.isEmpty { throw fail(item, "an item of plugin_dirs is empty") }
            let absolute = ((p.hasPrefix("/") ? p : (baseDirectory as NSString).appendingPathComponent(p)) as NSString).standardizingPath
            var isDir: ObjCBool = false
            guard !checkFiles || (FileManager.default.fileExists(atPath: absolute, isDirectory: &isDir) && isDir.boolValue) else {
                throw fail(item, "plugin folder '\(p)' is not a directory (looked at \(absolute))")
            }
            if out.contains(where: { $0.absolutePath == absolute }) { throw fail(item, "plugin folder '\(p)' is listed twice in plugin_dirs") }
            out.append(PluginDirectory(path: p, absolutePath: absolute, queue: queue))
        }
        return out
    }

    /// Asks every plugin to describe itself and collects the task names each claims. Plugins that do
    /// not answer are reported in `m.discovery`; a name claimed by two plugins is an error unless
    /// tasks.yaml names the task with a handler of its own.
    func discoveredClaims(_ m: inout Manifest, entries: [(String, Node, Node)], dirsNode: Node,
                          baseDirectory: String) throws(ManifestError) -> DiscoveryClaims {
        let plugins = PluginDiscovery.discover(m.pluginDirectories, baseDirectory: baseDirectory)
        m.discovery.directories = m.pluginDirectories
        m.discovery.plugins = plugins.count
        m.discovery.cached = plugins.filter(\.fromCache).count
        var claims = DiscoveryClaims()
        for p in plugins {
            switch p.answer {
            case let .failure(e): m.discovery.problems.append(.init(file: p.file, message: e.message))
            case let .success(d):
                if d.tasks.isEmpty { m.discovery.problems.append(.init(file: p.file, message: "describes no task")) }
                for (name, entry) in d.tasks {
                    if claims.byName[name] == nil { claims.order.append(name) }
                    claims.byName[name, default: []].append((p, entry))
                }
            }
        }
        let ownHandler = Set(entries.filter { !handlerKeys($0.2).isEmpty }.map(\.0))
        for name in claims.order {
            guard let list = claims[name], list.count > 1, !ownHandler.contains(name) else { continue }
            throw fail(dirsNode, "task '\(name)' is described by \(list.count) plugins: \(list.map(\.plugin.file).joined(separator: " and ")); "
                       + "remove one, or name the task in tasks.yaml with its own 'plugin:'")
        }
        return claims
    }

    /// Keys of a task entry that choose its handler.
    func handlerKeys(_ entry: Node) -> [String] { keys(entry).filter { $0 == "builtin" || $0 == "plugin" } }

    func keys(_ n: Node) -> [String] {
        guard case let .mapping(m) = n else { return [] }
        return m.compactMap { k, _ in k.scalar?.string }
    }

    /// Whether `plugin`'s suggestion applies to the tasks.yaml entry: the entry names no handler, or
    /// names this very plugin file (as the program or as a script argument).
    func describes(_ plugin: DiscoveredPlugin, _ entry: Node, baseDirectory: String) -> Bool {
        let handler = handlerKeys(entry)
        if handler.isEmpty { return true }
        guard handler == ["plugin"], case let .mapping(m) = entry,
              let argvNode = m.first(where: { $0.key.scalar?.string == "plugin" })?.value,
              let argv = try? stringList(argvNode, "plugin") else { return false }
        var cwd = baseDirectory
        if let c = m.first(where: { $0.key.scalar?.string == "cwd" })?.value.scalar?.string {
            cwd = c.hasPrefix("/") ? c : (baseDirectory as NSString).appendingPathComponent(c)
        }
        let target = (plugin.absolutePath as NSString).standardizingPath
        return argv.enumerated().contains { i, a in
            guard (i == 0 && a.contains("/")) || (i > 0 && ManifestReader.looksLikeScript(a)) else { return false }
            let p = a.hasPrefix("/") ? a : (cwd as NSString).appendingPathComponent(a)
            return (p as NSString).standardizingPath == target
        }
    }

    /// A task entry made of what the plugin suggests: its queue (else its folder's), and with
    /// `withPlugin` the `plugin:` argv that runs it.
    func suggestion(_ entry: [JSONMember], plugin: DiscoveredPlugin, withPlugin: Bool) -> Node {
        var pairs: [(Node, Node)] = entry.map { (Node($0.key), ManifestReader.node($0.value)) }
        if !entry.contains(where: { $0.key == "queue" }) {
            pairs.insert((Node("queue"), Node(plugin.directory.queue, Tag(.str), .doubleQuoted)), at: 0)
        }
        if withPlugin {
            pairs.insert((Node("plugin"), Node(plugin.argv.map { Node($0, Tag(.str), .doubleQuoted) })), at: 0)
        }
        return Node(pairs)
    }

    /// tasks.yaml's entry over the plugin's suggestion: its keys win, the others are added.
    func merged(_ entry: Node, over suggested: Node) -> Node {
        guard case let .mapping(mine) = entry, case let .mapping(theirs) = suggested else { return entry }
        let have = Set(keys(entry))
        var pairs = Array(mine.map { ($0.key, $0.value) })
        for (k, v) in theirs where !have.contains(k.scalar?.string ?? "") { pairs.append((k, v)) }
        return .mapping(Node.Mapping(pairs, mine.tag, mine.style, mine.mark))
    }

    /// A JSON value as the YAML node tasks.yaml would hold (strings quoted, so "10" stays a string).
    static func node(_ v: JSONValue) -> Node {
        switch v {
        case .null: return Node("null", .implicit, .plain)
        case let .bool(b): return Node(b ? "true" : "false", .implicit, .plain)
        case let .number(t): return Node(t, .implicit, .plain)
        case let .string(s): return Node(s, Tag(.str), .doubleQuoted)
        case let .array(a): return Node(a.map(node))
        case let .object(members): return Node(members.map { (Node($0.key), node($0.value)) })
        }
    }
}
