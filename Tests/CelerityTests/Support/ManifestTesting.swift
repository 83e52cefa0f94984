import Foundation
import Testing
@testable import Celerity

/// What the manifest tests share: the package root, a scratch directory, files with given
/// permissions, and parsing as `t.yaml` with only the built-in `add` known.
protocol ManifestTesting {}

extension ManifestTesting {
    /// Loads a manifest on a Dispatch thread: discovery (`plugin_dirs`) starts plugin processes
    /// and waits for them, which must not hold up Swift's cooperative pool (other tests' timing).
    static func loadOffPool(_ path: String, builtins: Set<String>? = nil) async throws -> Manifest {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Manifest, any Error>) in
            DispatchQueue.global().async { c.resume(with: Result { try Manifest.load(path: path, builtins: builtins) }) }
        }
    }

    /// The package root, where the repository's tasks.yaml is.
    static var packageRoot: URL { URL(fileURLWithPath: Paths.root, isDirectory: true) }

    /// Runs `body` with a fresh empty directory that is removed afterwards.
    func withTemporaryDirectory<T>(_ body: (URL) throws -> T) throws -> T {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("celerity-manifest-tests-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        return try body(dir)
    }

    /// Creates a file in `dir` with the given POSIX permissions.
    func makeFile(_ name: String, in dir: URL, permissions: Int, contents: String = "#!/bin/sh\necho hi\n") -> URL {
        let url = dir.appendingPathComponent(name)
        #expect(FileManager.default.createFile(atPath: url.path, contents: Data(contents.utf8)))
        let status = chmod(url.path, mode_t(permissions))
        #expect(status == 0)
        return url
    }

    /// Parses `text` as t.yaml in `dir` with only the built-in `add` known.
    func parse(_ text: String, in dir: URL) throws(ManifestError) -> Manifest {
        try Manifest.parse(text, path: "t.yaml", baseDirectory: dir.path, builtins: ["add"])
    }

    /// The error parsing `text` throws, nil if it parses.
    func parseError(_ text: String, in dir: URL) -> ManifestError? {
        do throws(ManifestError) {
            _ = try parse(text, in: dir)
            return nil
        } catch {
            return error
        }
    }

    /// Expects parsing `text` to fail at exactly `t.yaml:<position>` with every word of `words` in the description.
    func expectError(_ text: String, in dir: URL, at position: String, _ words: [String],
                     sourceLocation: SourceLocation = #_sourceLocation) {
        guard let error = parseError(text, in: dir) else {
            Issue.record("expected an error at t.yaml:\(position), but the manifest parsed", sourceLocation: sourceLocation)
            return
        }
        let description = error.description
        #expect(description.hasPrefix("t.yaml:\(position): error: "), "wrong location: \(description)", sourceLocation: sourceLocation)
        for word in words {
            #expect(description.contains(word), "'\(word)' missing from: \(description)", sourceLocation: sourceLocation)
        }
    }

    func pluginSpec(_ task: TaskSpec?) -> PluginSpec? {
        if case let .plugin(spec)? = task?.handler { return spec }
        return nil
    }

    func resolved(_ path: String) -> String {
        URL(fileURLWithPath: path).resolvingSymlinksInPath().path
    }
}
