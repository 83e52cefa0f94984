import Testing
import CelerityBuiltins
import BigInt

@Suite struct BigMathTests {
    @Test func decimalStringMatchesBigUIntAroundPowersOfTen() {
        let ten = BigUInt(10)
        let one = BigUInt(1)
        let cases: [BigUInt] = [
            0, 1, 9, 10, BigUInt(UInt64.max),
            ten.power(19) - 1, ten.power(19), ten.power(19) + 1,
            ten.power(38) - 1, ten.power(38), ten.power(38) + 1,
            ten.power(57) + ten.power(19), ten.power(76) + 1, ten.power(76) - 1,
            ten.power(100) + 1, ten.power(100) - 1,
            one << 1000, (one << 1000) - 1,
        ]
        for x in cases {
            #expect(BigMath.decimalString(x) == x.description)
        }
        #expect(BigMath.decimalString(ten.power(19)) == "1" + String(repeating: "0", count: 19))
        #expect(BigMath.decimalString(ten.power(100) + 1) == "1" + String(repeating: "0", count: 99) + "1")
        #expect(BigMath.decimalString(ten.power(19) - 1) == String(repeating: "9", count: 19))
    }

    @Test func decimalStringOfARandom5000DigitNumber() {
        // 2^16607 ≤ x < 2^16608: exactly 5000 decimal digits.
        let x = BigUInt.randomInteger(withExactWidth: 16_608)
        let text = BigMath.decimalString(x)
        #expect(text.utf8.count == 5000)
        #expect(text == x.description)
        // A 1 followed by zeros then random digits: the inner chunks are mostly zero padding.
        let padded = BigUInt(10).power(4999) + BigUInt.randomInteger(withExactWidth: 8000)
        let paddedText = BigMath.decimalString(padded)
        #expect(paddedText.utf8.count == 5000)
        #expect(paddedText == padded.description)
    }

    @Test func decimalStringOfRandomWidthsAndSparseNumbers() {
        for width in stride(from: 1, through: 3000, by: 37) {
            let x = BigUInt.randomInteger(withExactWidth: width)
            #expect(BigMath.decimalString(x) == x.description, "width \(width)")
        }
        // Sums of a few 10^(19k): whole 19-digit words of zeros between the ones.
        var sparse = BigUInt(0)
        for k in [0, 1, 3, 4, 9, 16, 31] { sparse += BigUInt(10).power(19 * k) }
        #expect(BigMath.decimalString(sparse) == sparse.description)
    }

    @Test func bigMathFactorial() {
        #expect(BigMath.factorial(0) == 1)
        #expect(BigMath.factorial(1) == 1)
        #expect(BigMath.factorial(30).description == "265252859812191058636308480000000")
        // n! / (n-1)! == n across the point where the packed words overflow.
        for n in [21, 22, 40, 100] {
            #expect(BigMath.factorial(n) == BigMath.factorial(n - 1) * BigUInt(n))
        }
    }
}
