/// JSON records one after the other in one byte array, and where each ends (no array per
/// record), waiting for the event flusher. The dispatcher writes two kinds here where they
/// happen, so that the flusher holds no outcome, message or result (holding them until a flush
/// ~25–100 ms later and freeing them on another thread cost a draining worker more than
/// writing the JSON where the outcome was; measured with `-E` and with the history on):
/// - task events (`EventWire.render…`): a record per event, or per outcome announced (its
///   received, started and end events, separated by commas), or, for a batch's announced
///   successes, a compact record of their fields (`EventWire.compactMark` first);
///   `EventWire.pipeline` writes those out and joins the records into `task.multi` messages;
/// - history records (`EventWire.appendHistoryRecord`), one per outcome;
///   `EventWire.historyCommands` pushes them.
struct RecordBuffer: Sendable {
    private(set) var bytes: [UInt8] = []
    /// Where each record ends.
    private(set) var ends: [Int] = []
    /// Where `append(upTo:_:)` writes a record before it is copied in (kept, grown as needed).
    private var scratch: [UInt8] = []

    var count: Int { ends.count }
    var isEmpty: Bool { ends.isEmpty }

    /// Appends a record: what `write` appends (nothing, if it appends nothing).
    mutating func append(_ write: (inout [UInt8]) -> Void) {
        let before = bytes.count
        write(&bytes)
        if bytes.count > before { ends.append(bytes.count) }
    }

    /// Appends a record that `write` writes through a cursor, in at most `bound` bytes (a
    /// write past them stops the process: measure generously).
    mutating func append(upTo bound: Int, _ write: (inout ByteCursor) -> Void) {
        if scratch.count < bound { scratch = [UInt8](repeating: 0, count: max(bound, 2 * scratch.count, 4096)) }
        let used = scratch.withUnsafeMutableBufferPointer { room in
            var cursor = ByteCursor(room)
            write(&cursor)
            return cursor.count
        }
        if used > 0 {
            scratch.withUnsafeBufferPointer { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: $0[..<used])) }
            ends.append(bytes.count)
        }
        if scratch.count > Self.keptScratch { scratch = [] }   // a rare huge record: not kept
    }

    /// The scratch room kept between records (a task's events take ~2 KiB of room).
    static let keptScratch = 64 * 1024

    /// Appends another buffer's records after this one's.
    mutating func append(contentsOf other: RecordBuffer) {
        let base = bytes.count
        bytes.append(contentsOf: other.bytes)
        // No `ends.reserveCapacity` here: an Array's reserveCapacity allocates exactly what is
        // asked (no geometric growth), so one per batch copied all of `ends` every time.
        for end in other.ends { ends.append(base + end) }
    }

    /// Where record `i` begins.
    func start(of i: Int) -> Int { i == 0 ? 0 : ends[i - 1] }

    /// Empties it, its capacity kept.
    mutating func removeAll() {
        bytes.removeAll(keepingCapacity: true)
        ends.removeAll(keepingCapacity: true)
    }
}
