import Foundation
import Testing
@testable import Celerity

@Suite struct ResultWaitersTests {
    static func meta(_ id: String) -> ResultMeta { .success(id, .int(1)) }

    @Test func aResultThatArrivedFirstIsTakenWithoutWaiting() async {
        let w = ResultWaiters()
        w.deliver("a", Self.meta("a"))
        let m = await w.wait("a", until: Date().addingTimeInterval(5))
        #expect(m?.taskID == "a")
        #expect(w.take("a") == nil)   // taken once
    }

    @Test func aWaiterIsResumedByDeliveryOrByItsDeadline() async {
        let w = ResultWaiters()
        async let got = w.wait("b", until: Date().addingTimeInterval(5))
        try? await Task.sleep(for: .milliseconds(50))
        w.deliver("b", Self.meta("b"))
        #expect(await got?.taskID == "b")
        let t0 = Date()
        #expect(await w.wait("never", until: Date().addingTimeInterval(0.2)) == nil)
        #expect(-t0.timeIntervalSinceNow >= 0.19)
    }

    @Test func droppingFromAFullStashChangesTheMark() {
        let w = ResultWaiters(capacity: 2)
        let before = w.mark
        w.deliver("1", Self.meta("1"))
        w.deliver("2", Self.meta("2"))
        #expect(w.mark == before)
        w.deliver("3", Self.meta("3"))
        #expect(w.mark != before)   // handles sent before this must read their keys
        #expect(w.take("1") == nil)
        #expect(w.take("3") != nil)
    }
}
