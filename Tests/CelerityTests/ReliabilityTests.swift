import Celerity
import Foundation
import RedisClient
import Testing

extension Integration {
    /// Crash recovery, poison pills, retries, dead letters, revoke, warm and cold shutdown.
    @Suite(.timeLimit(.minutes(3)))
    struct ReliabilityTests {
        static let tasks = """
          r.add:
            queue: {q}
            builtin: add
          r.sleep:
            queue: {q}
            builtin: sleep
          p.sleep:
            queue: {q}
            plugin: [python3, {root}/plugins/py_tasks.py]
          plugins.py_sleep:
            queue: {q}
            plugin: [python3, {root}/plugins/py_tasks.py]
        """

        @Test func aKilledWorkersTasksAreRecoveredByAnotherWorker() async throws {
            let redis = try await sharedRedis.value
            let a = try WorkerHarness(redis: redis, tasks: Self.tasks, node: "a-\(UUID().uuidString.prefix(6))@test")
            let r = try a.redisClient()
            let c = try a.client()
            let handle = try await c.send("r.sleep", args: [1])
            #expect(try await eventually { try await r.call("LLEN", Keys.processing(a.node)).int == 1 })
            a.worker.signal(SIGKILL)
            _ = await a.worker.wait()
            // Another worker on the same queue, under another name, sweeps the dead one's list once
            // its heartbeat (10 s) has expired.
            let b = try WorkerHarness(redis: redis, tasks: Self.tasks, node: "b-\(UUID().uuidString.prefix(6))@test", reusingQueueOf: a)
            let start = Date()
            #expect(try await handle.get(timeout: .seconds(25)) == .number("1"))
            #expect(Date().timeIntervalSince(start) < 20)
            // (Any live worker may do the sweep — here b, or a worker of another test on this Redis.)
            #expect(try await r.call("LLEN", Keys.processing(a.node)).int == 0)
            #expect(await b.stop() == 0)
        }

        /// Redis out of memory (`maxmemory`, noeviction) when a result is written: the store is
        /// refused, and the message must not be acked without it. The worker keeps trying
        /// (with backoff) and stores it, then acks, once memory is back; no restart needed.
        @Test func aResultRefusedForWantOfMemoryIsStoredOnceMemoryIsBack() async throws {
            let redis = try await RedisServer.start(extra: ["--maxmemory-policy", "noeviction"])
            defer { Task { await redis.stop() } }
            let h = try WorkerHarness(redis: redis, tasks: Self.tasks)
            let r = try h.redisClient()
            let c = try h.client()
            let handle = try await c.send("r.sleep", args: [1.5])
            #expect(try await eventually { try await r.call("LLEN", Keys.processing(h.node)).int == 1 })
            // While it runs, memory runs out: a limit below what Redis already holds (a write
            // of the size of a result would still fit under a limit reached by filling it).
            #expect(try await r.send(RedisCommand("CONFIG", "SET", "maxmemory", "1")).string == "OK")
            #expect(try await eventually(seconds: 8) { h.worker.output.contains("Redis unavailable while storing results") },
                    "\(h.worker.output.suffix(2000))")
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await r.call("LLEN", Keys.processing(h.node)).int == 1, "acked without its result")
            #expect(try await r.call("EXISTS", Keys.resultMeta(handle.id)).int == 0)
            #expect(try await r.send(RedisCommand("CONFIG", "SET", "maxmemory", "0")).string == "OK")
            #expect(try await handle.get(timeout: .seconds(15)) == .number("1.5"))
            #expect(try await eventually { try await r.call("LLEN", Keys.processing(h.node)).int == 0 })
            #expect(await h.stop() == 0)
        }

        @Test func aLongTaskOfALiveWorkerIsNeverRedelivered() async throws {
            let redis = try await sharedRedis.value
            let a = try WorkerHarness(redis: redis, tasks: Self.tasks, node: "long-\(UUID().uuidString.prefix(6))@test")
            let b = try WorkerHarness(redis: redis, tasks: Self.tasks, node: "other-\(UUID().uuidString.prefix(6))@test", reusingQueueOf: a)
            let c = try a.client()
            // Longer than the heartbeat TTL (10 s): a visibility timeout of that length would redeliver it.
            let handle = try await c.send("r.sleep", args: [12])
            #expect(try await handle.get(timeout: .seconds(40)) == .number("12"))
            // Exactly one execution, on one worker, although it outlived the heartbeat TTL.
            let lines = (a.worker.output + "\n" + b.worker.output).split(separator: "\n")
            #expect(lines.filter { $0.contains("task_id=\(handle.id)") && $0.contains("task succeeded") }.count == 1)
            #expect(await a.stop() == 0)
            #expect(await b.stop() == 0)
        }

        @Test func aMessageThatKeepsKillingWorkersIsDeadLetteredAsAPoisonPill() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.tasks)
            let r = try h.redisClient()
            let c = try h.client()
            // A message already delivered 3 times to workers that died, now in a dead worker's list.
            let m = c.message("r.add", args: [1, 1])
            let poisoned = try #require(TaskMessage.markRedelivered(m.encode(), count: 3))
            let ghost = "ghost-\(UUID().uuidString.prefix(6))@test"
            try await r.call("LPUSH", Keys.processing(ghost), poisoned)
            try await r.call("SADD", Keys.workers, ghost)
            let dead = DeadLetters(redis: r)
            #expect(try await eventually(seconds: 10) { try await dead.list(queue: h.queue).contains { $0.reason.contains("poison pill") } })
            let entry = try #require(try await dead.list(queue: h.queue).first)
            #expect(entry.reason.contains("delivered 4 times"))
            #expect(entry.task?.id == m.id)
            #expect(try await r.call("LLEN", Keys.processing(ghost)).int == 0)
            // celerity dead retry puts it back (count reset) and it runs.
            let retry = try await ChildProcess.run(Paths.celerity, ["dead", "retry", m.id, "--broker", h.broker])
            #expect(retry.status == 0, "\(retry.output)")
            #expect(try await AsyncResult(id: m.id, client: c).get(timeout: .seconds(10)) == .number("2"))
            #expect(await h.stop() == 0)
        }

        @Test func retryableFailuresAreRetriedWithBackoffThenDeadLettered() async throws {
            let redis = try await sharedRedis.value
            let dir = NSTemporaryDirectory() + "celerity-retry-\(UUID().uuidString.prefix(6))"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try "#!/bin/sh\ncat >/dev/null\nif [ \"$CELERITY_ATTEMPT\" = 1 ]; then echo 'not yet' >&2; exit 75; fi\necho '{\"result\": \"attempt '$CELERITY_ATTEMPT'\"}'\n"
                .write(toFile: dir + "/flaky.sh", atomically: true, encoding: .utf8)
            chmod(dir + "/flaky.sh", 0o755)
            let h = try WorkerHarness(redis: redis, tasks: """
              r.flaky:
                queue: {q}
                plugin: \(dir)/flaky.sh
                retries: 3
                retry_backoff: 0.2
              r.always:
                queue: {q}
                plugin: [python3, {root}/Tests/Fixtures/plugins/misbehave.py]
                retries: 2
                retry_backoff: 0.2
            """)
            // Fails once (exit 75), succeeds on the retry: same task id, SUCCESS.
            #expect(try await h.call("r.flaky", []) == .string("attempt 2"))
            // Always fails: 1 run + 2 retries, then FAILURE and a dead letter saying so.
            let c = try h.client()
            let handle = try await c.send("r.always", args: ["tempfail"])
            await #expect(throws: TaskFailure.self) { try await handle.get(timeout: .seconds(20)) }
            #expect(h.worker.output.components(separatedBy: "retry=2/2").count == 2, "\(h.worker.output.suffix(3000))")
            // FAILURE is stored first, then the message moves to the dead letters.
            let letters = DeadLetters(redis: try h.redisClient())
            #expect(try await eventually { try await letters.list(queue: h.queue).contains { $0.task?.id == handle.id } })
            let entry = try #require(try await letters.list(queue: h.queue).first { $0.task?.id == handle.id })
            #expect(entry.reason.contains("failed after 2 retries"))
            #expect(entry.reason.contains("PluginTemporaryFailure"))
            #expect(await h.stop() == 0)
        }

        @Test func revokedTasksNeverRunAndTerminateKillsARunningPlugin() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.tasks)
            let c = try h.client()
            let later = try await c.send("r.add", args: [1, 2], options: .init(countdown: 1.5))
            try await c.revoke(later.id)
            do {
                _ = try await later.get(timeout: .seconds(10))
                Issue.record("a revoked task ran")
            } catch let f as TaskFailure {
                #expect(f.type == "TaskRevokedError")
            }
            let running = try await c.send("plugins.py_sleep", args: [30])
            try await Task.sleep(for: .seconds(1.5))
            let start = Date()
            let r = try await ChildProcess.run(Paths.celerity, ["revoke", running.id, "--terminate", "--broker", h.broker])
            #expect(r.status == 0)
            do {
                _ = try await running.get(timeout: .seconds(15))
                Issue.record("a terminated task succeeded")
            } catch let f as TaskFailure {
                #expect(f.type == "TaskRevokedError")
                #expect(f.message.contains("terminated"))
            }
            #expect(Date().timeIntervalSince(start) < 10)
            #expect(try await h.call("r.add", [2, 2]) == .number("4"))
            #expect(await h.stop() == 0)
        }

        @Test func softTimeLimitsStopBuiltInsAndBothPluginModesBeforeTheHardLimit() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: """
              s.sleep:
                queue: {q}
                builtin: sleep
                soft_time_limit: 0.5
                time_limit: 20
              plugins.py_sleep:
                queue: {q}
                plugin: [python3, {root}/plugins/py_tasks.py]
                soft_time_limit: 0.5
                time_limit: 20
              plugins.py_add:
                queue: {q}
                plugin: [python3, {root}/plugins/tutorial_tasks.py]
            """)
            for task in ["s.sleep", "plugins.py_sleep"] {
                let start = Date()
                let f = try await h.callFailing(task, [10])
                #expect(f.type == "SoftTimeLimitExceeded", "\(task): \(f)")
                #expect(Date().timeIntervalSince(start) < 8, "\(task) was not stopped at its soft limit")
            }
            #expect(await h.stop() == 0)
            let p = try WorkerHarness(redis: redis, tasks: """
              plugins.py_sleep:
                queue: {q}
                plugin: [python3, {root}/plugins/py_tasks.py]
                mode: persistent
                soft_time_limit: 0.5
                time_limit: 20
            """)
            let start = Date()
            let f = try await p.callFailing("plugins.py_sleep", [10])
            #expect(f.type == "SoftTimeLimitExceeded", "\(f)")
            #expect(Date().timeIntervalSince(start) < 8)
            #expect(try await p.call("plugins.py_sleep", [0.1]) == .number("0.1"))
            #expect(await p.stop() == 0)
        }

        @Test func warmShutdownHandsBackWhatOutlivesTheGraceAndColdDoesSoAtOnce() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.tasks, extraArgs: ["--shutdown-grace", "1"])
            let r = try h.redisClient()
            let c = try h.client()
            _ = try await c.send("plugins.py_sleep", args: [30])
            #expect(try await eventually { try await r.call("LLEN", Keys.processing(h.node)).int == 1 })
            try await Task.sleep(for: .milliseconds(500))
            let start = Date()
            h.worker.signal(SIGTERM)
            #expect(await h.worker.wait() == 0)
            #expect(Date().timeIntervalSince(start) < 8)
            // Handed back to the head of the queue, not lost and not left in flight.
            #expect(try await r.call("LLEN", h.queue).int == 1)
            #expect(try await r.call("LLEN", Keys.processing(h.node)).int == 0)

            // Cold: the second signal does not wait for the grace period.
            let cold = try WorkerHarness(redis: redis, tasks: Self.tasks, extraArgs: ["--shutdown-grace", "60"], reusingQueueOf: h)
            #expect(try await eventually { try await r.call("LLEN", Keys.processing(cold.node)).int == 1 })
            try await Task.sleep(for: .milliseconds(500))
            let coldStart = Date()
            cold.worker.signal(SIGTERM)
            try await Task.sleep(for: .milliseconds(300))
            cold.worker.signal(SIGTERM)
            _ = await cold.worker.wait()
            #expect(Date().timeIntervalSince(coldStart) < 10)
            #expect(try await r.call("LLEN", h.queue).int == 1)
            #expect(try await r.call("LLEN", Keys.processing(cold.node)).int == 0)
        }
    }
}
