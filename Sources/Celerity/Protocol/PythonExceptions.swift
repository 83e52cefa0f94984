import Foundation

// Which module a failure names (`exc_module`), so that a Python client recreates the class it
// would catch: Celery's clients look the class up as `sys.modules[exc_module].<exc_type>` and
// fall back to a new class of that name in `celery.exceptions` when there is none.

extension TaskFailure {
    /// The names of Python's builtin exceptions and warnings (`builtins` module, Python 3.11
    /// to 3.13). A failure of one of these types is stored with `exc_module: "builtins"`, so
    /// `except ValueError` on a Python client catches it.
    public static let pythonBuiltinExceptions: Set<String> = [
        "ArithmeticError", "AssertionError", "AttributeError", "BaseException", "BaseExceptionGroup", "BlockingIOError",
        "BrokenPipeError", "BufferError", "BytesWarning", "ChildProcessError", "ConnectionAbortedError", "ConnectionError",
        "ConnectionRefusedError", "ConnectionResetError", "DeprecationWarning", "EOFError", "EncodingWarning", "EnvironmentError",
        "Exception", "ExceptionGroup", "FileExistsError", "FileNotFoundError", "FloatingPointError", "FutureWarning",
        "GeneratorExit", "IOError", "ImportError", "ImportWarning", "IndentationError", "IndexError", "InterruptedError",
        "IsADirectoryError", "KeyError", "KeyboardInterrupt", "LookupError", "MemoryError", "ModuleNotFoundError", "NameError",
        "NotADirectoryError", "NotImplementedError", "OSError", "OverflowError", "PendingDeprecationWarning", "PermissionError",
        "ProcessLookupError", "PythonFinalizationError", "RecursionError", "ReferenceError", "ResourceWarning", "RuntimeError",
        "RuntimeWarning", "StopAsyncIteration", "StopIteration", "SyntaxError", "SyntaxWarning", "SystemError", "SystemExit",
        "TabError", "TimeoutError", "TypeError", "UnboundLocalError", "UnicodeDecodeError", "UnicodeEncodeError", "UnicodeError",
        "UnicodeTranslateError", "UnicodeWarning", "UserWarning", "ValueError", "Warning", "ZeroDivisionError",
    ]

    /// The module of a plugin's error: the one it names (`error.module` in one-shot mode,
    /// `error.data.module` in persistent mode; at most `maxTypeBytes`), else `builtins` for a Python builtin
    /// exception's name, else `celerity.plugin` (a Python client then makes a class of that
    /// name in `celery.exceptions`).
    public static func pluginModule(type: String, declared: JSONValue?) -> String {
        if let m = declared?.stringValue?.trimmingCharacters(in: .whitespaces), !m.isEmpty, m.utf8.count <= maxTypeBytes { return m }
        return pythonBuiltinExceptions.contains(type) ? "builtins" : "celerity.plugin"
    }

    /// A short, readable traceback for a built-in Swift handler's failure (it has no Python
    /// frames): the task, its handler and the error, laid out as Python prints one, so a
    /// Python client's `AsyncResult.traceback` shows where it came from.
    static func builtinTraceback(task: String, id: String, builtin: String, _ f: TaskFailure) -> String {
        "Traceback (most recent call last):\n  Celerity built-in '\(builtin)' (Swift), task \(task)[\(id)]\n\(f.type): \(f.message)\n"
    }
}
