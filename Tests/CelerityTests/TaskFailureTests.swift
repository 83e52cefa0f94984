import Testing
@testable import Celerity

@Suite struct TaskFailureTests {
    @Test func taskFailureReadsExceptionDocuments() {
        let multi = TaskFailure(json: ["exc_type": "ValueError", "exc_message": ["bad", 2, nil], "exc_module": "builtins"], traceback: "tb")
        #expect(multi.type == "ValueError")
        #expect(multi.message == "bad, 2, null")
        #expect(multi.module == "builtins")
        #expect(multi.traceback == "tb")
        #expect(multi.description == "ValueError: bad, 2, null")

        let noModule = TaskFailure(json: ["exc_type": "KeyError", "exc_message": []], traceback: nil)
        #expect(noModule.message == "")
        #expect(noModule.module == "builtins")

        let stringMessage = TaskFailure(json: ["exc_type": "RuntimeError", "exc_message": "plain", "exc_module": "mymod"], traceback: nil)
        #expect(stringMessage.message == "plain")
        #expect(stringMessage.module == "mymod")

        let bare = TaskFailure(json: "boom", traceback: nil)
        #expect(bare.type == "Exception")
        #expect(bare.message == "boom")
    }

    @Test func taskFailureJSONIsCeleryShaped() {
        let f = TaskFailure(type: "TimeoutError", message: "slow", module: "mymod")
        #expect(f.json == ["exc_type": "TimeoutError", "exc_message": ["slow"], "exc_module": "mymod"])
        #expect(TaskFailure(json: f.json, traceback: nil) == f)
        #expect(TaskFailure.notRegistered("x.y").json["exc_message"] == ["'x.y'"])
        #expect(TaskFailure.notRegistered("x.y").module == "celery.exceptions")
    }
}
