/// Exact non-negative integers held as little-endian base-10^19 limbs, for factorial.
///
/// Why not BigInt alone: BigInt 6.0.1 multiplies well but converts to decimal slowly, and its
/// division (needed for a divide-and-conquer conversion) is slower still: factorial(20000)
/// plus its 77,338-digit text took ~400 ms in release that way, slower than Python. In base
/// 10^19 the product tree yields the decimal digits directly, and column-wise (Comba)
/// multiplication needs only two hardware divisions per output limb.
public enum DecimalLimbs {
    public static let base: UInt64 = 10_000_000_000_000_000_000

    /// n! as limbs, by a product tree whose leaves pack consecutive factors into one limb.
    public static func factorial(_ n: Int) -> [UInt64] {
        precondition(n >= 0)
        var leaves: [[UInt64]] = []
        var acc: UInt64 = 1
        if n >= 2 {
            for i in 2...n {
                let (hi, lo) = acc.multipliedFullWidth(by: UInt64(i))
                if hi != 0 || lo >= base {
                    leaves.append([acc])
                    acc = UInt64(i)
                } else {
                    acc = lo
                }
            }
        }
        leaves.append([acc])
        return product(leaves[...])
    }

    static func product(_ xs: ArraySlice<[UInt64]>) -> [UInt64] {
        switch xs.count {
        case 0: return [1]
        case 1: return xs[xs.startIndex]
        default:
            let mid = xs.startIndex + xs.count / 2
            return multiply(product(xs[..<mid]), product(xs[mid...]))
        }
    }

    /// a × b, column by column: each column's sum of 128-bit products is accumulated in three
    /// words, then split into one limb and a carry for the next column.
    public static func multiply(_ a: [UInt64], _ b: [UInt64]) -> [UInt64] {
        let n = a.count + b.count
        var out = [UInt64](repeating: 0, count: n)
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                out.withUnsafeMutableBufferPointer { po in
                    var carryHi: UInt64 = 0
                    var carryLo: UInt64 = 0
                    for k in 0..<(n - 1) {
                        var c2: UInt64 = 0
                        var c1 = carryHi
                        var c0 = carryLo
                        let iStart = max(0, k - (pb.count - 1))
                        let iEnd = min(k, pa.count - 1)
                        if iStart <= iEnd {
                            for i in iStart...iEnd {
                                let (ph, pl) = pa[i].multipliedFullWidth(by: pb[k &- i])
                                let (s0, o0) = c0.addingReportingOverflow(pl)
                                c0 = s0
                                // ph < 2^63 (limbs are < 10^19), so ph + 1 cannot overflow.
                                let (s1, o1) = c1.addingReportingOverflow(ph &+ (o0 ? 1 : 0))
                                c1 = s1
                                c2 &+= o1 ? 1 : 0
                            }
                        }
                        let (q1, r1) = base.dividingFullWidth((c2, c1))
                        let (q0, r0) = base.dividingFullWidth((r1, c0))
                        po[k] = r0
                        carryHi = q1
                        carryLo = q0
                    }
                    po[n - 1] = carryLo
                }
            }
        }
        while out.count > 1 && out[out.count - 1] == 0 { out.removeLast() }
        return out
    }

    /// Decimal text: the top limb as is, every other limb zero-padded to 19 digits.
    public static func decimalString(_ limbs: [UInt64]) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(limbs.count * 19)
        var digits = [UInt8](repeating: 0, count: 19)
        for (index, limb) in limbs.reversed().enumerated() {
            var v = limb
            var i = 19
            repeat {
                i -= 1
                digits[i] = UInt8(48 + v % 10)
                v /= 10
            } while v > 0
            if index > 0 { while i > 0 { i -= 1; digits[i] = 48 } }
            bytes.append(contentsOf: digits[i...])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
