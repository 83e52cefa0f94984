import Foundation

// The remote-control commands that change a running worker, with Celery 5.7's arguments
// and replies (celery/worker/control.py): pool_grow, pool_shrink, add_consumer,
// cancel_consumer, rate_limit, time_limit. The state they change is `RuntimeSettings`.

extension Worker {
    /// `pool_grow n` / `pool_shrink n`: more or fewer execution slots, and the shared
    /// prefetch room with them. Shrinking stops no running task: the slots it takes away are
    /// a debt that the next tasks to finish pay back. Below 1 it refuses (a Python worker
    /// shrinks to no process at all, then answers this same ValueError).
    func poolResize(_ r: ControlRequest, grow: Bool) -> JSONValue {
        let n: Int
        switch r.argument("n") {
        case nil, .null?: n = 1
        case let v?:
            guard let k = v.intValue ?? v.stringValue.flatMap({ Int($0) }) else {
                return Self.error(PythonRepr.exception(type: "ValueError", message: "invalid literal for int() with base 10: \(v.serialized())"))
            }
            n = min(max(k, 0), RuntimeSettings.maxConcurrency)   // Celery: range(n) of a negative n changes nothing
        }
        let changed = runtime.resize(by: grow ? n : -n)
        let room = max(config.prefetchMultiplier, 1)
        if changed > 0 {
            slots.release(changed)
            prefetch.release(changed * room)
        } else if changed < 0 {
            slots.shrink(-changed)
            prefetch.shrink(-changed * room)
        }
        logger.info("remote control: pool \(grow ? "grown" : "shrunk")", metadata: [
            "by": .stringConvertible(abs(changed)), "concurrency": .stringConvertible(runtime.concurrency)])
        if !grow && changed > -n {
            return Self.error(PythonRepr.exception(type: "ValueError", message: "Can't shrink pool below 1 process"))
        }
        return Self.ok(grow ? "pool will grow" : "pool will shrink")
    }

    /// `add_consumer QUEUE`: fetch loops for it start now (Celery's reply, also when it is
    /// consumed already: then nothing changes). A queue paused cluster-wide is consumed from
    /// its resume on (same reply).
    func addConsumer(_ r: ControlRequest) -> JSONValue {
        guard let queue = r.argument("queue")?.stringValue, !queue.isEmpty else { return Self.error("queue is required") }
        switch runtime.addQueue(queue) {
        case let .added(consumer):
            queueStarts.yield(consumer)
            logger.info("remote control: consuming from queue", metadata: ["queue": .string(queue)])
        case .addedPaused:
            logger.info("remote control: consuming from queue once it is resumed (it is paused)", metadata: ["queue": .string(queue)])
        case .already:
            logger.info("remote control: already consuming from queue", metadata: ["queue": .string(queue)])
        }
        return Self.ok("add consumer \(queue)")
    }

    /// `cancel_consumer QUEUE`: its fetch loops end after the fetch under way (what that
    /// fetch brings goes back to the queue); messages already fetched still run and are acked.
    func cancelConsumer(_ r: ControlRequest) -> JSONValue {
        guard let queue = r.argument("queue")?.stringValue, !queue.isEmpty else { return Self.error("queue is required") }
        if runtime.cancelQueue(queue) {
            logger.info("remote control: no longer consuming from queue", metadata: ["queue": .string(queue)])
        }
        return Self.ok("no longer consuming from \(queue)")
    }

    /// `rate_limit TASK RATE` ("10/s", "100/m", "5/h", a number per second; 0, "" or None:
    /// none): Celery's command and replies, but the limit is Celerity's global one (`TaskGate`):
    /// it holds for all workers together, and changes for all of them, whichever got the
    /// command (each that gets it writes the same value).
    func rateLimit(_ r: ControlRequest) async -> JSONValue {
        let raw = r.argument("rate_limit")
        let perSecond: Double
        do throws(RateLimitParser.Failure) {
            perSecond = try RateLimitParser.perSecond(raw)
        } catch {
            switch error {
            case let .notANumber(text):
                let inner = PythonRepr.exception(type: "ValueError", message: "could not convert string to float: \(PythonRepr.of(.string(text)))")
                return Self.error("Invalid rate limit string: \(inner)")
            case let .unknownUnit(unit):
                return Self.error(PythonRepr.exception(type: "KeyError", message: unit))
            }
        }
        guard perSecond.isFinite && perSecond >= 0 else {
            return Self.error("Invalid rate limit string: " + PythonRepr.exception(type: "ValueError", message: "rate must be a finite number, got \(perSecond)"))
        }
        guard let task = r.argument("task_name")?.stringValue, manifest.tasks[task] != nil else {
            logger.error("rate limit attempt for unknown task", metadata: ["task": .string(r.argument("task_name")?.stringValue ?? "")])
            return Self.error("unknown task")
        }
        let text = raw?.stringValue ?? raw.map { $0.serialized() } ?? "None"
        do {
            try await gate.setRate(task, perSecond: perSecond, text: text)
        } catch {
            logger.error("rate limit not changed: Redis refused", metadata: ["task": .string(task), "error": .string("\(error)")])
            return Self.error("rate limit not changed: \(error)")
        }
        // Celery answers by the truth of the argument ("0" is set, and limits nothing).
        let truthy: Bool
        switch raw {
        case nil, .null?: truthy = false
        case let .string(s)?: truthy = !s.isEmpty
        case let .bool(b)?: truthy = b
        case let v?: truthy = (v.doubleValue ?? 0) != 0
        }
        if !truthy {
            logger.info("remote control: rate limit disabled", metadata: ["task": .string(task)])
            return Self.ok("rate limit disabled successfully")
        }
        logger.info("remote control: new rate limit", metadata: ["task": .string(task), "per_second": .stringConvertible(perSecond)])
        return Self.ok("new rate limit set successfully")
    }

    /// `time_limit TASK soft hard`: replaces both limits of the task for the calls that start
    /// from now on (None clears one, as in Celery); a message's own shorter limits still apply.
    func timeLimit(_ r: ControlRequest) -> JSONValue {
        guard let task = r.argument("task_name")?.stringValue, manifest.tasks[task] != nil else {
            logger.error("time limit change for unknown task", metadata: ["task": .string(r.argument("task_name")?.stringValue ?? "")])
            return Self.error("unknown task")
        }
        func seconds(_ name: String) -> Double? {
            guard let v = r.argument(name) else { return nil }
            let s = v.doubleValue ?? v.stringValue.flatMap { Double($0) }
            // At most a year: a limit past that is none, and the timers count milliseconds in an Int.
            return s.flatMap { $0 > 0 && $0.isFinite ? min($0, 365 * 86_400) : nil }
        }
        let limits = RuntimeSettings.TimeLimits(hard: seconds("hard"), soft: seconds("soft"))
        runtime.setTimeLimits(task, limits)
        logger.info("remote control: new time limits", metadata: [
            "task": .string(task), "soft": .string(limits.soft.map { "\($0)" } ?? "None"), "hard": .string(limits.hard.map { "\($0)" } ?? "None")])
        return Self.ok("time limits set successfully")
    }

    static func error(_ text: String) -> JSONValue { .object([JSONMember("error", .string(text))]) }
}
