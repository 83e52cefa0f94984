import Foundation
import Synchronization

// The pipes of a persistent plugin process, driven directly rather than through
// swift-subprocess's async writer and output sequence. Measured on the 2-core reference
// machine: with those, one call crossed four thread hand-offs in the worker (an AsyncStream
// to a writer task, the library's I/O thread for the write, its I/O thread again for the
// answer, the reader task) and cost ~190 µs of worker CPU; a call now costs one hand-off
// (the reader thread resuming the caller). No library here offers a non-blocking pipe
// writer that can be called from any thread, hence this small one.

/// Makes a pipe whose two ends are closed on exec (the child gets its end through dup2,
/// which clears the flag), so no other plugin process inherits them and EOF arrives.
/// (Glibc's Swift module has no pipe2; a spawn racing between pipe and fcntl is still
/// covered: swift-subprocess closes every descriptor above 2 in the children it starts.)
func makeCloexecPipe() -> (read: Int32, write: Int32)? {
    var fds: [Int32] = [-1, -1]
    guard pipe(&fds) == 0 else { return nil }
    for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
    return (fds[0], fds[1])
}

/// Writes newline-terminated lines to a plugin's stdin from whichever thread calls it.
///
/// The write end is non-blocking: a line is written at once by its caller (no thread hop),
/// in the order `send` was called. When the pipe is full (the plugin is not reading, or a
/// request is larger than the pipe's buffer), the rest is queued and a thread of its own
/// waits for the pipe to take it, so no caller ever blocks, in the cooperative pool or
/// elsewhere. A plugin that has gone away (EPIPE) ends the writer; the reader side reports
/// the process's end. SIGPIPE must be ignored in this process (`ignoreSIGPIPE`).
final class PipeWriter: Sendable {
    private struct State {
        var fd: Int32
        var pending: [UInt8] = []
        var draining = false
        var finishing = false
        var closed = false
    }
    private let state: Mutex<State>

    /// Takes ownership of `fd` and makes it non-blocking.
    init(fd: Int32) {
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        state = Mutex(State(fd: fd))
    }

    /// Ignores SIGPIPE for the whole process, once: a write to a plugin that just died must
    /// fail with EPIPE, not kill the worker. (Children get default dispositions back:
    /// swift-subprocess spawns with POSIX_SPAWN_SETSIGDEF.)
    static let ignoreSIGPIPE: Void = { _ = signal(SIGPIPE, SIG_IGN) }()

    /// Sends `line` followed by "\n".
    func send(_ line: [UInt8]) {
        let needsDrainer: Bool = state.withLock { s in
            guard !s.closed, !s.finishing else { return false }
            if s.draining {
                s.pending.append(contentsOf: line)
                s.pending.append(10)
                return false
            }
            var bytes = line
            bytes.append(10)
            let written = Self.writeSome(s.fd, bytes[...])
            if written < 0 { Self.close(&s); return false }
            if written == bytes.count { return false }
            s.pending = Array(bytes[written...])
            s.draining = true
            return true
        }
        if needsDrainer {
            let t = Thread { self.drain() }
            t.name = "celerity-plugin-stdin"
            t.start()
        }
    }

    /// Closes the pipe once everything sent so far is written (the plugin then sees EOF).
    func finish() {
        state.withLock { s in
            s.finishing = true
            if !s.draining { Self.close(&s) }
        }
    }

    /// Closes the pipe now, dropping anything not yet written.
    func closeNow() {
        state.withLock { s in Self.close(&s) }
    }

    private func drain() {
        while true {
            let fd = state.withLock { $0.closed ? Int32(-1) : $0.fd }
            if fd < 0 { return }
            var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            _ = poll(&p, 1, 200)
            let done: Bool = state.withLock { s in
                if s.closed { return true }
                let written = Self.writeSome(s.fd, s.pending[...])
                if written < 0 { Self.close(&s); return true }
                s.pending.removeFirst(written)
                guard s.pending.isEmpty else { return false }
                s.draining = false
                if s.finishing { Self.close(&s) }
                return true
            }
            if done { return }
        }
    }

    /// Writes as much of `bytes` as the pipe takes now; -1 when the pipe is broken.
    private static func writeSome(_ fd: Int32, _ bytes: ArraySlice<UInt8>) -> Int {
        var done = 0
        let total = bytes.count
        let failed: Bool = bytes.withUnsafeBytes { raw in
            while done < total {
                let n = Glibc.write(fd, raw.baseAddress! + done, total - done)
                if n > 0 { done += n; continue }
                if n < 0 && errno == EINTR { continue }
                return n < 0 && errno != EAGAIN && errno != EWOULDBLOCK
            }
            return false
        }
        return failed ? -1 : done
    }

    private static func close(_ s: inout State) {
        guard !s.closed else { return }
        s.closed = true
        s.pending = []
        _ = Glibc.close(s.fd)
    }
}
