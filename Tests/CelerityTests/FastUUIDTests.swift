import Testing
import Foundation
@testable import Celerity

@Suite struct FastUUIDTests {
    @Test func idsAreLowercaseUUID4AndUnique() {
        var seen = Set<String>()
        for _ in 0..<100_000 {
            let s = FastUUID.string()
            let c = Array(s)
            #expect(s.count == 36 && UUID(uuidString: s) != nil && s == s.lowercased(), "\(s)")
            #expect(c[14] == "4" && "89ab".contains(c[19]), "\(s)")
            seen.insert(s)
        }
        #expect(seen.count == 100_000)
    }
}
