import Testing
import Foundation
@testable import Celerity

@Suite struct ResultBackendConfigTests: ManifestTesting {
    @Test func rpcResultBackend() throws {
        try withTemporaryDirectory { dir in
            let manifest = try parse("result_backend: \"rpc://\"\ntasks:\n  a:\n    builtin: add\n", in: dir)
            let backend = try #require(manifest.resultBackend)
            #expect(backend.kind == .rpc)
            #expect(backend.expires == 86400)
            #expect(backend.resolved(broker: "redis://other:6379/3") == backend)
        }
    }

    @Test func resultBackendMappingWithoutURLUsesTheBroker() throws {
        try withTemporaryDirectory { dir in
            let manifest = try parse("result_backend:\n  expires: 600\ntasks:\n  a:\n    builtin: add\n", in: dir)
            let backend = try #require(manifest.resultBackend)
            #expect(backend.kind == .sameAsBroker)
            #expect(backend.expires == 600)
            let broker = "redis://broker.example:6379/2"
            #expect(backend.resolved(broker: broker) == ResultBackendConfig(kind: .redis(broker), expires: 600))

            let withURL = try parse("result_backend:\n  url: redis://results:6379/5\n  expires: 0\ntasks:\n  a:\n    builtin: add\n", in: dir)
            #expect(withURL.resultBackend == ResultBackendConfig(kind: .redis("redis://results:6379/5"), expires: 0))
            #expect(withURL.resultBackend?.resolved(broker: broker).kind == .redis("redis://results:6379/5"))
        }
    }

    @Test func resultBackendParseAcceptsKnownForms() throws {
        #expect(try ResultBackendConfig.parse("none").kind == ResultBackendKind.none)
        #expect(try ResultBackendConfig.parse("broker").kind == .sameAsBroker)
        #expect(try ResultBackendConfig.parse("rpc://").kind == .rpc)
        #expect(try ResultBackendConfig.parse("redis://h:1/0", expires: 5) == ResultBackendConfig(kind: .redis("redis://h:1/0"), expires: 5))
        #expect(throws: ManifestError.self) { try ResultBackendConfig.parse("amqp://guest@localhost//") }
    }
}
