import Synchronization
import Testing
@testable import Celerity

@Suite struct SlotsTests {
    /// A slot taken past the room (a message a fetch loop already holds) is a debt: the next
    /// release pays it back, and only the one after gives a waiter its slot.
    @Test func aSlotTakenPastTheRoomIsPaidBackBeforeAnyWaiterGetsOne() async throws {
        let slots = Slots(1)
        #expect(await slots.acquire() == 1)
        slots.take()
        let got = Mutex(false)
        let waiter = Task { let n = await slots.acquire(); got.withLock { $0 = true }; return n }
        try await Task.sleep(for: .milliseconds(50))
        slots.release()   // pays the debt
        try await Task.sleep(for: .milliseconds(50))
        #expect(got.withLock { $0 } == false)
        slots.release()   // now the waiter's
        #expect(await waiter.value == 1)
        #expect(got.withLock { $0 })
    }
}
