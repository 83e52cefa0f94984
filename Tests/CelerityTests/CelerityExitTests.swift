@testable import Celerity
import RedisClient
import Testing

/// Which error means which exit status (the CLI asks `CelerityExit(error, otherwise:)`).
struct CelerityExitTests {
    struct Uncoded: Error {}

    @Test func theCodesAreTheREADMEs() {
        #expect(CelerityExit.allCases.map(\.rawValue) == [0, 1, 2, 3, 4, 6, 64])
    }

    @Test func eachErrorCarriesItsStatusAndAnUncodedOneTakesWhereItHappened() {
        func status(_ e: any Error) -> CelerityExit { CelerityExit(e, otherwise: .redisUnreachable) }
        #expect(status(RedisError(.connection, "cannot connect")) == .redisUnreachable)
        #expect(status(RedisError(.timeout, "no reply")) == .redisUnreachable)
        #expect(status(RedisError(.server, "ERR unknown command")) == .redisUnreachable)
        #expect(status(RedisError(.invalidURL, "http://nope")) == .badInput)
        #expect(status(RedisError(.server, "NOPERM this user has no permissions to run the 'lpush' command")) == .accessRefused)
        #expect(status(RedisError(.authentication, "WRONGPASS invalid username-password pair")) == .accessRefused)
        #expect(status(ClientError("refused", cause: RedisError(.server, "NOPERM no"))) == .accessRefused)
        #expect(status(ClientError("cannot send", cause: RedisError(.connection, "reset"))) == .redisUnreachable)
        #expect(status(TimeoutError(id: "x", seconds: 1)) == .noResult)
        #expect(status(TaskFailure(type: "ValueError", message: "no")) == .failed)
        #expect(status(ManifestError("tasks.yaml:3:5", "unknown key")) == .badInput)
        #expect(status(WorkerError("another worker named 'w' is alive")) == .failed)
        #expect(status(WorkerPermissionError(message: "NOPERM")) == .accessRefused)
        #expect(status(Uncoded()) == .redisUnreachable)
        #expect(CelerityExit(Uncoded(), otherwise: .badInput) == .badInput)
    }
}
