@testable import Celerity
import Synchronization
import Testing

@Suite struct OneShotTimerTests {
    private final class Payload: Sendable {}

    /// Polls `condition` for up to `seconds`.
    private func eventually(_ seconds: Double = 5, _ condition: () -> Bool) async -> Bool {
        let clock = ContinuousClock()
        let end = clock.now + .milliseconds(Int(seconds * 1000))
        while clock.now < end {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return condition()
    }

    @Test func firesOnceEvenWhenTheHandleIsDropped() async {
        let count = Mutex(0)
        _ = OneShotTimer(after: 0.01) { count.withLock { $0 += 1 } }
        #expect(await eventually { count.withLock { $0 } == 1 })
        try? await Task.sleep(for: .milliseconds(100))
        #expect(count.withLock { $0 } == 1)
    }

    @Test func doesNotFireAfterCancel() async {
        let fired = Mutex(false)
        let timer = OneShotTimer(after: 0.05) { fired.withLock { $0 = true } }
        timer.cancel()
        try? await Task.sleep(for: .milliseconds(200))
        #expect(!fired.withLock { $0 })
    }

    @Test func releasesItsClosureAtCancel() {
        weak var weakPayload: Payload?
        let timer: OneShotTimer
        do {
            let payload = Payload()
            weakPayload = payload
            timer = OneShotTimer(after: 300) { _ = payload }
        }
        #expect(weakPayload != nil)
        timer.cancel()
        #expect(weakPayload == nil)
    }

    @Test func releasesItsClosureOnceFired() async {
        weak var weakPayload: Payload?
        do {
            let payload = Payload()
            weakPayload = payload
            _ = OneShotTimer(after: 0.01) { _ = payload }
        }
        #expect(await eventually { weakPayload == nil })
    }
}
