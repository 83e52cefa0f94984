import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A thread of its own, at a lower priority than the worker's (nice 10), where the event
/// flusher writes the envelopes of task events (base64, RESP) around the JSON the worker wrote,
/// and sends them (blocking I/O: this thread is not in Swift's cooperative pool).
/// The worker's threads and Redis take the CPU before it whenever they are ready to run: on a
/// busy machine the envelopes wait for spare CPU (events are flushed a little later) instead
/// of delaying the tasks' fetches, stores and acks.
///
/// Why not a DispatchQueue: libdispatch's QoS does not set a thread's nice value on Linux, and
/// its pool threads are shared. Linux keeps the nice value per thread (setpriority(2) with
/// `who` 0 on the calling thread), so the thread sets its own at start.
final class BackgroundWriter: @unchecked Sendable {
    // @unchecked: `jobs` and `stopped` are touched only under `condition`.
    private let condition = NSCondition()
    private var jobs: [@Sendable () -> Void] = []
    private var stopped = false
    private var started = false
    let nice: Int32
    let name: String

    init(name: String, nice: Int32 = 10) {
        self.name = name
        self.nice = nice
    }

    /// Runs `body` on the writer's thread (started at the first call) and returns its value;
    /// nil, without running it, once the writer is stopped.
    func run<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T? {
        await withCheckedContinuation { (c: CheckedContinuation<T?, Never>) in
            if !submit({ c.resume(returning: body()) }) { c.resume(returning: nil) }
        }
    }

    /// Queues `job`; false if the writer is stopped.
    private func submit(_ job: @escaping @Sendable () -> Void) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        if stopped { return false }
        jobs.append(job)
        if !started {
            started = true
            let thread = Thread { [self] in loop() }
            thread.name = name
            thread.start()
        }
        condition.signal()
        return true
    }

    private func loop() {
        #if os(Linux)
        _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, nice)
        #else
        _ = setpriority(PRIO_PROCESS, 0, nice)
        #endif
        while true {
            condition.lock()
            while jobs.isEmpty && !stopped { condition.wait() }
            if jobs.isEmpty && stopped {
                condition.unlock()
                return
            }
            let batch = jobs
            jobs.removeAll(keepingCapacity: true)
            condition.unlock()
            for job in batch { job() }
        }
    }

    /// Ends the thread once the jobs given so far are done; later ones are refused (`run`: nil).
    func stop() {
        condition.lock()
        stopped = true
        condition.signal()
        condition.unlock()
    }
}
