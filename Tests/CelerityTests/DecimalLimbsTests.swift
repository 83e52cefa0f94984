import Testing
import CelerityBuiltins
import BigInt

@Suite struct DecimalLimbsTests {
    @Test func factorialInDecimalLimbsMatchesBigIntForManySizes() {
        for n in [0, 1, 2, 19, 20, 21, 25, 100, 257, 1000, 3001] {
            #expect(DecimalLimbs.decimalString(DecimalLimbs.factorial(n)) == BigMath.factorial(n).description, "n = \(n)")
        }
    }

    @Test func multiplicationCarriesAcrossLimbs() {
        let nines: [UInt64] = Array(repeating: DecimalLimbs.base - 1, count: 40)   // 10^760 - 1
        let square = DecimalLimbs.decimalString(DecimalLimbs.multiply(nines, nines))
        // (10^760 - 1)^2 = 10^1520 - 2·10^760 + 1 = 9…9 8 0…0 1
        #expect(square == String(repeating: "9", count: 759) + "8" + String(repeating: "0", count: 759) + "1")
        #expect(DecimalLimbs.decimalString(DecimalLimbs.multiply([0], nines)) == "0")
    }
}
