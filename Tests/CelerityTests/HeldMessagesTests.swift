@testable import Celerity
import Foundation
import Testing

/// The ledger of held messages, alone (no worker).
struct HeldMessagesTests {
    @Test func theLedgerCountsCopiesAndForgetsOnlyWhatItIsTold() {
        let held = HeldMessages()
        let a = Array("message a".utf8), b = Array("message b".utf8)
        let t = held.beginFetch()
        #expect(held.anyOutstanding([t]))
        held.endFetch(t, fetched: [a, a, b])
        #expect(!held.anyOutstanding([t]))
        #expect(held.counts([HeldMessages.key(a), HeldMessages.key(b)]) == [HeldMessages.key(a): 2, HeldMessages.key(b): 1])
        held.release(a)
        held.release([b, b])   // a second release of b is a no-op
        #expect(held.counts([HeldMessages.key(a), HeldMessages.key(b)]) == [HeldMessages.key(a): 1, HeldMessages.key(b): 0])
        #expect(held.count == 1)
    }

    @Test func keysTellApartEnvelopesThatDifferOnlyInTheirDeliveryTag() {
        let body = String(repeating: "x", count: 600)
        let one = Array("{\"body\": \"\(body)\", \"properties\": {\"delivery_tag\": \"\(UUID().uuidString)\"}}".utf8)
        let two = Array("{\"body\": \"\(body)\", \"properties\": {\"delivery_tag\": \"\(UUID().uuidString)\"}}".utf8)
        #expect(HeldMessages.key(one) != HeldMessages.key(two))
        #expect(HeldMessages.key(one) == HeldMessages.key(Array(one)))
    }
}
