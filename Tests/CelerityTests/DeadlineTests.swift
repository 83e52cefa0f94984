@testable import Celerity
import Synchronization
import Testing

@Suite struct DeadlineTests {
    @Test func returnsTheValueWhenTheWorkWins() async throws {
        let v = try await withDeadline(.seconds(10)) { 42 }
        #expect(v == 42)
    }

    @Test func returnsNilAndCancelsTheWorkWhenTheDeadlineWins() async throws {
        let cancelled = Mutex(false)
        let clock = ContinuousClock()
        let start = clock.now
        let v = try await withDeadline(.milliseconds(50)) { () async throws -> Int in
            do { try await Task.sleep(for: .seconds(30)) } catch { cancelled.withLock { $0 = true }; throw error }
            return 1
        }
        #expect(v == nil)
        #expect(cancelled.withLock { $0 })
        #expect(clock.now - start < .seconds(10))
    }

    @Test func rethrowsTheWorksError() async {
        struct Boom: Error {}
        await #expect(throws: Boom.self) {
            _ = try await withDeadline(.seconds(10)) { () async throws -> Int in throw Boom() }
        }
    }
}
