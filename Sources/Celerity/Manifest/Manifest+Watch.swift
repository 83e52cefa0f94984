import Foundation

// What `celerity worker --reload` watches, and how a file is told to have changed (its size,
// modification time and inode: an editor that saves by renaming a new file over the old one
// changes the inode even when size and time stay).

/// What `stat` says of a file or folder, enough to tell that it changed.
public struct FileStamp: Sendable, Hashable, CustomStringConvertible {
    public var size: Int64
    /// Modification time, nanoseconds since the epoch.
    public var mtime: Int64
    public var inode: UInt64

    /// The stamp of `path` (symbolic links followed), nil when it does not exist or cannot be read.
    public static func of(_ path: String) -> FileStamp? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return FileStamp(size: Int64(st.st_size), mtime: Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec), inode: UInt64(st.st_ino))
    }

    /// The stamps of `paths` (nil: missing), by path.
    public static func of(_ paths: [String]) -> [String: FileStamp?] {
        var out: [String: FileStamp?] = [:]
        for p in paths { out[p] = .some(of(p)) }
        return out
    }

    public var description: String { "size \(size), mtime \(mtime) ns, inode \(inode)" }
}

extension PluginSpec {
    /// The files that make the plugin: its program, and any argument that names an existing
    /// file (relative ones from its working directory), such as the script of
    /// `[python3, plugins/greet.py]`. Absolute paths.
    public var files: [String] {
        var out = [executable]
        for arg in argv.dropFirst() where !arg.hasPrefix("-") {
            let path = arg.hasPrefix("/") ? arg : URL(fileURLWithPath: workingDirectory).appendingPathComponent(arg).standardizedFileURL.path
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue, !out.contains(path) { out.append(path) }
        }
        // The helper a script imports from its folder (plugins/celerity_plugin.py): a new
        // helper changes what the plugin does as much as a new script.
        for script in argv.count == 1 ? [executable] : Array(out.dropFirst()) {
            let dir = URL(fileURLWithPath: script).deletingLastPathComponent()
            let helpers = (try? FileManager.default.contentsOfDirectory(atPath: dir.path))?.filter { $0.hasPrefix("celerity_plugin.") }.sorted() ?? []
            for h in helpers {
                let path = dir.appendingPathComponent(h).path
                if !out.contains(path) { out.append(path) }
            }
        }
        return out
    }
}

extension Manifest {
    /// What `celerity worker --reload` polls: the manifest file, the `plugin_dirs` folders (a
    /// file dropped in or removed changes the folder's mtime), and every plugin's program,
    /// script and helper files (`PluginSpec.files`), sorted, without duplicates.
    public var watchedFiles: [String] {
        var seen = Set<String>()
        if let path { seen.insert(URL(fileURLWithPath: path).standardizedFileURL.path) }
        for dir in discovery.directories { seen.insert(URL(fileURLWithPath: dir.absolutePath).standardizedFileURL.path) }
        // Plugin files that did not describe themselves: fixed, they become tasks.
        for problem in discovery.problems {
            seen.insert(URL(fileURLWithPath: problem.file, relativeTo: URL(fileURLWithPath: baseDirectory, isDirectory: true)).standardizedFileURL.path)
        }
        for name in taskOrder {
            if case let .plugin(p)? = tasks[name]?.handler { seen.formUnion(p.files) }
        }
        return seen.sorted()
    }
}
