import Synchronization

/// Random UUID4 strings, fast.
///
/// Why not Foundation's `UUID()`: on Linux it opens and reads /dev/urandom for every id
/// (profiled: an open, a read and a close per message, a fifth of the client's time per call).
/// Here a xoshiro256** generator, seeded once from the system's secure generator, makes the
/// 122 random bits; ids need to be unique, not secret.
public enum FastUUID {
    private static let state = Mutex<(UInt64, UInt64, UInt64, UInt64)>({
        var g = SystemRandomNumberGenerator()
        return (g.next() | 1, g.next(), g.next(), g.next())
    }())

    static func next128() -> (UInt64, UInt64) {
        state.withLock { s in
            func step() -> UInt64 {
                let result = ((s.1 &* 5) << 7 | (s.1 &* 5) >> 57) &* 9
                let t = s.1 << 17
                s.2 ^= s.0; s.3 ^= s.1; s.1 ^= s.2; s.0 ^= s.3
                s.2 ^= t
                s.3 = s.3 << 45 | s.3 >> 19
                return result
            }
            return (step(), step())
        }
    }

    private static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    /// A lowercase UUID4 string, e.g. `3f2b8c1e-9d4a-4e7b-8a6c-0f1e2d3c4b5a`.
    public static func string() -> String {
        var (hi, lo) = next128()
        hi = (hi & ~0xF000) | 0x4000                            // version 4
        lo = (lo & ~(0xC000 << 48)) | (0x8000 << 48)            // variant 10xx
        return String(unsafeUninitializedCapacity: 36) { buf in
            var i = 0
            func put(_ v: UInt64, _ nibbles: Int) {
                var shift = (nibbles - 1) * 4
                while shift >= 0 { buf[i] = hex[Int((v >> UInt64(shift)) & 0xF)]; i += 1; shift -= 4 }
            }
            put(hi >> 32, 8); buf[i] = 45; i += 1
            put(hi >> 16, 4); buf[i] = 45; i += 1
            put(hi, 4); buf[i] = 45; i += 1
            put(lo >> 48, 4); buf[i] = 45; i += 1
            put(lo, 12)
            return 36
        }
    }
}
