import RedisClient
import Testing

@Suite struct BackoffTests {
    @Test func doublesFromFirstUpToTheCap() {
        var b = Backoff(first: 0.1, max: 5)
        let delays = (0..<9).map { _ in b.next() }
        #expect(delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5, 5, 5])
    }

    @Test func theCapNeedNotBeAPowerOfTwoOfFirst() {
        var b = Backoff(first: 0.5, max: 30)
        #expect((0..<8).map { _ in b.next() } == [0.5, 1, 2, 4, 8, 16, 30, 30])
    }

    @Test func currentIsTheNextDelay() {
        var b = Backoff(first: 0.2, max: 10)
        #expect(b.current == 0.2)
        _ = b.next()
        #expect(b.current == 0.4)
    }

    @Test func resetStartsOverAtFirst() {
        var b = Backoff(first: 0.2, max: 10)
        for _ in 0..<10 { _ = b.next() }
        #expect(b.current == 10)
        b.reset()
        #expect(b.next() == 0.2)
        #expect(b.next() == 0.4)
    }

    @Test func theFirstDelayIsNotCapped() {
        // As in the loops it replaced: `first` is used as given, doubling is capped.
        var b = Backoff(first: 0.1, max: 0.05)
        #expect(b.next() == 0.1)
        #expect(b.next() == 0.05)
    }
}
