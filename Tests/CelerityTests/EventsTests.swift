@testable import Celerity
import Foundation
import Logging
import RedisClient
import Synchronization
import Testing

/// Celery's events as Celerity writes them (Control/): Python reprs, base64, the bodies and
/// kombu envelopes, the switch. The worker end to end, seen by the real Python tools, is in
/// `Integration.EventsInteropTests` below.
struct EventsTests {
    @Test func pythonReprOfJSONValues() throws {
        #expect(PythonRepr.of(.null) == "None")
        #expect(PythonRepr.of(.bool(true)) == "True" && PythonRepr.of(.bool(false)) == "False")
        #expect(PythonRepr.of(.int(42)) == "42")
        #expect(PythonRepr.of(try JSONValue(parsing: "123456789012345678901234567890")) == "123456789012345678901234567890")
        #expect(PythonRepr.of(try JSONValue(parsing: "2.5")) == "2.5")
        #expect(PythonRepr.of(try JSONValue(parsing: "1e10")) == "10000000000.0")
        #expect(PythonRepr.of(try JSONValue(parsing: "1e-05")) == "1e-05")
        #expect(PythonRepr.of(try JSONValue(parsing: "[NaN, Infinity, -Infinity]")) == "[nan, inf, -inf]")
        #expect(PythonRepr.of(.string("kaput")) == "'kaput'")
        #expect(PythonRepr.of(.string("it's")) == "\"it's\"")
        #expect(PythonRepr.of(.string("a'b\"c\\d\ne\u{1}")) == #"'a\'b"c\\d\ne\x01'"#)
        #expect(PythonRepr.of(.string("héllo ✓")) == "'héllo ✓'")
        #expect(PythonRepr.args([.int(40), .int(2)]) == "[40, 2]")
        #expect(PythonRepr.args([]) == "[]")
        #expect(PythonRepr.kwargs([]) == "{}")
        #expect(PythonRepr.of(try JSONValue(parsing: #"{"a": [1, {"b": null}], "c": true}"#)) == "{'a': [1, {'b': None}], 'c': True}")
        #expect(PythonRepr.exception(type: "ValueError", message: "kaput") == "ValueError('kaput')")
        #expect(PythonRepr.exception(type: "KeyError", message: "") == "KeyError()")
        let long = PythonRepr.of(.array((0..<1000).map { .int($0) }))
        #expect(long.count == PythonRepr.maxSize && long.hasPrefix("[0, 1, 2") && long.hasSuffix("..."))
    }

    @Test func base64AsFoundationWritesIt() {
        for n in 0..<40 {
            let bytes = (0..<n).map { UInt8(truncatingIfNeeded: $0 * 37 + 11) }
            var out: [UInt8] = []
            Base64.append(bytes, to: &out)
            #expect(String(decoding: out, as: UTF8.self) == Data(bytes).base64EncodedString())
        }
    }

    /// Reprs written straight into the JSON of an event, and numbers written without a String.
    @Test func reprsAndNumbersWrittenInPlace() throws {
        let values: [JSONValue] = [.null, .int(7), .string(#"a"b\c'd"#), .string("it's"), .array([.int(1), .string("x\ny")]),
                                   .object([JSONMember("k", .string("v\\"))]), .array((0..<1000).map { .int($0) })]
        for v in values {
            var out: [UInt8] = Array("prefix".utf8)
            PythonRepr.writeJSONString(v, into: &out)
            #expect(Array(out[..<6]) == Array("prefix".utf8))
            #expect(try JSONValue(parsing: Array(out[6...])).stringValue == PythonRepr.of(v))
        }
        func text(_ write: (inout [UInt8]) -> Void) -> String {
            var out: [UInt8] = []
            write(&out)
            return String(decoding: out, as: UTF8.self)
        }
        #expect(text { EventWire.writeInt(0, into: &$0) } == "0" && text { EventWire.writeInt(1234567890123, into: &$0) } == "1234567890123")
        #expect(text { EventWire.writeInt(Int.max, into: &$0) } == String(Int.max) && text { EventWire.writeInt(-5, into: &$0) } == "-5")
        #expect(text { EventWire.writeSeconds(1001.75, into: &$0) } == "1001.75")
        #expect(text { EventWire.writeSeconds(1764700000.0, into: &$0) } == "1764700000.0")
        #expect(text { EventWire.writeSeconds(1764700000.000123, into: &$0) } == "1764700000.000123")
        #expect(text { EventWire.writeSeconds(-1.5, into: &$0) } == "-1.5")
        #expect(text { EventWire.writeSeconds(Duration.milliseconds(250), into: &$0) } == "0.25")
        #expect(text { EventWire.writeSeconds(Duration.nanoseconds(12345), into: &$0) } == "0.000012345")
        #expect(text { EventWire.writeSeconds(Duration.seconds(3), into: &$0) } == "3.0")
    }

    /// The cursor that writes task events writes what the array writers write: JSON strings
    /// (every escape), integers, seconds; and stops at the room it was given.
    @Test func cursorWritesAsTheArrayWritersDo() throws {
        func cursor(_ room: Int, _ write: (inout ByteCursor) -> Void) -> String {
            var buffer = RecordBuffer()
            buffer.append(upTo: room, write)
            return String(decoding: buffer.bytes, as: UTF8.self)
        }
        func array(_ write: (inout [UInt8]) -> Void) -> String {
            var out: [UInt8] = []
            write(&out)
            return String(decoding: out, as: UTF8.self)
        }
        let strings = ["", "plain", #"a"b\c"#, "tab\tnl\ncr\rbs\u{8}ff\u{c}", "\u{1}\u{1f}\u{7f}", "héllo ✓ 𝄞", String(repeating: "\"", count: 300),
                       "ends with \\", "\u{0}"]
        for s in strings {
            #expect(cursor(ByteCursor.bound(s)) { $0.putJSONString(s) } == array { JSONValue.writeString(s, into: &$0) }, "\(s.debugDescription)")
        }
        for n in [0, 7, -5, 1234567890123, Int.max, Int.min + 1] {
            #expect(cursor(20) { $0.putInt(n) } == array { EventWire.writeInt(n, into: &$0) })
        }
        for s in [1001.75, 1764700000.0, 1764700000.000123, 0.000001, -1.5, 2e13] {
            #expect(cursor(40) { $0.putSeconds(s) } == array { EventWire.writeSeconds(s, into: &$0) }, "\(s)")
        }
        for d in [Duration.milliseconds(250), .nanoseconds(12345), .seconds(3), .zero, .seconds(86400 * 365)] {
            #expect(cursor(40) { $0.putSeconds(d) } == array { EventWire.writeSeconds(d, into: &$0) }, "\(d)")
        }
        // Reprs: written as PythonRepr writes them, cut where it cuts.
        let values: [JSONValue] = [.null, .bool(true), .bool(false), .int(-42), .number(String(repeating: "9", count: 2000)), .double(2.5),
                                   .string("it's"), .array([.int(1), .string("x")]), .object([]), .number(#"1"2\3"#)]
        for v in values {
            let repr = ReprText(v)
            #expect(cursor(repr.bound) { repr.put(into: &$0) } == array { PythonRepr.writeJSONString(v, into: &$0) }, "\(v)")
        }
        // Records: one per append, nothing for an empty one.
        var buffer = RecordBuffer()
        buffer.append(upTo: 8) { $0.put("[1]") }
        buffer.append(upTo: 8) { _ in }
        buffer.append(upTo: 5000) { $0.put(Array(repeating: UInt8(ascii: "x"), count: 5000)) }
        #expect(buffer.count == 2 && buffer.ends == [3, 5003])
    }

    /// A message's `argsrepr` and `kwargsrepr` headers are what its `task-received` shows, as
    /// from a Python worker (a sender may mask secrets there); ours when it has none.
    @Test func receivedCarriesTheSendersReprs() throws {
        // Ours, as a Python client writes them.
        let message = TaskMessage(id: "id-1", task: "t.login", args: [.string("bob"), .string("hunter2")], queue: "q")
        let headers = try JSONValue(parsing: message.encode())["headers"]
        #expect(headers?["argsrepr"]?.stringValue == "('bob', 'hunter2')" && headers?["kwargsrepr"]?.stringValue == "{}")
        #expect(TaskMessage.repr(.array([.int(1)])) == "(1,)" && TaskMessage.repr(.array([])) == "()")
        #expect(TaskMessage.repr(.object([JSONMember("k", .string("v"))])) == "{'k': 'v'}")
        // A Python client's message: its headers as sent.
        let python = Array(CeleryCapture.message.utf8)
        let fast = try #require(TaskMessage.decodeForRun(python, reprs: true))
        #expect(fast.argsRepr == "(2, 3)" && fast.kwargsRepr == "{}")
        #expect(TaskMessage.decodeForRun(python)?.argsRepr == nil)
        #expect(try TaskMessage.decode(python).argsRepr == "(2, 3)")
        // Sent again (a retry): what the sender showed stays, a masked value too.
        var masked = try TaskMessage.decode(python)
        masked.argsRepr = "('***',)"
        let resent = try JSONValue(parsing: masked.encode())["headers"]
        #expect(resent?["argsrepr"]?.stringValue == "('***',)" && resent?["kwargsrepr"]?.stringValue == "{}")
        // A header repr is cut as a repr is (a sender that is not Celery may write megabytes).
        var long = TaskMessage(task: "t", args: [], queue: "q")
        long.argsRepr = String(repeating: "é", count: 3000)
        let clipped = try #require(TaskMessage.decodeForRun(long.encode(), reprs: true)?.argsRepr)
        #expect(clipped.utf8.count <= PythonRepr.maxSize && clipped.hasSuffix("...") && clipped.hasPrefix("éé"))
        #expect(try TaskMessage.decode(long.encode()).argsRepr == clipped)
        let wire = EventWire(node: "w@h", pid: 1, channelPrefix: "/0.celeryev/")
        var shown = fast
        shown.argsRepr = #"('bob', '***') "quoted" \ "#
        shown.kwargsRepr = nil
        shown.kwargs = [JSONMember("k", .string("v"))]
        var buffer = RecordBuffer()
        wire.render(.received(shown, clock: 1, at: 1, alsoStarted: false), into: &buffer)
        let event = try JSONValue(parsing: buffer.bytes)
        #expect(event["type"]?.stringValue == "task-received")
        #expect(event["args"]?.stringValue == #"('bob', '***') "quoted" \ "# && event["kwargs"]?.stringValue == "{'k': 'v'}")
    }

    @Test func utcOffsetIsHoursWestOfUTC() throws {
        let utc = EventWire.utcOffsetHours(TimeZone(identifier: "UTC")!)
        #expect(utc == 0 && utc.sign == .plus, "\(utc)")   // 0.0, not -0.0
        #expect(EventWire.utcOffsetHours(TimeZone(identifier: "Asia/Kolkata")!) == -5.5)
        #expect(EventWire.utcOffsetHours(TimeZone(identifier: "America/Bogota")!) == 5)
    }

    @Test func enableAndDisableSayWhetherTheyChangedAnything() throws {
        let d = EventDispatcher(url: try RedisURL(string: "redis://127.0.0.1:1/3"), node: "n@h", logger: .init(label: "t"))
        #expect(!d.isEnabled)
        #expect(d.enable() && !d.enable() && d.isEnabled)
        #expect(d.disable() && !d.disable() && !d.isEnabled)
        #expect(EventDispatcher.channelPrefix(db: 3) == "/3.celeryev/")
    }

    /// The PUBLISH commands: channels, kombu envelopes, bodies; task events in task.multi arrays.
    @Test func wireFormatAsAPythonWorkerSendsIt() throws {
        var message = TaskMessage(id: "id-1", task: "t.add", args: [.int(3), .int(4)], kwargs: [JSONMember("k", .string("v"))], queue: "q")
        message.rootID = "root-1"
        let ok = Outcome(result: .success(.int(7)), message: message, spec: nil, runtime: .milliseconds(250))
        var failure = TaskFailure(type: "ValueError", message: "kaput")
        failure.traceback = "Traceback ...\nValueError: kaput\n"
        var terminated = TaskFailure.revoked("revoked")
        terminated.message = "revoked (terminated)"
        let wire = EventWire(node: "w@h", pid: 99, channelPrefix: "/0.celeryev/")
        let heartbeat = EventDispatcher.workerFields(freq: 2, active: 1, processed: 5)
        let commands = wire.commands([
            .plain(type: "worker-heartbeat", clock: 1, at: 1000.5, fields: heartbeat),
            .received(message, clock: 3, at: 1001, alsoStarted: true),
            .finished(ok, retried: false, announce: true, clock: 6, at: 1002),
            .finished(Outcome(result: .failure(failure), message: message, spec: nil), retried: false, announce: false, clock: 7, at: 1003),
            .finished(Outcome(result: .failure(failure), message: message, spec: nil), retried: true, announce: false, clock: 8, at: 1003),
            .finished(Outcome(result: .revoked(terminated), message: message, spec: nil), retried: false, announce: false, clock: 9, at: 1004),
            .finished(Outcome(result: .revoked(.revoked("expired")), message: message, spec: nil), retried: false, announce: false, clock: 10, at: 1004),
            .finished(Outcome(result: .notRegistered, message: message, spec: nil), retried: false, announce: false, clock: 11, at: 1004),
            .finished(Outcome(result: .handBack, message: message, spec: nil), retried: false, announce: false, clock: 12, at: 1004),
        ])
        #expect(commands.count == 2)
        func decode(_ c: RedisCommand) throws -> (channel: String, envelope: JSONValue, body: JSONValue) {
            #expect(String(decoding: c.arguments[0], as: UTF8.self) == "PUBLISH")
            let env = try JSONValue(parsing: c.arguments[2])
            return (String(decoding: c.arguments[1], as: UTF8.self), env, try Self.body(env))
        }
        let (channel, env, body) = try decode(commands[0])
        #expect(channel == "/0.celeryev/worker.heartbeat")
        #expect(env["content-type"]?.stringValue == "application/json" && env["content-encoding"]?.stringValue == "utf-8")
        #expect(env["headers"]?["hostname"]?.stringValue == "w@h")
        let props = try #require(env["properties"])
        #expect(props["delivery_mode"]?.intValue == 1 && props["priority"]?.intValue == 0 && props["body_encoding"]?.stringValue == "base64")
        #expect(props["delivery_info"]?["exchange"]?.stringValue == "celeryev" && props["delivery_info"]?["routing_key"]?.stringValue == "worker.heartbeat")
        #expect(props["delivery_tag"]?.stringValue?.count == 36)
        #expect(body.objectValue?.map(\.key) == ["hostname", "utcoffset", "pid", "clock", "freq", "active", "processed", "loadavg",
                                                  "sw_ident", "sw_ver", "sw_sys", "timestamp", "type"])
        #expect(body["type"]?.stringValue == "worker-heartbeat" && body["clock"]?.intValue == 1 && body["pid"]?.intValue == 99)
        #expect(body["freq"]?.doubleValue == 2 && body["loadavg"]?.arrayValue?.count == 3 && body["sw_ident"]?.stringValue == "celerity")
        #expect(body["timestamp"]?.doubleValue == 1000.5)

        let (taskChannel, taskEnv, batch) = try decode(commands[1])
        #expect(taskChannel == "/0.celeryev/task.multi" && taskEnv["properties"]?["delivery_info"]?["routing_key"]?.stringValue == "task.multi")
        let events = try #require(batch.arrayValue)
        #expect(events.compactMap { $0["type"]?.stringValue } == [
            "task-received", "task-started", "task-received", "task-started", "task-succeeded", "task-failed", "task-retried",
            "task-revoked", "task-revoked", "task-failed", "task-rejected"])
        #expect(events.compactMap { $0["clock"]?.intValue } == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
        let received = events[0]
        #expect(received["uuid"]?.stringValue == "id-1" && received["name"]?.stringValue == "t.add")
        #expect(received["args"]?.stringValue == "[3, 4]" && received["kwargs"]?.stringValue == "{'k': 'v'}")
        #expect(received["root_id"]?.stringValue == "root-1" && received["parent_id"]?.isNull == true && received["retries"]?.intValue == 0)
        #expect(received["eta"]?.isNull == true && received["expires"]?.isNull == true)
        // Announced with the outcome (an inline run): received and started when it began.
        #expect(events[2]["timestamp"]?.doubleValue == 1001.75 && events[3]["timestamp"]?.doubleValue == 1001.75)
        #expect(events[4]["result"]?.stringValue == "7" && events[4]["runtime"]?.doubleValue == 0.25 && events[4]["timestamp"]?.doubleValue == 1002)
        #expect(events[5]["exception"]?.stringValue == "ValueError('kaput')" && events[5]["traceback"]?.stringValue == failure.traceback)
        #expect(events[6]["exception"]?.stringValue == "ValueError('kaput')")
        #expect(events[7]["terminated"]?.boolValue == true && events[7]["signum"]?.intValue == 15 && events[7]["expired"]?.boolValue == false)
        #expect(events[8]["terminated"]?.boolValue == false && events[8]["signum"]?.isNull == true && events[8]["expired"]?.boolValue == true)
        #expect(events[9]["exception"]?.stringValue == "NotRegistered('t.add')")
        #expect(events[10]["requeue"]?.boolValue == true)
    }

    @Test func defaultsEventsTurnsTaskEventsOn() throws {
        let on = try Manifest.parse("defaults:\n  events: true\ntasks:\n  a:\n    builtin: add\n", baseDirectory: "/tmp")
        let off = try Manifest.parse("tasks:\n  a:\n    builtin: add\n", baseDirectory: "/tmp")
        #expect(on.taskEvents && !off.taskEvents)
        #expect(throws: ManifestError.self) { try Manifest.parse("defaults:\n  events: often\ntasks:\n  a:\n    builtin: add\n", baseDirectory: "/tmp") }
    }

    /// A batch of inline runs: each outcome gets received, started and its outcome's event,
    /// with three clock values of its own, in order; and a flush's pipelines hold every event
    /// once, in order, in messages that end between two outcomes.
    /// A batch's successes are kept compact and written out by the flusher: the very bytes an
    /// outcome announced on its own gets, whatever its fields hold.
    @Test func compactRecordsWriteTheSameJSON() throws {
        var messages: [TaskMessage] = []
        var m = TaskMessage(id: "id-1", task: "t.add", args: [.int(1), .string("a\"b")], queue: "q")
        messages.append(m)
        m.parentID = "parent-\u{1}"
        m.rootID = nil
        m.argsRepr = #"('sécret', "\")"#
        m.kwargsRepr = "{}"
        m.kwargs = [JSONMember("k", .null)]
        m.retries = 3
        messages.append(m)
        m.argsRepr = ""
        m.kwargsRepr = nil
        messages.append(m)
        let results: [JSONValue] = [.int(7), .number(String(repeating: "8", count: 3000)), .string("x\ny"), .null, .bool(true),
                                    .double(0.5), .array([.int(1)]), .object([JSONMember("a", .string("é"))])]
        let wire = EventWire(node: "w@h\"", pid: 42, channelPrefix: "/0.celeryev/")
        var n = 0
        for message in messages {
            for (k, result) in results.enumerated() {
                let outcome = Outcome(result: .success(result), message: message, spec: nil, runtime: k == 0 ? nil : .nanoseconds(1234567 * k))
                var alone = RecordBuffer(), batch = RecordBuffer()
                wire.render(.finished(outcome, retried: false, announce: true, clock: 1000 + n, at: 1764700000.25 + Double(k)), into: &alone)
                wire.render(.finishedBatch([(outcome, .complete(nil))], clock: 1000 + n, at: 1764700000.25 + Double(k)), into: &batch)
                #expect(batch.bytes.first == EventWire.compactMark)
                #expect(wire.json(of: batch, record: 0) == alone.bytes,
                        "\(String(decoding: wire.json(of: batch, record: 0), as: UTF8.self))\n\(String(decoding: alone.bytes, as: UTF8.self))")
                n += 1
            }
        }
        // Not kept compact: what is not a success, or has an eta.
        var failed = RecordBuffer()
        wire.render(.finishedBatch([(Outcome(result: .failure(TaskFailure(type: "E", message: "m")), message: messages[0], spec: nil), .complete(nil))],
                                   clock: 5, at: 1), into: &failed)
        #expect(failed.bytes.first == ASCII.openBrace)
    }

    @Test func aBatchOfInlineRunsIsAnnouncedPerTaskAndPipelinesKeepTheOrder() throws {
        let outcomes: [(Outcome, Disposal)] = (0..<50).map { i in
            (Outcome(result: .success(.int(i)), message: TaskMessage(id: "id-\(i)", task: "t.add", args: [.int(i)], kwargs: [], queue: "q"),
                     spec: nil, runtime: .milliseconds(1)), .complete(nil))
        }
        var wire = EventWire(node: "w@h", pid: 1, channelPrefix: "/0.celeryev/")
        wire.maxBatchBytes = 2048
        wire.maxPipelineBytes = 8192
        let events: [PendingEvent] = [.finishedBatch(Array(outcomes[..<25]), clock: 75, at: 10),
                                      .started(id: "other", clock: 76, at: 10),
                                      .finishedBatch(Array(outcomes[25...]), clock: 151, at: 11)]
        // As the dispatcher writes them: each event's JSON when it happens, a record per
        // outcome (its received, started and end); then the flusher's pipelines.
        var written = RecordBuffer()
        for e in events { wire.render(e, into: &written) }
        #expect(written.count == 51)
        // Each record whole (received, started, its end), with its clocks.
        let records = try (0..<written.count).map { try JSONValue(parsing: [ASCII.openBracket] + wire.json(of: written, record: $0) + [ASCII.closeBracket]) }
        #expect(records.map { $0.arrayValue?.count } == Array(repeating: 3, count: 25) + [1] + Array(repeating: 3, count: 25))
        #expect(records[3].arrayValue?.compactMap { $0["clock"]?.intValue } == [10, 11, 12])
        #expect(records[50].arrayValue?.compactMap { $0["clock"]?.intValue } == [149, 150, 151] && records[50].arrayValue?[2]["uuid"]?.stringValue == "id-49")
        var pipelines = 0
        var from = 0
        var all: [JSONValue] = []
        var batch = RESPBatch()
        while from < written.count {
            batch.removeAll()
            let used = wire.pipeline(written, from: from, into: &batch)
            #expect(used > 0)
            from += used
            pipelines += 1
            let commands = try #require(batch.commands)
            #expect(commands.count == batch.count)
            for c in commands {
                let env = try JSONValue(parsing: c.arguments[2])
                #expect(c.arguments[2].count < 32 * 1024)
                all += try #require(Self.body(env).arrayValue)
            }
        }
        #expect(pipelines > 1)
        #expect(all.compactMap { $0["clock"]?.intValue } == Array(1...151))
        let types = all.compactMap { $0["type"]?.stringValue }
        #expect(types.count == 151 && types[75] == "task-started" && all[75]["uuid"]?.stringValue == "other")
        #expect(Array(types[..<3]) == ["task-received", "task-started", "task-succeeded"])
        #expect(all[150]["uuid"]?.stringValue == "id-49" && all[150]["result"]?.stringValue == "49" && types[149] == "task-started")
        #expect(wire.commands(events).count >= pipelines)
    }

    @Test func largeBatchesAreSplitIntoSeveralMessages() throws {
        let message = TaskMessage(id: "id", task: "t", args: [.string(String(repeating: "x", count: 900))], kwargs: [], queue: "q")
        var wire = EventWire(node: "w@h", pid: 1, channelPrefix: "/0.celeryev/")
        wire.maxBatchBytes = 4096
        let commands = wire.commands((0..<40).map { .received(message, clock: $0, at: 1, alsoStarted: false) })
        #expect(commands.count > 5)
        var total = 0
        for c in commands {
            let env = try JSONValue(parsing: c.arguments[2])
            total += try #require(Self.body(env).arrayValue).count
        }
        #expect(total == 40)
    }

    /// The bound on what waits to be published counts a batch's outcomes one by one (a batch
    /// of inline runs is one entry but may hold hundreds of outcomes).
    @Test func theBoundOnQueuedEventsCountsEachOutcomeOfABatch() throws {
        let d = EventDispatcher(url: try RedisURL(string: "redis://127.0.0.1:1/0"), node: "w@h", enabled: true,
                                logger: Logger(label: "test"), maxPending: 10)
        func batch(_ n: Int) -> [(Outcome, Disposal)] {
            (0..<n).map { i in (Outcome(result: .success(.int(i)), message: TaskMessage(id: "id-\(i)", task: "t", queue: "q"), spec: nil), .complete(nil)) }
        }
        d.finished(announcing: batch(8))
        #expect(d.queued.held == 8 && d.queued.dropped == 0)
        d.finished(announcing: batch(3))
        #expect(d.queued.held == 8 && d.queued.dropped == 3)
        d.started("x")
        d.started("y")
        #expect(d.queued.held == 10)
        d.started("z")
        #expect(d.queued.held == 10 && d.queued.dropped == 4)
    }

    /// base64 as Foundation writes it, for every length of a 3-byte group's remainders.
    @Test func base64MatchesFoundation() {
        var bytes: [UInt8] = []
        for n in 0..<300 {
            var out: [UInt8] = [7]
            Base64.append(bytes, to: &out)
            #expect(Array(out.dropFirst()) == Array(Data(bytes).base64EncodedString().utf8), "length \(n)")
            bytes.append(UInt8(truncatingIfNeeded: n &* 151 &+ 17))
        }
    }

    /// The history's LPUSH and LTRIM, in RESP: one record per end (none for a message handed
    /// back), `received` only for a message that has it, the trim at the capacity.
    @Test func historyRecordsAreWrittenInOnePushAndTrimmed() throws {
        var waited = TaskMessage(id: "w-1", task: "t.sleep", args: [.int(1)], kwargs: [], queue: "q")
        waited.receivedAt = 1000.25
        let quick = TaskMessage(id: "q-1", task: "t.add", args: [.int(1), .int(2)], kwargs: [], queue: "q")
        let wire = EventWire(node: "w@h", pid: 1, channelPrefix: "/0.celeryev/")
        // As the dispatcher keeps them: each outcome's record written into a buffer of its
        // own (one outcome, or a batch), then appended to what waits for the flush.
        func buffer(_ outcomes: [Outcome]) -> RecordBuffer {
            var h = RecordBuffer()
            for o in outcomes { withUnsafePointer(to: o) { wire.appendHistoryRecord($0, retried: false, at: 1002, to: &h) } }
            return h
        }
        var h = buffer([Outcome(result: .success(.int(1)), message: waited, spec: nil, runtime: .seconds(1))])
        h.append(contentsOf: buffer([Outcome(result: .handBack, message: quick, spec: nil)]))   // no record
        h.append(contentsOf: buffer([Outcome(result: .success(.int(3)), message: quick, spec: nil, runtime: .microseconds(5))]))
        #expect(h.count == 2)
        var batch = RESPBatch()
        EventWire.historyCommands(h, capacity: 500, into: &batch)
        let commands = try #require(batch.commands)
        #expect(commands.map { String(decoding: $0.arguments[0], as: UTF8.self) } == ["LPUSH", "LTRIM"])
        #expect(commands[1].arguments.dropFirst().map { String(decoding: $0, as: UTF8.self) } == [Keys.history, "0", "499"])
        let records = try commands[0].arguments.dropFirst(2).map { try JSONValue(parsing: $0) }
        #expect(records.count == 2)
        #expect(records[0]["id"]?.stringValue == "w-1" && records[0]["received"]?.doubleValue == 1000.25 && records[0]["runtime"]?.doubleValue == 1)
        #expect(records[1]["id"]?.stringValue == "q-1" && records[1]["received"] == nil && records[1]["args"]?.stringValue == "[1, 2]")
        #expect(try h.records.map { try JSONValue(parsing: $0) } == records)
        // More records than the history keeps: only the newest are pushed.
        var one = RESPBatch()
        EventWire.historyCommands(h, capacity: 1, into: &one)
        let trimmed = try #require(one.commands)
        #expect(try trimmed[0].arguments.dropFirst(2).map { try JSONValue(parsing: $0)["id"]?.stringValue } == ["q-1"])
        #expect(trimmed[1].arguments.dropFirst().map { String(decoding: $0, as: UTF8.self) } == [Keys.history, "0", "0"])
        // Chunks of `historyChunk` records per LPUSH, in order.
        var many = RecordBuffer()
        for i in 0..<(EventWire.historyChunk + 5) {
            many.append(contentsOf: buffer([Outcome(result: .success(.int(i)), message: TaskMessage(id: "m-\(i)", task: "t.add", args: [], kwargs: [], queue: "q"), spec: nil)]))
        }
        var chunked = RESPBatch()
        EventWire.historyCommands(many, capacity: 100_000, into: &chunked)
        let pushes = try #require(chunked.commands).filter { $0.arguments[0] == Array("LPUSH".utf8) }
        #expect(pushes.map { $0.arguments.count - 2 } == [EventWire.historyChunk, 5])
        #expect(try pushes.last?.arguments.last.map { try JSONValue(parsing: $0)["id"]?.stringValue } == "m-\(EventWire.historyChunk + 4)")
        var none = RESPBatch()
        EventWire.historyCommands(RecordBuffer(), capacity: 500, into: &none)
        #expect(none.isEmpty)
    }

    /// An event envelope's body, parsed: base64 of the JSON text.
    static func body(_ env: JSONValue) throws -> JSONValue {
        #expect(env["properties"]?["body_encoding"]?.stringValue == "base64")
        let b64 = try #require(env["body"]?.stringValue)
        return try JSONValue(parsing: Array(try #require(Data(base64Encoded: b64))))
    }
}

extension Integration {
    /// The dispatcher on a real Redis, seen by a PSUBSCRIBE: worker events and an outcome's
    /// three task events of one flush arrive in the order they happened (the clocks' order),
    /// `worker-offline` last (a task event after it would make Flower count the worker alive
    /// again). Then events of two threads at once: the clocks arrive in increasing order.
    @Suite(.timeLimit(.minutes(1)))
    struct EventOrderTests {
        @Test func theLastFlushEndsWithWorkerOffline() async throws {
            let redis = try await sharedRedis.value
            let url = try RedisURL(string: redis.url(db: 0))
            let tag = UUID().uuidString.prefix(8)
            let (one, two) = ("order-\(tag)@test", "order2-\(tag)@test")
            let seen = Mutex<[String: [(type: String, clock: Int)]]>([:])
            let sub = RedisPubSub(url: url, onMessage: { _, payload in
                guard let env = try? JSONValue(parsing: payload), let node = env["headers"]?["hostname"]?.stringValue,
                      node == one || node == two,
                      let b64 = env["body"]?.stringValue, let raw = Data(base64Encoded: b64),
                      let body = try? JSONValue(parsing: Array(raw)) else { return }
                let events = body.arrayValue ?? [body]
                seen.withLock { $0[node, default: []] += events.compactMap { e in e["type"]?.stringValue.map { ($0, e["clock"]?.intValue ?? -1) } } }
            })
            defer { sub.shutdown() }
            try await sub.psubscribe(["/0.celeryev/*"])
            func outcome(_ i: Int) -> Outcome {
                Outcome(result: .success(.int(i)), message: TaskMessage(id: "order-\(i)", task: "t.add", args: [.int(i)], kwargs: [], queue: "q"),
                        spec: nil, runtime: .microseconds(5))
            }
            // One flush: online, an outcome announced, offline.
            let d = EventDispatcher(url: url, node: one, enabled: true, logger: Logger(label: "test"))
            d.send("worker-online", fields: [])
            d.finished(outcome(1), retried: false, announce: true)
            await d.close(last: "worker-offline", fields: [])
            // Four threads at once (batches, single events, worker events), flushed as they go.
            let d2 = EventDispatcher(url: url, node: two, enabled: true, logger: Logger(label: "test"))
            let flusher = Task { await d2.run() }
            await withTaskGroup(of: Void.self) { g in
                for t in 0..<4 {
                    g.addTask {
                        for i in 0..<300 {
                            switch (t + i) % 4 {
                            case 0: d2.finished(announcing: (0..<5).map { (outcome($0), Disposal.complete(nil)) })   // 15 events
                            case 1: d2.started("s-\(i)")
                            case 2: d2.finished(outcome(i), retried: false, announce: false)
                            default: d2.send("worker-heartbeat", fields: [])
                            }
                        }
                    }
                }
            }
            flusher.cancel()
            await flusher.value   // as a worker stops: its flusher ends before the last flush
            await d2.close(last: "worker-offline", fields: [])
            let expected = 4 * 75 * (15 + 1 + 1 + 1) + 1
            let deadline = ContinuousClock.now + .seconds(15)
            while seen.withLock({ ($0[one]?.count ?? 0) < 5 || ($0[two]?.count ?? 0) < expected }) && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
            }
            let first = seen.withLock { $0[one] ?? [] }
            #expect(first.map(\.type) == ["worker-online", "task-received", "task-started", "task-succeeded", "worker-offline"])
            let clocks = seen.withLock { ($0[two] ?? []).map(\.clock) }
            #expect(clocks.count == expected)
            #expect(clocks == Array(1...expected), "clocks out of order: first at \(clocks.indices.dropFirst().first { clocks[$0 - 1] >= clocks[$0] } ?? -1)")
            #expect(seen.withLock { $0[two]?.last?.type } == "worker-offline")
    }
    }

    /// Celerity workers seen by the real Python tools: a Celery EventReceiver, `celery events
    /// --dump`, and Flower 2.2 (its event-based views; its worker list needs remote control).
    @Suite(.timeLimit(.minutes(4)))
    struct EventsInteropTests {
        static let tasks = """
          {q}.add:
            queue: {q}
            builtin: add
          {q}.fail:
            queue: {q}
            builtin: fail
          {q}.sleep:
            queue: {q}
            builtin: sleep
        """

        /// interop/events_check.py starts capturing, then the worker: worker-online,
        /// heartbeats every 2 s with Flower's fields, worker-offline at its warm stop, and the
        /// task events of add and fail (fields, order, task.multi) with -E or `defaults.events`;
        /// none at all without either.
        @Test(arguments: [("flag", true), ("manifest", true), ("off", false)])
        func aPythonEventReceiverSeesTheWorkerAndItsTasks(how: String, taskEvents: Bool) async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.tasks, preamble: how == "manifest" ? "defaults:\n  events: true\n" : "", startWorker: false)
            let worker = [Paths.celerity, "worker", "-Q", h.queue, "-n", h.node, "-c", "2", "-l", "warning",
                          "--manifest", h.manifestPath, "--broker", h.broker] + (how == "flag" ? ["-E"] : [])
            let r = try await ChildProcess.run(Paths.python3, [Paths.root + "/interop/events_check.py", "--broker", h.broker, "--node", h.node,
                                                               "--queue", h.queue, "--add-task", h.queue + ".add", "--fail-task", h.queue + ".fail"]
                                                   + (taskEvents ? [] : ["--no-task-events"]) + ["--"] + worker, name: "events-check-\(how)")
            #expect(r.status == 0, "\(r.output)")
            #expect(r.output.contains("OK   worker-online first") && r.output.contains("OK   worker-offline last"), "\(r.output)")
            if taskEvents {
                #expect(r.output.contains("OK   task events came as task.multi arrays"), "\(r.output)")
            } else {
                #expect(r.output.contains("OK   no task events without -E"), "\(r.output)")
            }
        }

        /// interop/ops_clients.py's event cases: the fields Flower reads on every kind of event,
        /// and `celery events --dump` printing the heartbeat and the task lines.
        @Test func celeryEventsDumpAndEventShapes() async throws {
            let redis = try await sharedRedis.value
            let h = try WorkerHarness(redis: redis, tasks: Self.tasks, extraArgs: ["-E"])
            let r = try await ChildProcess.run(Paths.python3, [Paths.root + "/interop/ops_clients.py", "--broker", h.broker, "--backend", h.broker,
                                                               "--node", h.node, "--queue", h.queue, "--add-task", h.queue + ".add",
                                                               "--fail-task", h.queue + ".fail", "--sleep-task", h.queue + ".sleep",
                                                               "--only", "events-shape,events-dump", "--no-pidbox"], name: "ops-events")
            #expect(r.status == 0, "\(r.output)\nworker:\n\(h.worker.output.suffix(2000))")
            #expect(r.output.contains("OK   events-shape") && r.output.contains("OK   events-dump"), "\(r.output)")
            #expect(await h.stop() == 0)
        }
    }
}
