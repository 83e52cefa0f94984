import Testing
import Foundation
@testable import Celerity
import CelerityBuiltins

@Suite struct BuiltinsTests {
    private func call(_ task: String, _ args: [JSONValue], _ kwargs: [JSONMember] = []) -> TaskCall {
        TaskCall(id: "test-\(task)", task: task, args: args, kwargs: kwargs)
    }

    /// The TaskFailure `body` throws; records an issue (and returns nil) if it succeeds or throws something else.
    private func failure(_ body: () throws -> JSONValue, sourceLocation: SourceLocation = #_sourceLocation) -> TaskFailure? {
        do {
            let value = try body()
            Issue.record("expected a TaskFailure, got \(value)", sourceLocation: sourceLocation)
            return nil
        } catch let f as TaskFailure {
            return f
        } catch {
            Issue.record("expected a TaskFailure, got \(type(of: error)): \(error)", sourceLocation: sourceLocation)
            return nil
        }
    }

    // MARK: add

    @Test func addsSmallIntegers() throws {
        #expect(try Builtins.add(call("add", [4, 6])) == .number("10"))
        #expect(try Builtins.add(call("add", [-5, 3])) == .number("-2"))
        #expect(try Builtins.add(call("add", [-5, -7])) == .number("-12"))
        #expect(try Builtins.add(call("add", [0, 0])) == .number("0"))
    }

    @Test func addsBigIntegersExactly() throws {
        let a = JSONValue.number("123456789012345678901234567890")
        let b = JSONValue.number("987654321098765432109876543210")
        #expect(try Builtins.add(call("add", [a, b])) == .number("1111111110111111111011111111100"))
        // Crossing 10^19 word boundaries: inner chunks must keep their zeros.
        let big = JSONValue.number("1" + String(repeating: "0", count: 40))
        #expect(try Builtins.add(call("add", [big, 1])) == .number("1" + String(repeating: "0", count: 39) + "1"))
        #expect(try Builtins.add(call("add", [.number("-1" + String(repeating: "0", count: 30)), 1]))
                == .number("-" + String(repeating: "9", count: 30)))
        // Cancelling to zero gives "0", never "-0".
        #expect(try Builtins.add(call("add", [.number("-" + String(repeating: "7", count: 35)), .number(String(repeating: "7", count: 35))]))
                == .number("0"))
    }

    @Test func addOverflowingIntStaysExact() throws {
        #expect(try Builtins.add(call("add", [.int(Int.max), 1])) == .number("9223372036854775808"))
        #expect(try Builtins.add(call("add", [.int(Int.min), -1])) == .number("-9223372036854775809"))
        #expect(try Builtins.add(call("add", [.int(Int.max), .int(Int.max)])) == .number("18446744073709551614"))
    }

    @Test func addsFloats() throws {
        let sum = try Builtins.add(call("add", [0.1, 0.2]))
        #expect(sum == .number("0.30000000000000004"))
        #expect(!sum.isIntegerLiteral)
        #expect(sum.doubleValue == 0.1 + 0.2)
    }

    @Test func intPlusFloatIsAFloat() throws {
        let sum = try Builtins.add(call("add", [1, 2.5]))
        #expect(sum == .number("3.5"))
        // 5 + 0.0 is 5.0 in Python, not 5.
        let five = try Builtins.add(call("add", [5, 0.0]))
        #expect(five == .number("5.0"))
        #expect(!five.isIntegerLiteral)
        #expect(try Builtins.add(call("add", [.number("5.0"), 5])) == .number("10.0"))
    }

    @Test func addRejectsStrings() throws {
        let f = try #require(failure { try Builtins.add(call("add", ["a", "b"])) })
        #expect(f.type == "TypeError")
        #expect(f.module == "builtins")
        let mixed = try #require(failure { try Builtins.add(call("add", [1, "2"])) })
        #expect(mixed.type == "TypeError")
        let null = try #require(failure { try Builtins.add(call("add", [nil, 2])) })
        #expect(null.type == "TypeError")
    }

    @Test func addWithWrongArgumentCount() throws {
        let tooFew = try #require(failure { try Builtins.add(call("add", [1])) })
        #expect(tooFew.type == "TypeError")
        #expect(tooFew.message.contains("missing"), "\(tooFew.message)")
        #expect(tooFew.message.contains("'y'"), "\(tooFew.message)")
        let none = try #require(failure { try Builtins.add(call("add", [])) })
        #expect(none.type == "TypeError")
        #expect(none.message.contains("missing"))
        let tooMany = try #require(failure { try Builtins.add(call("add", [1, 2, 3])) })
        #expect(tooMany.type == "TypeError")
        #expect(tooMany.message.contains("takes"), "\(tooMany.message)")
        let unknownKeyword = try #require(failure { try Builtins.add(call("add", [1], [JSONMember("z", 2)])) })
        #expect(unknownKeyword.type == "TypeError")
        #expect(unknownKeyword.message.contains("'z'"))
        let twice = try #require(failure { try Builtins.add(call("add", [1, 2], [JSONMember("x", 3)])) })
        #expect(twice.type == "TypeError")
        #expect(twice.message.contains("multiple values"))
    }

    @Test func addTakesKeywordArguments() throws {
        #expect(try Builtins.add(call("add", [], [JSONMember("x", 2), JSONMember("y", 40)])) == .number("42"))
        #expect(try Builtins.add(call("add", [], [JSONMember("y", 40), JSONMember("x", 2)])) == .number("42"))
        #expect(try Builtins.add(call("add", [2], [JSONMember("y", 40)])) == .number("42"))
    }

    // MARK: factorial

    @Test func smallFactorials() throws {
        #expect(try Builtins.factorial(call("factorial", [0])) == .number("1"))
        #expect(try Builtins.factorial(call("factorial", [1])) == .number("1"))
        #expect(try Builtins.factorial(call("factorial", [5])) == .number("120"))
        #expect(try Builtins.factorial(call("factorial", [20])) == .number("2432902008176640000"))
        #expect(try Builtins.factorial(call("factorial", [21])) == .number("51090942171709440000"))
        #expect(try Builtins.factorial(call("factorial", [25])) == .number("15511210043330985984000000"))
        #expect(try Builtins.factorial(call("factorial", [], [JSONMember("n", 3)])) == .number("6"))
    }

    @Test func factorialOf20000MatchesPython() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", "import math,sys; sys.set_int_max_str_digits(0); print(math.factorial(20000))"]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        // Read before waiting: 77 KB does not fit in a pipe buffer.
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        let expected = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(expected.utf8.count == 77_338)

        let result = try Builtins.factorial(call("factorial", [20000]))
        guard case let .number(text) = result else {
            Issue.record("factorial returned \(result)")
            return
        }
        #expect(text.utf8.count == 77_338)
        #expect(text == expected)
        #expect(result.isIntegerLiteral)
    }

    @Test func factorialRejectsBadArguments() throws {
        let negative = try #require(failure { try Builtins.factorial(call("factorial", [-1])) })
        #expect(negative.type == "ValueError")
        let fraction = try #require(failure { try Builtins.factorial(call("factorial", [2.5])) })
        #expect(fraction.type == "TypeError")
        let integralFloat = try #require(failure { try Builtins.factorial(call("factorial", [5.0])) })
        #expect(integralFloat.type == "TypeError")
        let string = try #require(failure { try Builtins.factorial(call("factorial", ["x"])) })
        #expect(string.type == "TypeError")
        let tooBig = try #require(failure { try Builtins.factorial(call("factorial", [1_000_001])) })
        #expect(tooBig.type == "ValueError")
        let missing = try #require(failure { try Builtins.factorial(call("factorial", [])) })
        #expect(missing.type == "TypeError")
    }

    // MARK: mat_mul

    @Test func matMulReturnsMRowsOfMFloats() throws {
        let result = try Builtins.matMul(call("mat_mul", [3, 4]))
        let rows = try #require(result.arrayValue)
        #expect(rows.count == 3)
        for row in rows {
            let cells = try #require(row.arrayValue)
            #expect(cells.count == 3)
            for cell in cells {
                #expect(!cell.isIntegerLiteral, "\(cell)")
                let v = try #require(cell.doubleValue)
                // Each cell is a sum of 4 products of numbers in [0, 1).
                #expect(v >= 0 && v < 4, "\(v)")
            }
        }
        let keywords = try Builtins.matMul(call("mat_mul", [], [JSONMember("m", 2), JSONMember("n", 1)]))
        #expect(keywords.arrayValue?.count == 2)
        #expect(keywords.arrayValue?.allSatisfy { $0.arrayValue?.count == 2 } == true)
    }

    @Test func multiplyKnownMatrices() throws {
        // [[1,2,3],[4,5,6]] · [[7,8],[9,10],[11,12]] = [[58,64],[139,154]]
        #expect(try Builtins.multiply([1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12], m: 2, n: 3) == [58, 64, 139, 154])
        // Column · row: the 3×3 outer product.
        #expect(try Builtins.multiply([1, 2, 3], [4, 5, 6], m: 3, n: 1) == [4, 5, 6, 8, 10, 12, 12, 15, 18])
        // Row · column: 1×1.
        #expect(try Builtins.multiply([1, 2, 3], [4, 5, 6], m: 1, n: 3) == [32])
    }

    @Test func matMulRejectsBadArguments() throws {
        let zero = try #require(failure { try Builtins.matMul(call("mat_mul", [0, 3])) })
        #expect(zero.type == "ValueError")
        let negative = try #require(failure { try Builtins.matMul(call("mat_mul", [3, -1])) })
        #expect(negative.type == "ValueError")
        let tooLarge = try #require(failure { try Builtins.matMul(call("mat_mul", [5000, 5000])) })
        #expect(tooLarge.type == "ValueError")
        let fraction = try #require(failure { try Builtins.matMul(call("mat_mul", [2.5, 3])) })
        #expect(fraction.type == "TypeError")
        let string = try #require(failure { try Builtins.matMul(call("mat_mul", [3, "4"])) })
        #expect(string.type == "TypeError")
        let missing = try #require(failure { try Builtins.matMul(call("mat_mul", [3])) })
        #expect(missing.type == "TypeError")
    }

    // MARK: registry

    @Test func registryNamesTheBuiltins() async throws {
        let registry = Builtins.registry
        #expect(registry.names.isSuperset(of: ["add", "factorial", "mat_mul"]))
        let add = try #require(registry.handlers["add"])
        #expect(try await add.run(call("add", [2, 3])) == .number("5"))
        let factorial = try #require(registry.handlers["factorial"])
        #expect(try await factorial.run(call("factorial", [10])) == .number("3628800"))
    }
}
