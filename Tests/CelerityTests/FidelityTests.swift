import Celerity
import Foundation
import RedisClient
import Testing

extension Integration {
    /// What a real Python Celery 5.7 client sees of a Celerity worker beyond a plain call
    /// (issue 11, point 6): STARTED, extended results, exception classes, tasks routed
    /// elsewhere, compressed bodies, and bodies the worker refuses.
    @Suite(.timeLimit(.minutes(4)))
    struct FidelityTests {
        /// The start of every client script: argv is broker, queue, worker node, worker pid.
        static let prelude = """
        import json, sys, time, uuid
        import redis
        from celery import Celery
        broker, queue, node, worker_pid = sys.argv[1:5]
        worker_pid = int(worker_pid)
        app = Celery(broker=broker, backend=broker)
        rc = redis.Redis.from_url(broker)

        def statuses(name, args, **options):
            \"\"\"Sends a call and returns (result, every status published for it, in order).\"\"\"
            tid = str(uuid.uuid4())
            p = rc.pubsub()
            p.subscribe("celery-task-meta-" + tid)
            while p.get_message(timeout=1) is None:
                pass   # the subscription's confirmation
            r = app.send_task(name, args=args, queue=queue, task_id=tid, **options)
            seen = []
            deadline = time.time() + 20
            while time.time() < deadline:
                m = p.get_message(timeout=1)
                if m and m["type"] == "message":
                    seen.append(json.loads(m["data"])["status"])
                    if seen[-1] in ("SUCCESS", "FAILURE"):
                        break
            p.close()
            return r, seen

        def wait_for_state(r, state, seconds=10):
            deadline = time.time() + seconds
            while r.state != state and time.time() < deadline:
                time.sleep(0.02)
            return r.state

        """

        /// Runs `script` (after the prelude) against the harness's worker; it must print `marker`.
        static func runClient(_ h: WorkerHarness, _ name: String, _ script: String, marker: String, extraArgs: [String] = []) async throws {
            let py = try await ChildProcess.run(Paths.python3, ["-c", prelude + script, h.broker, h.queue, h.node, String(h.worker.pid)] + extraArgs,
                                                name: name)
            #expect(py.status == 0, "\(name) failed:\n\(py.output)\nworker:\n\(h.worker.output.suffix(3000))")
            #expect(py.output.contains(marker), "\(py.output)")
        }

        // MARK: - track_started

        /// `track_started` under `defaults:` and per task: a Python client sees STARTED with
        /// the worker's pid and node name while a slow task runs, an inline built-in (which
        /// would otherwise take the fast path) publishes STARTED before SUCCESS, a task that
        /// turns it off publishes SUCCESS only, and the stored document ends as SUCCESS.
        @Test func trackStartedShowsStartedWithPidAndHostname() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: """
              f.sleep:
                queue: {q}
                builtin: sleep
              f.add:
                queue: {q}
                builtin: add
              f.quiet:
                queue: {q}
                builtin: add
                track_started: false
            """, preamble: "defaults:\n  track_started: true\n")
            try await Self.runClient(h, "py-track-started", """
            r = app.send_task("f.sleep", args=[1.5], queue=queue)
            assert wait_for_state(r, "STARTED") == "STARTED", r.state
            assert r.info == {"pid": worker_pid, "hostname": node}, r.info
            assert r.get(timeout=30) == 1.5
            assert r.state == "SUCCESS"

            r, seen = statuses("f.add", [2, 3])
            assert seen == ["STARTED", "SUCCESS"], seen
            assert r.get(timeout=10) == 5
            time.sleep(0.3)
            assert json.loads(rc.get("celery-task-meta-" + r.id))["status"] == "SUCCESS"

            r, seen = statuses("f.quiet", [2, 3])
            assert seen == ["SUCCESS"], seen
            print("track_started OK")
            """, marker: "track_started OK")
            #expect(await h.stop() == 0)
        }

        /// Per task on a queue of persistent plugins (the path that sends a call from the
        /// fetcher's thread must not skip STARTED either).
        @Test func trackStartedOnPersistentPlugins() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: """
              plugins.py_add:
                queue: {q}
                plugin: [python3, {root}/plugins/py_tasks.py]
                mode: persistent
                track_started: true
              plugins.py_sleep:
                queue: {q}
                plugin: [python3, {root}/plugins/py_tasks.py]
                mode: persistent
                track_started: true
            """)
            try await Self.runClient(h, "py-track-started-plugin", """
            assert app.send_task("plugins.py_add", args=[1, 1], queue=queue).get(timeout=60) == 2   # the process is up
            r, seen = statuses("plugins.py_add", [2, 3])
            assert seen == ["STARTED", "SUCCESS"], seen
            r = app.send_task("plugins.py_sleep", args=[1.5], queue=queue)
            assert wait_for_state(r, "STARTED") == "STARTED", r.state
            assert r.info == {"pid": worker_pid, "hostname": node}, r.info
            assert r.get(timeout=30) == 1.5
            print("track_started plugins OK")
            """, marker: "track_started plugins OK")
            #expect(await h.stop() == 0)
        }

        // MARK: - Extended results

        /// `result_backend: {extended: true}`: the Python client reads name, args, kwargs,
        /// worker, queue, retries and date_done, and the stored document has the same keys,
        /// with values of the same types, as the one a Python Celery worker with
        /// `result_extended = True` stores for the same call.
        @Test func extendedResultsAsCeleryWritesThem() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: """
              f.add:
                queue: {q}
                builtin: add
              f.fail:
                queue: {q}
                builtin: fail
            """, preamble: "result_backend:\n  extended: true\n")
            let dir = NSTemporaryDirectory() + "celerity-fid-\(h.prefix)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try """
            import os
            from celery import Celery
            app = Celery("fid", broker=os.environ["FID_BROKER"], backend=os.environ["FID_BROKER"])
            app.conf.result_extended = True

            @app.task(name="f.add")
            def add(x, y):
                return x + y
            """.write(toFile: dir + "/fid_app.py", atomically: true, encoding: .utf8)
            let pyQueue = h.queue + "-py"
            let pyWorker = try ChildProcess(name: "py-worker-extended", executable: Paths.python3,
                                            arguments: ["-m", "celery", "-A", "fid_app", "worker", "-Q", pyQueue, "--pool", "solo", "-c", "1",
                                                        "-n", "fid-\(h.prefix)@%h", "--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "warning"],
                                            environment: ["FID_BROKER": h.broker], directory: dir)
            try await Self.runClient(h, "py-extended", """
            import datetime
            py_queue = sys.argv[5]
            r = app.send_task("f.add", args=[2], kwargs={"y": 3}, queue=queue, parent_id="parent-of-fid")
            assert r.get(timeout=30) == 5
            assert r.name == "f.add", r.name
            assert r.args == [2], r.args
            assert r.kwargs == {"y": 3}, r.kwargs
            assert r.worker == node, r.worker
            assert r.queue == queue, r.queue
            assert r.retries == 0, r.retries
            assert isinstance(r.date_done, datetime.datetime), r.date_done
            ours = json.loads(rc.get("celery-task-meta-" + r.id))
            assert ours["parent_id"] == "parent-of-fid", ours

            f = app.send_task("f.fail", args=["no good"], queue=queue)
            try:
                f.get(timeout=30)
                raise SystemExit("f.fail succeeded")
            except ValueError:
                pass
            assert (f.name, f.args, f.kwargs, f.worker, f.queue, f.retries) == ("f.fail", ["no good"], {}, node, queue, 0), f._get_task_meta()

            c = app.send_task("f.add", args=[2], kwargs={"y": 3}, queue=py_queue, parent_id="parent-of-fid")
            assert c.get(timeout=60) == 5
            theirs = json.loads(rc.get("celery-task-meta-" + c.id))
            assert sorted(ours) == sorted(theirs), (sorted(ours), sorted(theirs))
            for k in theirs:
                assert type(ours[k]) is type(theirs[k]), (k, ours[k], theirs[k])
            for k in ("status", "result", "traceback", "children", "parent_id", "name", "args", "kwargs", "retries"):
                assert ours[k] == theirs[k], (k, ours[k], theirs[k])
            assert theirs["queue"] == py_queue and theirs["worker"].startswith("fid-")
            print("extended OK")
            """, marker: "extended OK", extraArgs: [pyQueue])
            await pyWorker.stop(grace: 10)
            #expect(await h.stop() == 0)
        }

        // MARK: - Exceptions

        /// Plugin errors named after Python's builtin exceptions are caught by `except
        /// KeyError` / `except ValueError` on the client; a plugin may name the module of its
        /// exception (`error.module`); an unknown type still arrives as a class of that name;
        /// a built-in Swift failure carries a traceback that names the task and the error.
        @Test func exceptionsArriveAsTheClassesAPythonClientCatches() async throws {
            let redis = try await sharedRedis.value
            let dir = NSTemporaryDirectory() + "celerity-fid-errors-\(UUID().uuidString.prefix(8))"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let plugin = dir + "/errors.py"
            try """
            import json, sys
            kind = json.load(sys.stdin)["args"][0]
            errors = {
                "key": {"type": "KeyError", "message": "'missing'"},
                "zero": {"type": "ZeroDivisionError", "message": "division by zero", "traceback": "Traceback: in divide"},
                "custom": {"type": "QuotaExceeded", "module": "fidelity_errors", "message": "over quota"},
                "unknown": {"type": "LinAlgError", "message": "singular matrix"},
            }
            print(json.dumps({"error": errors[kind]}))
            """.write(toFile: plugin, atomically: true, encoding: .utf8)
            let h = try WorkerHarness(redis: redis, tasks: """
              e.oneshot:
                queue: {q}
                plugin: [python3, \(plugin)]
              plugins.py_fail:
                queue: {q}
                plugin: [python3, {root}/plugins/py_tasks.py]
                mode: persistent
              f.fail:
                queue: {q}
                builtin: fail
              f.add:
                queue: {q}
                builtin: add
            """)
            try await Self.runClient(h, "py-exceptions", """
            import types
            fidelity_errors = types.ModuleType("fidelity_errors")
            class QuotaExceeded(Exception):
                pass
            fidelity_errors.QuotaExceeded = QuotaExceeded
            sys.modules["fidelity_errors"] = fidelity_errors

            def fails_with(cls, name, *args):
                r = app.send_task(name, args=list(args), queue=queue)
                try:
                    v = r.get(timeout=60)
                except cls as e:
                    return r, e
                raise SystemExit("%s%r returned %r" % (name, args, v))

            r, e = fails_with(KeyError, "e.oneshot", "key")
            assert type(e) is KeyError and e.args == ("'missing'",), repr(e)
            r, e = fails_with(ZeroDivisionError, "e.oneshot", "zero")
            assert r.traceback == "Traceback: in divide", r.traceback
            r, e = fails_with(QuotaExceeded, "e.oneshot", "custom")
            assert str(e) == "over quota", repr(e)
            r, e = fails_with(Exception, "e.oneshot", "unknown")
            assert type(e).__name__ == "LinAlgError" and not isinstance(e, (ValueError, KeyError)), repr(e)
            r, e = fails_with(ValueError, "plugins.py_fail")
            assert type(e) is ValueError and str(e) == "boom", repr(e)
            assert "ValueError" in r.traceback, r.traceback

            r, e = fails_with(ValueError, "f.fail", "bad value")
            assert type(e) is ValueError, repr(e)
            tb = r.traceback or ""
            assert "f.fail" in tb and "fail" in tb and tb.rstrip().endswith("ValueError: bad value"), tb
            r, e = fails_with(TypeError, "f.add", "a", 1)
            assert "f.add" in (r.traceback or "") and "TypeError" in r.traceback, r.traceback
            print("exceptions OK")
            """, marker: "exceptions OK")
            #expect(await h.stop() == 0)
        }

        // MARK: - Routing

        /// Tasks that tasks.yaml routes to a queue this worker does not consume still run
        /// when they arrive on one it does (as Celery runs any registered task): an inline
        /// built-in, a slow built-in, a one-shot and a persistent plugin (whose processes start
        /// on the first such call).
        @Test func aTaskRoutedElsewhereRunsWhereItArrived() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: """
              r.here:
                queue: {q}
                builtin: add
              r.add_elsewhere:
                queue: {q}-elsewhere
                builtin: add
              r.sleep_elsewhere:
                queue: {q}-elsewhere
                builtin: sleep
              plugins.sh_upper:
                queue: {q}-elsewhere
                plugin: [sh, {root}/plugins/sh_upper.sh]
              plugins.py_add:
                queue: {q}-elsewhere
                plugin: [python3, {root}/plugins/py_tasks.py]
                mode: persistent
            """)
            try await Self.runClient(h, "py-routing", """
            assert app.send_task("r.here", args=[1, 2], queue=queue).get(timeout=20) == 3
            assert app.send_task("r.add_elsewhere", args=[2, 2], queue=queue).get(timeout=20) == 4
            assert app.send_task("r.sleep_elsewhere", args=[0.1], queue=queue).get(timeout=20) == 0.1
            assert app.send_task("plugins.sh_upper", args=["hi"], queue=queue).get(timeout=30) == "HI"
            assert app.send_task("plugins.py_add", args=[20, 22], queue=queue).get(timeout=60) == 42
            print("routing OK")
            """, marker: "routing OK")
            #expect(await h.stop() == 0)
        }

        // MARK: - Compression

        /// Bodies compressed by kombu (`compression='gzip'|'zlib'|'bzip2'`) run, on the inline
        /// path and the usual one, with large arguments intact.
        @Test func compressedBodiesRun() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: """
              c.add:
                queue: {q}
                builtin: add
              c.echo:
                queue: {q}
                builtin: echo
              c.sleep:
                queue: {q}
                builtin: sleep
            """)
            try await Self.runClient(h, "py-compression", """
            big = "celerity " * 20000
            for i, c in enumerate(["gzip", "zlib", "bzip2"]):
                assert app.send_task("c.add", args=[i, 40], queue=queue, compression=c).get(timeout=10) == i + 40, c
                echoed = app.send_task("c.echo", args=[big], kwargs={"k": c}, queue=queue, compression=c).get(timeout=10)
                assert echoed == {"args": [big], "kwargs": {"k": c}}, c
                assert app.send_task("c.sleep", args=[0.01], queue=queue, compression=c).get(timeout=10) == 0.01, c
            print("compression OK")
            """, marker: "compression OK")
            #expect(await h.stop() == 0)
        }

        // MARK: - Refused bodies

        /// A pickled body gets FAILURE with kombu's ContentDisallowed (its words) at once,
        /// an unsupported compression kombu's DecodeError, and both messages are still
        /// dead-lettered; a YAML body pushed by hand gets the same FAILURE document.
        @Test func refusedBodiesFailFastThenGoToTheDeadLetters() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: """
              c.add:
                queue: {q}
                builtin: add
            """)
            let yamlID = "yaml-\(UUID().uuidString)"
            let r = try h.redisClient()
            try await r.call("LPUSH", h.queue, """
            {"body": "W1sxLCAyXSwge30sIHt9XQ==", "content-type": "application/x-yaml", "content-encoding": "utf-8", \
            "headers": {"task": "c.add", "id": "\(yamlID)"}, "properties": {"body_encoding": "base64", \
            "delivery_info": {"exchange": "", "routing_key": "\(h.queue)"}}}
            """)
            try await Self.runClient(h, "py-refused", """
            from kombu.exceptions import ContentDisallowed, DecodeError
            app.conf.accept_content = ["json", "pickle"]
            t0 = time.time()
            r = app.send_task("c.add", args=[1, 2], queue=queue, serializer="pickle")
            try:
                r.get(timeout=15)
                raise SystemExit("a pickled call succeeded")
            except ContentDisallowed as e:
                assert str(e) == "Refusing to deserialize untrusted content of type pickle (application/x-python-serialize)", str(e)
            assert time.time() - t0 < 10, time.time() - t0
            assert r.state == "FAILURE"
            z = app.send_task("c.add", args=[1, 2], queue=queue, compression="lzma")
            try:
                z.get(timeout=15)
                raise SystemExit("an lzma call succeeded")
            except DecodeError as e:
                assert "application/x-lzma" in str(e), str(e)
            assert app.send_task("c.add", args=[1, 2], queue=queue).get(timeout=10) == 3   # the worker serves on
            print("refused", r.id, z.id)
            """, marker: "refused")
            let stored = try await r.call("GET", "celery-task-meta-\(yamlID)").string.map { try JSONValue(parsing: $0) }
            #expect(stored?["status"] == "FAILURE")
            #expect(stored?["result"]?["exc_type"] == "ContentDisallowed")
            #expect(stored?["result"]?["exc_module"] == "kombu.exceptions")
            #expect(stored?["result"]?["exc_message"] == ["Refusing to deserialize untrusted content of type yaml (application/x-yaml)"])
            // Every refused message is in the dead letters too, and nothing is left in flight.
            #expect(try await eventually {
                let entries = try await r.call("LRANGE", Keys.deadLetters, 0, -1).array ?? []
                let mine = entries.compactMap { $0.string.flatMap { try? JSONValue(parsing: $0) } }.filter { $0["queue"]?.stringValue == h.queue }
                return mine.count == 3
            })
            #expect(try await eventually { try await r.call("LLEN", Keys.processing(h.node)).int == 0 })
            #expect(await h.stop() == 0)
        }
    }
}
