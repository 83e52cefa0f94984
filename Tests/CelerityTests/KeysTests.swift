import Testing
@testable import Celerity

@Suite struct KeysTests {
    @Test func priorityBuckets() {
        let sep = "\u{06}\u{16}"
        #expect(Keys.separator == sep)
        #expect(Keys.queue("q") == "q")
        #expect(Keys.queue("q", priority: 0) == "q")
        #expect(Keys.queue("q", priority: 2) == "q")
        #expect(Keys.queue("q", priority: 3) == "q\u{06}\u{16}3")
        #expect(Keys.queue("q", priority: 5) == "q\u{06}\u{16}3")
        #expect(Keys.queue("q", priority: 6) == "q\u{06}\u{16}6")
        #expect(Keys.queue("q", priority: 8) == "q\u{06}\u{16}6")
        #expect(Keys.queue("q", priority: 9) == "q\u{06}\u{16}9")
        #expect(Keys.queue("q", priority: 12) == "q\u{06}\u{16}9")
        #expect(Keys.queue("q", priority: -1) == "q")
        #expect(Array(Keys.queue("add", priority: 3).utf8) == Array("add".utf8) + [0x06, 0x16, 0x33])
        #expect(Keys.priorityQueues("q") == ["q", "q" + sep + "3", "q" + sep + "6", "q" + sep + "9"])
    }

    @Test func queueNameFromListKey() {
        #expect(Keys.queueName(fromListKey: "q") == "q")
        #expect(Keys.queueName(fromListKey: "q\u{06}\u{16}3") == "q")
        #expect(Keys.queueName(fromListKey: "mat_mul\u{06}\u{16}9") == "mat_mul")
        for p in 0...9 {
            #expect(Keys.queueName(fromListKey: Keys.queue("plugins", priority: p)) == "plugins")
        }
        #expect(Keys.resultMeta("abc") == "celery-task-meta-abc")
        #expect(Keys.bindingMember("add") == "add\u{06}\u{16}\u{06}\u{16}add")
    }
}
