import RedisClient

/// The exit status of every `celerity` command: one table (the README, `celerity --help`).
/// (Not `ExitStatus`: Swift Testing has one, and tests import both.)
public enum CelerityExit: Int32, Sendable, CaseIterable {
    /// Success.
    case ok = 0
    /// The task failed (FAILURE or REVOKED), or what the command checks did not pass (plugin
    /// check, dead show/retry of entries that are not there, a worker that stopped on an error).
    case failed = 1
    /// A bad manifest, URL or input.
    case badInput = 2
    /// No result (yet): a time-out ran out, or the task has not finished.
    case noResult = 3
    /// Redis could not be reached (or failed the command otherwise).
    case redisUnreachable = 4
    /// Redis refused access: an ACL permission is missing, or authentication failed.
    case accessRefused = 6
    /// A bad command line (ArgumentParser's own code).
    case usage = 64

    /// The status `error` carries (`ExitCoded`), or `otherwise` for an error that carries none.
    public init(_ error: any Error, otherwise: CelerityExit) {
        self = (error as? any ExitCoded)?.exitStatus ?? otherwise
    }
}

/// An error that says which exit status it means: decided by its type and typed fields,
/// never by its message.
public protocol ExitCoded: Error {
    var exitStatus: CelerityExit { get }
}

// Which error means which status, in one place. An error without a conformance takes the
// status of where it happened (the CLI says which: bad input before anything is sent, Redis
// trouble after).

extension RedisError: ExitCoded {
    public var exitStatus: CelerityExit {
        if code == .invalidURL { return .badInput }
        return isPermissionDenied ? .accessRefused : .redisUnreachable
    }
}

extension ClientError: ExitCoded {
    /// Refused by Redis: 6; any other trouble of the client: 4.
    public var exitStatus: CelerityExit { isPermissionDenied ? .accessRefused : .redisUnreachable }
}

extension ArgumentError: ExitCoded {
    /// Refused before sending: bad input.
    public var exitStatus: CelerityExit { .badInput }
}

extension TimeoutError: ExitCoded {
    public var exitStatus: CelerityExit { .noResult }
}

extension TaskFailure: ExitCoded {
    public var exitStatus: CelerityExit { .failed }
}

extension ManifestError: ExitCoded {
    public var exitStatus: CelerityExit { .badInput }
}

extension WorkerError: ExitCoded {
    public var exitStatus: CelerityExit { .failed }
}

extension WorkerPermissionError: ExitCoded {
    public var exitStatus: CelerityExit { .accessRefused }
}
