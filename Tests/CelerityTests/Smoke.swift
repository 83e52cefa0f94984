import Testing
@Test func placeholderBuild() { #expect(Bool(true)) }
