# celerity-check: none (the helper library, imported by the Python plugins)
"""Write a Celerity plugin in Python with a decorator and one call.

    from celerity_plugin import task, run

    @task("plugins.py_add")          # the task name(s) this function serves
    def add(x, y):
        return x + y

    if __name__ == "__main__":
        run()

run() speaks Celerity plugin protocol 1 (see docs/plugins.md) in the mode the worker
asks for through CELERITY_MODE:

* "oneshot" or unset: read one JSON request from stdin until EOF, write one response
  ({"result": ...} or {"error": {...}}) to stdout, exit 0. A task that raises
  RetryableError (or any exception with a true `retryable` attribute) also makes the
  process exit 75 (EX_TEMPFAIL), which asks the worker for a retry.
* "persistent": newline-delimited JSON-RPC 2.0 on stdin/stdout: initialize, task/run,
  $/cancel (best effort), describe, shutdown, exit; EOF on stdin means exit once the
  calls already received are answered.
* "describe": write the plugin's description (its tasks, the policy they suggest and
  their argument schemas) as one JSON document to stdout and exit 0. Discovery
  (`plugin_dirs` in tasks.yaml) asks every plugin this way.

Describing tasks: each task's argument schema comes from the function's signature:

    @task("plugins.greet", queue="plugins", time_limit=30)
    def greet(name: str, times: int = 1) -> str:
        '''Greets someone.'''

describes plugins.greet as {"doc": "Greets someone.", "params": {"name": {"type":
"string"}, "times": {"type": "integer", "default": 1}}, "returns": {"type": "string"},
"queue": "plugins", "time_limit": 30}. Annotations map to JSON Schema types: str,
int, float (number), bool, list[T] (items), dict / dict[str, T], tuple, Optional[T],
Union[...], Literal[...] (enum), Enum subclasses (enum of their values), TypedDict
(properties), None; Any, an unannotated parameter or an unknown class accept anything.
Annotated[int, {"minimum": 0}] adds the dict's keywords to the schema.
A parameter with a default is optional (a default that is not JSON is described as
null). *args becomes "varargs", **kwargs "varkwargs". The docstring's first paragraph
is the task's "doc". Keyword options of task() are the policy the plugin suggests
(tasks.yaml wins key by key): queue, mode, time_limit, soft_time_limit, retries, ...
(POLICY_KEYS), plus doc, params (an explicit schema: a dict name -> schema or type
name, or a list of names that take anything; it replaces the derived params, varargs
and varkwargs; params=None describes no schema at all), varargs, varkwargs, returns.

Functions receive the request's args as positional and kwargs as keyword arguments.
When one function is registered it serves every task name; otherwise the request's
"task" picks the function. stdout belongs to the protocol: while the plugin runs,
print() and anything else written to file descriptor 1 go to stderr, which the worker
logs. Only the standard library is used.
"""

import json
import os
import queue
import signal
import sys
import threading
import traceback

__all__ = ["task", "run", "describe", "RetryableError", "Cancelled", "current_request", "cancelled"]

PROTOCOL = 1
EX_TEMPFAIL = 75
EX_USAGE = 64

# JSON-RPC error codes used by the protocol.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
TASK_FAILED = -32000
CANCELLED = -32800


class RetryableError(Exception):
    """Raise this (or a subclass) from a task to ask the worker to retry it."""

    retryable = True


class Cancelled(BaseException):
    """Raised inside a running task when the worker cancels the call (persistent mode).

    A BaseException, like KeyboardInterrupt, so that `except Exception` in task code does
    not swallow it.
    """


class _BadRequest(Exception):
    """A request the helper cannot dispatch; `code` is the JSON-RPC error code."""

    def __init__(self, code, error_type, message):
        super().__init__(message)
        self.code = code
        self.error_type = error_type


# The policy keys a plugin may suggest for its tasks (tasks.yaml's task keys, except how
# the plugin is run: builtin, plugin, env, set_env, cwd are the operator's call).
POLICY_KEYS = frozenset((
    "queue", "mode", "time_limit", "soft_time_limit", "ignore_result", "track_started",
    "retries", "retry_backoff", "retry_backoff_max", "rate_limit", "burst",
    "max_concurrency", "unique", "grace_period", "max_output_bytes", "processes",
    "max_inflight", "max_calls", "max_rss_mb", "handshake_timeout"))
SCHEMA_KEYS = frozenset(("doc", "params", "varargs", "varkwargs", "returns"))

_registry = {}   # task name -> function
_functions = []  # distinct registered functions, in registration order
_options = {}    # task name -> the keyword options given to task() for it
_local = threading.local()


def task(*names, **options):
    """Register a function as the handler of one or more task names.

    `@task` and `@task()` use the function's own name; `@task("a.b", "c.d")` serves both.
    Keyword options are what the plugin suggests for these tasks in its description:
    policy (queue="plugins", time_limit=30, mode="persistent", ...; see POLICY_KEYS) and
    doc, params, varargs, varkwargs, returns (see the module's docstring).
    """
    if len(names) == 1 and callable(names[0]) and not options:
        return _register(names[0], (names[0].__name__,), {})
    for name in names:
        if not isinstance(name, str) or not name:
            raise TypeError("task names must be non-empty strings, got %r" % (name,))
    unknown = sorted(set(options) - POLICY_KEYS - SCHEMA_KEYS)
    if unknown:
        raise TypeError("task(): unknown option%s %s (known: %s)"
                        % ("s" if len(unknown) > 1 else "", ", ".join(unknown),
                           ", ".join(sorted(POLICY_KEYS | SCHEMA_KEYS))))
    if "params" in options:
        options["params"] = _explicit_params(options["params"])
    try:
        json.dumps(options, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError("task(): the options must be JSON values: %s" % exc) from None

    def decorate(func):
        return _register(func, names or (func.__name__,), options)

    return decorate


def _explicit_params(params):
    if params is None or isinstance(params, dict):
        return params
    if isinstance(params, (list, tuple)) and all(isinstance(p, str) and p for p in params):
        return {p: {} for p in params}   # names only: any value
    raise TypeError("task(params=...) must be a dict (name -> schema or type name), a list of "
                    "parameter names, or None; got %r" % (params,))


def _register(func, names, options):
    for name in names:
        other = _registry.get(name)
        if other is not None and other is not func:
            raise ValueError("task %r is already served by %s" % (name, other.__name__))
        _registry[name] = func
        _options[name] = options
    if func not in _functions:
        _functions.append(func)
    return func


# --------------------------------------------------------------------------- describe

def describe(name=None):
    """The plugin's description (the answer to `describe`), as a dict."""
    schemas = {}
    tasks = {}
    for task_name in _registry:
        func = _registry[task_name]
        options = _options.get(task_name, {})
        if func not in schemas:
            schemas[func] = _function_schema(func)
        entry = dict(schemas[func])
        if "params" in options:
            for key in ("params", "varargs", "varkwargs"):
                entry.pop(key, None)
        for key, value in options.items():
            if value is None and key in ("params", "doc", "returns", "varargs", "varkwargs"):
                entry.pop(key, None)
            else:
                entry[key] = value
        tasks[task_name] = entry
    return {"protocol": PROTOCOL, "name": name or _plugin_name(), "tasks": tasks}


def _function_schema(func):
    import inspect   # here, not at the top: one-shot calls need not pay for it
    entry = {}
    doc = inspect.getdoc(func)
    if doc:
        paragraph = doc.strip().split("\n\n", 1)[0]
        entry["doc"] = " ".join(line.strip() for line in paragraph.splitlines())
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return entry                      # a builtin without a signature: no schema
    hints = _type_hints(func)
    params = {}
    varargs = varkwargs = None
    keyword_only = False
    for p in signature.parameters.values():
        annotation = hints.get(p.name, p.annotation)
        schema = {} if annotation is p.empty else _schema(annotation)
        if p.kind is p.VAR_POSITIONAL:
            varargs = schema or True
            continue
        if p.kind is p.VAR_KEYWORD:
            varkwargs = schema or True
            continue
        if p.kind is p.KEYWORD_ONLY:
            keyword_only = True
        if p.default is not p.empty:
            schema = dict(schema)
            if p.default is None and "type" in schema:
                types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
                if "null" not in types:
                    schema["type"] = types + ["null"]
            default = getattr(p.default, "value", p.default) if _is_enum(p.default) else p.default
            if _is_json(default):
                schema["default"] = default
            else:                          # still optional; its value cannot be written
                schema["default"] = None
                text = repr(default)
                if " at 0x" in text:       # no address: the description stays the same run to run
                    text = "an instance of %s" % type(default).__name__
                schema["description"] = "default: %s (not JSON)" % text
        params[p.name] = schema
    if keyword_only and varargs is not None:
        # The schema's binding puts extra positional arguments into the parameters in
        # order before *args; Python never does for keyword-only ones. Leave them out
        # (as extra keyword arguments) rather than refuse calls Python would take.
        for p in signature.parameters.values():
            if p.kind is p.KEYWORD_ONLY:
                params.pop(p.name, None)
        varkwargs = True
    entry["params"] = params
    if varargs is not None:
        entry["varargs"] = varargs
    if varkwargs is not None:
        entry["varkwargs"] = varkwargs
    returns = hints.get("return", signature.return_annotation)
    if returns is not signature.empty:
        schema = _schema(returns)
        if schema:
            entry["returns"] = schema
    return entry


def _type_hints(func):
    import typing
    try:
        return typing.get_type_hints(func, include_extras=True)
    except Exception:  # a name the annotation cannot resolve: use what is there
        return dict(getattr(func, "__annotations__", None) or {})


def _is_enum(value):
    enum = sys.modules.get("enum")
    return enum is not None and isinstance(value, enum.Enum)


def _is_json(value):
    try:
        json.dumps(value, allow_nan=False)
        return True
    except (TypeError, ValueError, RecursionError):
        return False


_SIMPLE = {"str": "string", "int": "integer", "float": "number", "bool": "boolean",
           "list": "array", "tuple": "array", "dict": "object", "None": "null",
           "NoneType": "null", "bytes": None, "complex": None}


def _schema(annotation, depth=0):
    """The JSON Schema of a type annotation ({} = anything)."""
    import typing
    if depth > 20:
        return {}
    if annotation is None or annotation is type(None):
        return {"type": "null"}
    if isinstance(annotation, str):     # an annotation that could not be resolved
        simple = _SIMPLE.get(annotation.strip())
        return {"type": simple} if simple else {}
    if annotation is typing.Any:
        return {}
    if typing.get_origin(annotation) is typing.Annotated:
        # Annotated[int, {"minimum": 0}]: the dicts among the metadata refine the schema.
        schema = dict(_schema(annotation.__origin__, depth + 1))
        for extra in annotation.__metadata__:
            if isinstance(extra, dict):
                schema.update(extra)
        return schema
    for kind, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string")):
        if annotation is kind:
            return {"type": name}
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        values = [a for a in args if _is_json(a)]
        schema = {"enum": values}
        kinds = {_json_type(v) for v in values}
        if len(kinds) == 1 and None not in kinds:
            schema["type"] = kinds.pop()
        return schema
    if origin is typing.Union or _is_union_type(annotation):
        parts = [_schema(a, depth + 1) for a in args]
        if any(not p for p in parts):
            return {}
        if all(set(p) == {"type"} for p in parts):
            types = []
            for p in parts:
                for t in (p["type"] if isinstance(p["type"], list) else [p["type"]]):
                    if t not in types:
                        types.append(t)
            return {"type": types[0] if len(types) == 1 else types}
        if len(parts) == 2 and {"type": "null"} in parts:     # Optional[something richer]
            other = dict(parts[0] if parts[1] == {"type": "null"} else parts[1])
            if "type" in other:
                t = other["type"] if isinstance(other["type"], list) else [other["type"]]
                other["type"] = t + ["null"] if "null" not in t else t
                if "enum" in other:
                    other["enum"] = list(other["enum"]) + [None]
                return other
        # The subset has no anyOf: keep the types, drop the finer constraints.
        types = []
        for p in parts:
            t = p.get("type") or (_json_type(p["enum"][0]) if p.get("enum") else None)
            if t is None:
                return {}
            for x in (t if isinstance(t, list) else [t]):
                if x not in types:
                    types.append(x)
        return {"type": types[0] if len(types) == 1 else types}
    if annotation in (list, tuple, set, frozenset) or origin in (list, tuple, set, frozenset) \
            or _is_abc(origin, ("Sequence", "MutableSequence", "Iterable", "Collection")):
        schema = {"type": "array"}
        if origin is tuple and args and args[-1] is not Ellipsis:
            schema["minItems"] = schema["maxItems"] = len(args)
            if len(set(map(repr, args))) == 1:
                item = _schema(args[0], depth + 1)
                if item:
                    schema["items"] = item
        elif args:
            item = _schema(args[0], depth + 1)
            if item:
                schema["items"] = item
        return schema
    if annotation is dict or origin is dict or _is_abc(origin, ("Mapping", "MutableMapping")):
        schema = {"type": "object"}
        if len(args) == 2:
            value = _schema(args[1], depth + 1)
            if value:
                schema["additionalProperties"] = value
        return schema
    if isinstance(annotation, type):
        import enum
        if issubclass(annotation, enum.Enum):
            values = [m.value for m in annotation if _is_json(m.value)]
            schema = {"enum": values}
            kinds = {_json_type(v) for v in values}
            if len(kinds) == 1 and None not in kinds:
                schema["type"] = kinds.pop()
            return schema
        if typing.is_typeddict(annotation):
            hints = _type_hints(annotation)
            required = sorted(getattr(annotation, "__required_keys__", hints))
            return {"type": "object",
                    "properties": {k: _schema(v, depth + 1) for k, v in hints.items()},
                    "required": [k for k in hints if k in required],
                    "additionalProperties": False}
        for kind, name in ((bool, "boolean"), (int, "integer"), (float, "number"),
                           (str, "string"), (list, "array"), (tuple, "array"), (dict, "object")):
            if issubclass(annotation, kind):
                return {"type": name}
    return {}                             # a class JSON cannot carry: anything


def _is_union_type(annotation):
    union_type = getattr(__import__("types"), "UnionType", None)   # int | None (3.10+)
    return union_type is not None and isinstance(annotation, union_type)


def _is_abc(origin, names):
    return origin is not None and getattr(origin, "__module__", "") == "collections.abc" \
        and getattr(origin, "__name__", "") in names


def _json_type(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return None


def current_request():
    """The request being handled by the calling thread (a dict), or None."""
    call = getattr(_local, "call", None)
    return call.request if call is not None else None


def cancelled():
    """True once the worker has cancelled the calling thread's task (persistent mode).

    With one thread (threads=1) a cancel also interrupts the task by raising Cancelled in it; with
    more concurrent calls, long tasks should poll this.
    """
    call = getattr(_local, "call", None)
    return call is not None and call.cancel_reason is not None


# --------------------------------------------------------------------------- helpers

def _lift_int_limit():
    if hasattr(sys, "set_int_max_str_digits"):
        sys.set_int_max_str_digits(0)


def _claim_stdio():
    """Keep stdin and stdout for the protocol, out of the tasks' reach.

    Returns (protocol input, binary; protocol output, text). Afterwards file descriptor 1
    and sys.stdout lead to stderr, and descriptor 0 and sys.stdin read /dev/null, so
    neither task code nor the processes it starts can corrupt or consume the protocol.
    """
    sys.stdout.flush()
    out_fd = os.dup(1)  # os.dup gives non-inheritable copies: child processes never see them
    in_fd = os.dup(0)
    os.dup2(2, 1)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_fd, 0)
    os.close(null_fd)
    sys.stdout = sys.stderr
    sys.stdin = open(os.devnull, "r")
    return (os.fdopen(in_fd, "rb"),
            os.fdopen(out_fd, "w", encoding="utf-8", newline="\n"))


def _json_default(value):
    if hasattr(value, "tolist"):          # numpy arrays
        return value.tolist()
    if hasattr(value, "item"):            # numpy scalars
        return value.item()
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError("Object of type %s is not JSON serializable" % type(value).__name__)


def _dumps(obj):
    # ensure_ascii keeps every message on one line and valid UTF-8; NaN/Infinity allowed.
    return json.dumps(obj, default=_json_default)


def _error_info(exc, tb=True):
    message = str(exc) or type(exc).__name__
    return {
        "type": type(exc).__name__,
        # The module a Python client finds the class in (Celery's exc_module): "builtins"
        # for ValueError and the like, "numpy.linalg" for LinAlgError; none for a class of
        # the plugin's own script, which no client can import.
        "module": None if type(exc).__module__ == "__main__" else type(exc).__module__,
        "message": message,
        "retryable": getattr(exc, "retryable", False) is True,
        "traceback": traceback.format_exc() if tb else None,
    }


def _resolve(request):
    """Check a request and find its function: returns (func, args, kwargs)."""
    if not isinstance(request, dict):
        raise _BadRequest(INVALID_PARAMS, "InvalidRequest", "the request must be a JSON object")
    name = request.get("task")
    if not isinstance(name, str):
        raise _BadRequest(INVALID_PARAMS, "InvalidRequest", 'the request has no "task" string')
    args = request.get("args")
    args = [] if args is None else args
    kwargs = request.get("kwargs")
    kwargs = {} if kwargs is None else kwargs
    if not isinstance(args, list):
        raise _BadRequest(INVALID_PARAMS, "InvalidRequest", '"args" must be an array')
    if not isinstance(kwargs, dict):
        raise _BadRequest(INVALID_PARAMS, "InvalidRequest", '"kwargs" must be an object')
    func = _registry.get(name)
    if func is None and len(_functions) == 1:
        func = _functions[0]
    if func is None:
        raise _BadRequest(METHOD_NOT_FOUND, "NotRegistered",
                          "task %r is not served by %s (serves: %s)"
                          % (name, _plugin_name(), ", ".join(sorted(_registry)) or "nothing"))
    return func, args, kwargs


def _plugin_name():
    return os.path.splitext(os.path.basename(sys.argv[0] or "plugin"))[0] or "plugin"


def _log(message):
    try:
        sys.stderr.write("celerity_plugin: %s\n" % message)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


# --------------------------------------------------------------------------- one-shot

def _oneshot(proto_in, out):
    def reply(obj):
        out.write(_dumps(obj))
        out.write("\n")
        out.flush()

    def reply_error(error_type, message):
        reply({"error": {"type": error_type, "message": message,
                         "retryable": False, "traceback": None}})

    raw = proto_in.read()
    try:
        request = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        reply_error("InvalidRequest", "stdin is not a JSON document: %s" % exc)
        return 0
    try:
        func, args, kwargs = _resolve(request)
    except _BadRequest as exc:
        reply_error(exc.error_type, str(exc))
        return 0

    _local.call = _Call(request.get("id"), request)
    try:
        result = func(*args, **kwargs)
    except Exception as exc:  # SystemExit/KeyboardInterrupt end the process as they would
        info = _error_info(exc)
        reply({"error": info})
        return EX_TEMPFAIL if info["retryable"] else 0
    finally:
        _local.call = None
    try:
        text = _dumps({"result": result})
    except (TypeError, ValueError, RecursionError) as exc:
        reply({"error": {"type": type(exc).__name__,
                         "message": "the task's result is not JSON: %s" % exc,
                         "retryable": False, "traceback": None}})
        return 0
    out.write(text)
    out.write("\n")
    out.flush()
    return 0


# --------------------------------------------------------------------------- persistent

class _Call:
    def __init__(self, rpc_id, request):
        self.rpc_id = rpc_id
        self.request = request
        self.state = "queued"        # queued -> running -> done
        self.cancel_reason = None
        self.interruptible = False   # main thread only: the task code is on the stack
        self.func = None
        self.args = ()
        self.kwargs = {}


_STOP = object()


class _Server:
    def __init__(self, proto_in, out, name, max_inflight, threads):
        self.proto_in = proto_in
        self.out = out
        self.name = name
        self.max_inflight = max_inflight
        self.threads = threads
        self.write_lock = threading.Lock()
        self.lock = threading.Condition()
        self.calls = {}              # key(rpc id) -> _Call
        self.pending = queue.SimpleQueue()
        self.accepting = True
        self.main_thread = threading.main_thread()
        self.main_call = None        # the call the main thread is running
        self.can_signal = False
        self.shutdown_threads = []

    # ---- output

    def send(self, obj):
        line = _dumps(obj) + "\n"
        with self.write_lock:
            try:
                self.out.write(line)
                self.out.flush()
            except (BrokenPipeError, ValueError):
                os._exit(0)  # the worker is gone; nobody is left to answer

    def send_result(self, rpc_id, result):
        try:
            line = _dumps({"jsonrpc": "2.0", "id": rpc_id, "result": result})
        except (TypeError, ValueError, RecursionError) as exc:
            self.send_error(rpc_id, TASK_FAILED, "the task's result is not JSON: %s" % exc,
                            {"type": type(exc).__name__, "retryable": False, "traceback": None})
            return
        with self.write_lock:
            try:
                self.out.write(line + "\n")
                self.out.flush()
            except (BrokenPipeError, ValueError):
                os._exit(0)

    def send_error(self, rpc_id, code, message, data=None):
        error = {"code": code, "message": message}
        if data is not None:
            error["data"] = data
        self.send({"jsonrpc": "2.0", "id": rpc_id, "error": error})

    # ---- input (reader thread)

    def read_loop(self):
        stdin = self.proto_in
        while True:
            line = stdin.readline()
            if not line:
                break
            if not line.strip():
                continue
            try:
                message = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                self.send_error(None, PARSE_ERROR, "parse error: %s" % exc)
                continue
            try:
                if self.handle(message) is _STOP:
                    return
            except Exception:  # a bug here must not kill the reader silently
                _log("internal error:\n" + traceback.format_exc())
        self.pending.put(_STOP)  # EOF: answer what was received, then exit

    def handle(self, message):
        if not isinstance(message, dict) or not isinstance(message.get("method"), str):
            rpc_id = message.get("id") if isinstance(message, dict) else None
            self.send_error(rpc_id, INVALID_REQUEST, "not a JSON-RPC 2.0 request")
            return None
        method = message["method"]
        has_id = "id" in message
        rpc_id = message.get("id")
        params = message.get("params")

        if method == "task/run" and has_id:
            self.submit(rpc_id, params)
        elif method == "$/cancel":
            if isinstance(params, dict) and "id" in params:
                self.cancel(params["id"], str(params.get("reason") or "cancelled"))
        elif method == "initialize" and has_id:
            self.initialize(rpc_id, params)
        elif method == "describe" and has_id:
            self.describe(rpc_id)
        elif method == "shutdown" and has_id:
            self.accepting = False
            thread = threading.Thread(target=self.finish_shutdown, args=(rpc_id,), daemon=True)
            self.shutdown_threads.append(thread)
            thread.start()
        elif method == "exit":
            # After a shutdown request the calls finish and get answered first (normally
            # there are none left by now); a bare exit cancels whatever is in flight.
            self.accepting = False
            if not self.shutdown_threads:
                self.cancel_all("shutdown")
            self.pending.put(_STOP)
            return _STOP
        elif has_id:
            self.send_error(rpc_id, METHOD_NOT_FOUND, "unknown method %r" % method)
        # other notifications ($/…) are ignored, as JSON-RPC allows
        return None

    def initialize(self, rpc_id, params):
        if isinstance(params, dict):
            if params.get("protocol", PROTOCOL) != PROTOCOL:
                _log("worker speaks protocol %r, this helper speaks %d"
                     % (params.get("protocol"), PROTOCOL))
            wanted = params.get("tasks")
            if isinstance(wanted, list) and len(_functions) != 1:
                missing = [t for t in wanted if t not in _registry]
                if missing:
                    _log("asked for tasks this plugin does not serve: %s" % ", ".join(map(str, missing)))
        self.send({"jsonrpc": "2.0", "id": rpc_id,
                   "result": {"protocol": PROTOCOL, "name": self.name,
                              "max_inflight": self.max_inflight}})

    def describe(self, rpc_id):
        try:
            document = describe(self.name)
        except Exception as exc:   # a bug in an annotation's translation: say so, stay up
            _log("describe failed:\n" + traceback.format_exc())
            self.send_error(rpc_id, TASK_FAILED, "describe failed: %s" % exc,
                            {"type": type(exc).__name__, "retryable": False, "traceback": None})
            return
        self.send({"jsonrpc": "2.0", "id": rpc_id, "result": document})

    def submit(self, rpc_id, params):
        if not self.accepting:
            self.send_error(rpc_id, TASK_FAILED, "the plugin is shutting down",
                            {"type": "ShuttingDown", "retryable": True, "traceback": None})
            return
        try:
            func, args, kwargs = _resolve(params)
        except _BadRequest as exc:
            self.send_error(rpc_id, exc.code, str(exc),
                            {"type": exc.error_type, "retryable": False, "traceback": None})
            return
        key = _key(rpc_id)
        call = _Call(rpc_id, params)
        call.func, call.args, call.kwargs = func, args, kwargs
        with self.lock:
            if key in self.calls:
                _log("ignoring a second task/run with id %s while the first is in flight" % json.dumps(rpc_id))
                return
            self.calls[key] = call
        self.pending.put(call)

    def cancel(self, rpc_id, reason):
        with self.lock:
            call = self.calls.get(_key(rpc_id))
            if call is None or call.cancel_reason is not None:
                return
            call.cancel_reason = reason
            if call.state == "queued":      # never started: answer now, executor skips it
                call.state = "done"
                answer_now = True
            else:
                answer_now = False
                interrupt = call is self.main_call and self.can_signal
        if answer_now:
            try:
                self.send_cancelled(call)
            finally:
                # Out of `calls` once answered: a shutdown is answered after it.
                with self.lock:
                    if self.calls.get(_key(rpc_id)) is call:
                        del self.calls[_key(rpc_id)]
                    self.lock.notify_all()
        elif interrupt:
            # The handler runs in the main thread and raises Cancelled only while the
            # task's own code is running (see _execute).
            signal.pthread_kill(self.main_thread.ident, signal.SIGUSR1)

    def cancel_all(self, reason):
        with self.lock:
            ids = [call.rpc_id for call in self.calls.values()]
        for rpc_id in ids:
            self.cancel(rpc_id, reason)

    def send_cancelled(self, call):
        self.send_error(call.rpc_id, CANCELLED, "cancelled (%s)" % call.cancel_reason,
                        {"type": "Cancelled", "reason": call.cancel_reason,
                         "retryable": False, "traceback": None})

    def finish_shutdown(self, rpc_id):
        with self.lock:
            while self.calls:
                self.lock.wait()
        self.send({"jsonrpc": "2.0", "id": rpc_id, "result": {}})

    # ---- execution

    def on_cancel_signal(self, signum, frame):
        call = self.main_call
        if call is not None and call.interruptible and call.cancel_reason is not None:
            call.interruptible = False
            raise Cancelled(call.cancel_reason)

    def executor_loop(self):
        is_main = threading.current_thread() is self.main_thread
        while True:
            call = self.pending.get()
            if call is _STOP:
                self.pending.put(_STOP)  # let the other executors see it too
                return
            with self.lock:
                if call.state != "queued":
                    continue
                call.state = "running"
                if is_main:
                    self.main_call = call
            try:
                self.execute(call, is_main)
            finally:
                with self.lock:
                    if is_main:
                        self.main_call = None
                    call.state = "done"
                    self.calls.pop(_key(call.rpc_id), None)
                    self.lock.notify_all()

    def execute(self, call, is_main):
        _local.call = call
        try:
            try:
                call.interruptible = is_main
                if call.cancel_reason is not None:   # cancelled just as it started
                    raise Cancelled(call.cancel_reason)
                result = call.func(*call.args, **call.kwargs)
            finally:
                call.interruptible = False
        except Cancelled:
            self.send_cancelled(call)
            return
        except Exception as exc:
            info = _error_info(exc)
            self.send_error(call.rpc_id, TASK_FAILED, info["message"],
                            {"type": info["type"], "retryable": info["retryable"],
                             "traceback": info["traceback"]})
            return
        except BaseException as exc:   # sys.exit() or Ctrl-C inside a task: end the process
            if isinstance(exc, SystemExit):
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            else:
                code = 130
            _log("task %s ended the process (%s); exiting with status %d"
                 % (call.request.get("task"), type(exc).__name__, code))
            # os._exit: the reader thread may be blocked inside stdin, which would make a
            # normal interpreter shutdown abort.
            os._exit(code)
        finally:
            _local.call = None
        if call.cancel_reason is not None:   # finished after the worker gave up on it
            self.send_cancelled(call)
        else:
            self.send_result(call.rpc_id, result)

    def serve(self):
        if hasattr(signal, "pthread_kill") and hasattr(signal, "SIGUSR1") \
                and signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGUSR1, self.on_cancel_signal)
            self.can_signal = True
        threading.Thread(target=self.read_loop, name="celerity-reader", daemon=True).start()
        others = [threading.Thread(target=self.executor_loop, name="celerity-exec-%d" % i,
                                   daemon=True)
                  for i in range(1, self.threads)]
        for thread in others:
            thread.start()
        self.executor_loop()
        for thread in others + self.shutdown_threads:
            thread.join()
        return 0


def _key(rpc_id):
    # Ids are strings (Celerity sends the task id) or numbers: cheap keys that keep "1" and 1 apart.
    kind = type(rpc_id)
    if kind is str or kind is int:
        return (kind, rpc_id)
    return (None, json.dumps(rpc_id, sort_keys=True))


# --------------------------------------------------------------------------- entry point

def run(name=None, max_inflight=1, threads=None):
    """Serve the registered tasks in the mode CELERITY_MODE names, then exit the process.

    name: what the initialize answer calls this plugin (default: the script's file name).
    max_inflight: persistent mode only; how many calls the worker may have in flight in
        this process at once.
    threads: persistent mode only; how many of those run at the same time, each in a
        thread (default: max_inflight). With fewer threads than max_inflight the other
        calls wait their turn inside the process, in order: the worker sends the next
        call while one runs, so a process serving short tasks never sits idle waiting for
        a round trip through the worker (pipelining). Their time limit counts from when
        the worker sent them, so keep this for short tasks.
    """
    _lift_int_limit()
    if not _functions:
        _log("no task registered; decorate a function with @task")
        sys.exit(EX_USAGE)
    mode = os.environ.get("CELERITY_MODE") or "oneshot"
    if mode not in ("oneshot", "persistent", "describe"):
        _log("unknown CELERITY_MODE %r (expected oneshot, persistent or describe)" % mode)
        sys.exit(EX_USAGE)
    proto_in, out = _claim_stdio()
    if mode == "describe":
        proto_in.read()   # {"method": "describe", "protocol": 1}: nothing in it to act on
        out.write(json.dumps(describe(name)))
        out.write("\n")
        out.flush()
        code = 0
    elif mode == "oneshot":
        code = _oneshot(proto_in, out)
    else:
        inflight = max(1, int(max_inflight))
        workers = inflight if threads is None else min(max(1, int(threads)), inflight)
        code = _Server(proto_in, out, name or _plugin_name(), inflight, workers).serve()
    sys.stderr.flush()
    sys.exit(code)
