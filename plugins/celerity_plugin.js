// celerity-check: none (the helper library, required by the Node plugins)
// Write a Celerity plugin in Node with one call per task and one call to run().
//
//     #!/usr/bin/env node
//     const { task, run, RetryableError } = require('./celerity_plugin');
//     task('plugins.js_mul', (x, y) => x * y);
//     run();
//
// CommonJS, Node's standard library only (Node 18 or newer; tested with Node 20). run() speaks Celerity
// plugin protocol 1 (docs/plugins.md) in the mode the worker asks for through
// CELERITY_MODE:
//
// * "oneshot" or unset: read one JSON request from stdin until EOF, write one response
//   ({"result": ...} or {"error": {"type", "message", "retryable", "traceback"}}) to
//   stdout, exit 0. A task that throws a RetryableError (or any error whose `retryable`
//   property is true) also makes the process exit 75 (EX_TEMPFAIL): the worker's cue
//   that a retry may help. The error is repeated on stderr then, because for exit 75 the
//   worker's failure message is made of the last lines of stderr.
// * "persistent": newline-delimited JSON-RPC 2.0 on stdin/stdout: initialize, task/run,
//   $/cancel, describe, shutdown, exit. EOF on stdin means exit once the calls already
//   received are answered.
// * "describe": write the plugin's description (its tasks, the policy each suggests,
//   their argument schemas) as one JSON document to stdout and exit 0. Discovery
//   (`plugin_dirs` in tasks.yaml) asks every plugin this way.
//
// Registering tasks:
//   task('a.b', fn)                 fn serves the task named a.b
//   task('a.b', 'c.d', fn)          ...and c.d (an array of names works too)
//   task(fn)                        the task name is fn.name
//   task('a.b', fn, { params: ['x', 'y'] })
//                                   kwargs are matched to these parameter names, so
//                                   {"args": [2], "kwargs": {"y": 3}} calls fn(2, 3);
//                                   the parameters take any value
//   task('a.b', fn, { params: { x: 'integer', y: { type: 'integer', default: 1 } } })
//                                   the same, with an argument schema: name -> a type name
//                                   (string, integer, number, boolean, array, object, null)
//                                   or a JSON Schema (docs/plugins.md has the subset); a
//                                   parameter with a default is optional. The worker and
//                                   the clients check calls against it before they run.
//   task('a.b', fn, { params: {...}, queue: 'plugins', time_limit: 30, mode: 'persistent',
//                     doc: 'Adds two numbers.', returns: 'number' })
//                                   the policy the plugin suggests for the task (tasks.yaml
//                                   wins key by key; POLICY_KEYS lists them) and its doc
//   varargs: true (or a schema)     extra positional arguments allowed (they are passed on
//                                   after the named ones)
//   varkwargs: true (or a schema)   keyword arguments not in params allowed: fn gets them as
//                                   one more, last argument (an object)
// These options make up the answer to `describe`. Without `params` a task has no schema
// (any arguments are accepted).
// With one function registered it serves every task name; otherwise the request's "task"
// picks the function. Without `params`, fn gets the request's args as its arguments and,
// when kwargs is not empty, the kwargs object as one more, last argument.
//
// Functions may be async (return a Promise). In persistent mode, run({ maxInflight: N })
// lets N calls be in flight at once; they interleave wherever they await. Inside a task,
// `this.signal` (for `function` tasks) or currentSignal() (anywhere, also in arrow
// functions and after an await) is an AbortSignal that fires when the worker cancels the
// call; `this.request` / currentRequest() is the whole request (id, attempt, deadline,
// meta). A cancelled call is answered at once with the "cancelled" error and its slot
// is free again; whatever the function returns afterwards is dropped. Cancellation is
// cooperative: pass the signal on (fetch, timers/promises, child_process all take one)
// or check it between steps. Synchronous code never yields: while it runs no message is
// read, $/cancel included, and no other call progresses; if it outlasts the time limit
// plus the grace period the worker kills the process.
//
// A task whose promise can never settle (nothing left pending that could settle it) is
// answered with an "UnsettledPromise" error instead of leaving the worker waiting. An
// unhandled promise rejection is logged on stderr and does not end the process.
//
// Results: any value JSON.stringify accepts (undefined becomes null; NaN and Infinity
// become null, as JSON.stringify writes them). A BigInt anywhere in the result is
// written as a JSON number with all its digits, e.g. 2n ** 200n, so exact big integers
// can go out.
//
// Big integers coming in: JSON numbers are parsed into JS doubles, so integers beyond
// 2^53 (9007199254740992) in args or kwargs arrive ROUNDED; nothing warns about it.
// A task that must be exact should refuse such values, e.g.
// `if (Number.isInteger(v) && !Number.isSafeInteger(v)) throw new RangeError(...)`
// (plugins/js_add.js does), or take big numbers as strings and use BigInt.
//
// stdout belongs to the protocol: once run() is called, console.log/info/debug and
// anything written through process.stdout go to stderr, which the worker logs. Child
// processes are another matter: one started with stdio 'inherit' writes to the real
// stdout and breaks the protocol. Give them stdio: ['ignore', 'pipe', 'inherit'] (and
// read their output) or ['ignore', 2, 2] (their output goes to stderr).
'use strict';

const { AsyncLocalStorage } = require('async_hooks');
const path = require('path');
const { TextDecoder } = require('util');

const PROTOCOL = 1;
const EX_TEMPFAIL = 75;
const EX_USAGE = 64;

// JSON-RPC error codes used by the protocol.
const PARSE_ERROR = -32700;
const INVALID_REQUEST = -32600;
const METHOD_NOT_FOUND = -32601;
const INVALID_PARAMS = -32602;
const TASK_FAILED = -32000;
const CANCELLED = -32800;

/** Throw this (or a subclass) from a task to ask the worker to retry it. */
class RetryableError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = new.target.name;
  }
}
RetryableError.prototype.retryable = true; // a subclass or an instance may set it false

/** A request the helper cannot dispatch; `code` is the JSON-RPC error code. */
class BadRequest extends Error {
  constructor(code, type, message) {
    super(message);
    this.code = code;
    this.type = type;
  }
}

const registry = new Map(); // task name -> entry
const entries = [];         // distinct registered functions, in registration order
const describedAs = new Map(); // task name -> the options given to task() for it
const callStorage = new AsyncLocalStorage();

// The policy keys a plugin may suggest (tasks.yaml's task keys, except how the plugin is
// run: builtin, plugin, env, set_env, cwd are the operator's call).
const POLICY_KEYS = Object.freeze([
  'queue', 'mode', 'time_limit', 'soft_time_limit', 'ignore_result', 'track_started',
  'retries', 'retry_backoff', 'retry_backoff_max', 'rate_limit', 'burst', 'max_concurrency',
  'unique', 'grace_period', 'max_output_bytes', 'processes', 'max_inflight', 'max_calls',
  'max_rss_mb', 'handshake_timeout',
]);
const SCHEMA_KEYS = Object.freeze(['doc', 'params', 'varargs', 'varkwargs', 'returns']);
const TYPE_NAMES = Object.freeze(['string', 'integer', 'number', 'boolean', 'array', 'object', 'null']);

/** params as given to task(): null, or { names, schema } with schema name -> schema. */
function normalizeParams(params) {
  if (params === undefined || params === null) return null;
  if (Array.isArray(params)) {
    if (!params.every((p) => typeof p === 'string' && p)) {
      throw new TypeError('options.params: an array must hold parameter names (non-empty strings)');
    }
    if (new Set(params).size !== params.length) throw new TypeError('options.params: a parameter name is repeated');
    const schema = {};
    for (const p of params) schema[p] = {};
    return { names: [...params], schema };
  }
  if (!isPlainObject(params)) {
    throw new TypeError('options.params must be an array of parameter names or an object (name -> type name or schema)');
  }
  const schema = {};
  for (const [name, value] of Object.entries(params)) {
    schema[name] = schemaOf(value, `options.params.${name}`);
  }
  return { names: Object.keys(params), schema };
}

/** A type name ('integer') or a schema object, checked for its shape only. */
function schemaOf(value, where) {
  if (typeof value === 'string') {
    if (!TYPE_NAMES.includes(value)) {
      throw new TypeError(`${where}: unknown type name ${JSON.stringify(value)} (one of ${TYPE_NAMES.join(', ')}, or a schema object)`);
    }
    return { type: value };
  }
  if (value === true) return {};
  if (!isPlainObject(value)) throw new TypeError(`${where}: expected a type name or a schema object, got ${JSON.stringify(value)}`);
  return value;
}

/** The plugin's description: the answer to `describe`. */
function describe(name) {
  const tasks = {};
  for (const [taskName, entry] of registry) {
    const options = describedAs.get(taskName) || {};
    const out = {};
    if (typeof options.doc === 'string') out.doc = options.doc;
    if (entry.params) out.params = entry.params.schema;
    for (const key of ['varargs', 'varkwargs']) {
      if (options[key] !== undefined && options[key] !== false && options[key] !== null) {
        out[key] = options[key] === true ? true : schemaOf(options[key], `options.${key}`);
      }
    }
    if (options.returns !== undefined && options.returns !== null) out.returns = schemaOf(options.returns, 'options.returns');
    for (const key of POLICY_KEYS) {
      if (options[key] !== undefined) out[key] = options[key];
    }
    tasks[taskName] = out;
  }
  return { protocol: PROTOCOL, name: name || pluginName(), tasks };
}

/**
 * Register a function as the handler of one or more task names:
 * task('a.b', fn), task('a.b', 'c.d', fn), task(['a.b', 'c.d'], fn), task(fn),
 * each optionally followed by an options object { params: ['x', 'y'] }.
 * Returns fn.
 */
function task(...items) {
  let options = {};
  const last = items[items.length - 1];
  if (items.length >= 2 && typeof last === 'object' && last !== null && !Array.isArray(last)) {
    options = items.pop();
  }
  const fn = items.pop();
  if (typeof fn !== 'function') {
    throw new TypeError('task(...names, fn[, options]): the last argument must be the function');
  }
  let names = items.flat();
  if (names.length === 0) {
    if (!fn.name) throw new TypeError('task(fn) needs a named function, or give the task name: task("a.b", fn)');
    names = [fn.name];
  }
  for (const name of names) {
    if (typeof name !== 'string' || name === '') {
      throw new TypeError(`task names must be non-empty strings, got ${JSON.stringify(name)}`);
    }
  }
  const unknown = Object.keys(options).filter((k) => !POLICY_KEYS.includes(k) && !SCHEMA_KEYS.includes(k));
  if (unknown.length) {
    throw new TypeError(`task(): unknown option${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')} (known: ${[...POLICY_KEYS, ...SCHEMA_KEYS].sort().join(', ')})`);
  }
  if (options.doc !== undefined && options.doc !== null && typeof options.doc !== 'string') throw new TypeError('options.doc must be a string');
  const params = normalizeParams(options.params);
  for (const key of ['varargs', 'varkwargs', 'returns']) {
    if (options[key] !== undefined && options[key] !== null && options[key] !== false) schemaOf(options[key], `options.${key}`);
  }
  try {
    JSON.stringify(options);
  } catch (e) {
    throw new TypeError(`task(): the options must be JSON values: ${e.message}`);
  }
  let entry = entries.find((e) => e.fn === fn);
  if (!entry) {
    entry = { fn, params, varkwargs: Boolean(options.varkwargs) };
    entries.push(entry);
  } else if (params) {
    entry.params = params;
    entry.varkwargs = Boolean(options.varkwargs);
  }
  for (const name of names) {
    const other = registry.get(name);
    if (other && other !== entry) {
      throw new Error(`task ${JSON.stringify(name)} is already served by ${other.fn.name || 'another function'}`);
    }
    registry.set(name, entry);
    describedAs.set(name, options);
  }
  return fn;
}

/** The request being handled (an object), or null outside a task. */
function currentRequest() {
  const call = callStorage.getStore();
  return call ? call.request : null;
}

/** The AbortSignal of the call being handled, or null outside a task. */
function currentSignal() {
  const call = callStorage.getStore();
  return call ? call.controller.signal : null;
}

/** True once the worker has cancelled the call being handled (persistent mode). */
function cancelled() {
  const call = callStorage.getStore();
  return Boolean(call && call.controller.signal.aborted);
}

// ------------------------------------------------------------------------- helpers

function pluginName() {
  const script = process.argv[1] || 'plugin';
  return path.basename(script, path.extname(script)) || 'plugin';
}

function log(message) {
  try {
    process.stderr.write(`celerity_plugin: ${message}\n`);
  } catch (e) {
    // stderr is gone: nothing left to tell
  }
}

function errorType(e) {
  if (e !== null && (typeof e === 'object' || typeof e === 'function')) {
    const ctor = e.constructor && typeof e.constructor.name === 'string' ? e.constructor.name : '';
    // `class MyError extends Error {}` keeps name "Error": report the class instead.
    if (typeof e.name === 'string' && e.name && !(e.name === 'Error' && ctor && ctor !== 'Error')) return e.name;
    if (ctor && ctor !== 'Object') return ctor;
  }
  return 'Error';
}

function errorInfo(e) {
  const type = errorType(e);
  let message;
  if (e instanceof Error || (e !== null && typeof e === 'object' && 'message' in e)) {
    message = String(e.message);
  } else {
    try {
      message = String(e);
    } catch (err) {
      message = '';
    }
  }
  return {
    type,
    message: message || type,
    retryable: Boolean(e !== null && typeof e === 'object' && e.retryable === true),
    traceback: e !== null && typeof e === 'object' && typeof e.stack === 'string' ? e.stack : null,
  };
}

// JSON.stringify cannot write BigInt; this writer can. It mirrors JSON.stringify
// otherwise: toJSON, boxed primitives, undefined/functions/symbols dropped from objects
// and written as null in arrays, non-finite numbers as null, cycles refused.
function stringifyWithBigInt(root) {
  const seen = new Set();
  function write(value, key, inArray) {
    if (value !== null && (typeof value === 'object' || typeof value === 'bigint') && typeof value.toJSON === 'function') {
      value = value.toJSON(key);
    }
    if (value instanceof Number) value = Number(value);
    else if (value instanceof String) value = String(value);
    else if (value instanceof Boolean) value = value.valueOf();
    else if (value instanceof BigInt) value = value.valueOf();
    switch (typeof value) {
      case 'bigint': return value.toString();
      case 'number': return Number.isFinite(value) ? String(value) : 'null';
      case 'string': return JSON.stringify(value);
      case 'boolean': return value ? 'true' : 'false';
      case 'undefined': case 'function': case 'symbol': return inArray ? 'null' : undefined;
      default: break;
    }
    if (value === null) return 'null';
    if (seen.has(value)) throw new TypeError('Converting circular structure to JSON');
    seen.add(value);
    let text;
    if (Array.isArray(value)) {
      const parts = [];
      for (let i = 0; i < value.length; i++) parts.push(write(value[i], String(i), true));
      text = `[${parts.join(',')}]`;
    } else {
      const parts = [];
      for (const k of Object.keys(value)) {
        const v = write(value[k], k, false);
        if (v !== undefined) parts.push(`${JSON.stringify(k)}:${v}`);
      }
      text = `{${parts.join(',')}}`;
    }
    seen.delete(value);
    return text;
  }
  return write(root, '', false);
}

/** The JSON text of a value, BigInts included; throws TypeError when it has none. */
function toJSONText(value) {
  if (value === undefined) return 'null';
  let text;
  try {
    text = JSON.stringify(value);
  } catch (e) {
    if (!(e instanceof TypeError)) throw e;
    text = stringifyWithBigInt(value); // BigInt somewhere (or a cycle, which throws again)
  }
  if (text === undefined) throw new TypeError(`a ${typeof value} cannot be written as JSON`);
  return text;
}

const strictUTF8 = new TextDecoder('utf-8', { fatal: true });

function parseJSON(bytes) {
  return JSON.parse(strictUTF8.decode(bytes));
}

function isPlainObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Check a request and find its function: returns { entry, args, kwargs }. */
function resolve(request) {
  if (!isPlainObject(request)) throw new BadRequest(INVALID_PARAMS, 'InvalidRequest', 'the request must be a JSON object');
  const name = request.task;
  if (typeof name !== 'string') throw new BadRequest(INVALID_PARAMS, 'InvalidRequest', 'the request has no "task" string');
  const args = request.args === undefined || request.args === null ? [] : request.args;
  const kwargs = request.kwargs === undefined || request.kwargs === null ? {} : request.kwargs;
  if (!Array.isArray(args)) throw new BadRequest(INVALID_PARAMS, 'InvalidRequest', '"args" must be an array');
  if (!isPlainObject(kwargs)) throw new BadRequest(INVALID_PARAMS, 'InvalidRequest', '"kwargs" must be an object');
  let entry = registry.get(name);
  if (!entry && entries.length === 1) entry = entries[0];
  if (!entry) {
    const served = [...registry.keys()].sort().join(', ') || 'nothing';
    throw new BadRequest(METHOD_NOT_FOUND, 'NotRegistered', `task ${JSON.stringify(name)} is not served by ${pluginName()} (serves: ${served})`);
  }
  return { entry, args, kwargs };
}

/** The argument list for a call; throws TypeError for kwargs the function does not take. */
function argumentList(entry, args, kwargs) {
  const names = Object.keys(kwargs);
  if (!entry.params) return names.length ? [...args, kwargs] : [...args];
  const list = [...args];
  const rest = {};
  let hasRest = false;
  for (const name of names) {
    const i = entry.params.names.indexOf(name);
    if (i < 0) {
      if (!entry.varkwargs) throw new TypeError(`${entry.fn.name || 'task'}() got an unexpected keyword argument ${JSON.stringify(name)}`);
      rest[name] = kwargs[name];
      hasRest = true;
      continue;
    }
    if (i < args.length) throw new TypeError(`${entry.fn.name || 'task'}() got multiple values for argument ${JSON.stringify(name)}`);
    while (list.length < i) list.push(undefined);
    list[i] = kwargs[name];
  }
  if (hasRest) {
    while (list.length < entry.params.names.length) list.push(undefined);
    list.push(rest);
  }
  return list;
}

/**
 * Run a call: resolves to { ok: true, text } (the result's JSON text) or
 * { ok: false, info } (type, message, retryable, traceback). Never rejects.
 */
async function invoke(call) {
  let result;
  try {
    const list = argumentList(call.entry, call.args, call.kwargs);
    const self = { request: call.request, signal: call.controller.signal };
    result = await callStorage.run(call, () => call.entry.fn.apply(self, list));
  } catch (e) {
    return { ok: false, info: errorInfo(e) };
  }
  try {
    return { ok: true, text: toJSONText(result) };
  } catch (e) {
    return {
      ok: false,
      info: { type: errorType(e), message: `the task's result is not JSON: ${e && e.message}`, retryable: false, traceback: null },
    };
  }
}

// ------------------------------------------------------------------------- stdio

// The protocol's own writer, taken before anything else can write to stdout.
const protocolOut = {
  stream: null,
  write: null,
  last: Promise.resolve(),
};

function claimStdio() {
  const stdout = process.stdout;
  const realWrite = stdout.write;
  protocolOut.stream = stdout;
  protocolOut.write = (text) => {
    protocolOut.last = new Promise((done) => {
      realWrite.call(stdout, text, () => done());
    });
    return protocolOut.last;
  };
  // The worker closed our stdout: nobody is left to answer.
  stdout.on('error', (e) => {
    if (e && e.code === 'EPIPE') process.exit(0);
    log(`stdout: ${e && e.message}`);
    process.exit(1);
  });
  // Everything else that writes to stdout goes to stderr.
  stdout.write = function write(...a) {
    return process.stderr.write(...a);
  };
  for (const method of ['log', 'info', 'debug']) {
    console[method] = (...a) => console.error(...a);
  }
  // A promise that task code forgot to await must not take the other calls down.
  process.on('unhandledRejection', (reason) => {
    log(`unhandled promise rejection (ignored): ${reason && reason.stack ? reason.stack : String(reason)}`);
  });
}

/** Exit with `code` once everything written to the protocol has reached the pipe. */
function exitAfterWrites(code) {
  protocolOut.last.then(() => process.exit(code));
}

function readAll(stream) {
  return new Promise((done, failed) => {
    const chunks = [];
    stream.on('data', (c) => chunks.push(c));
    stream.on('end', () => done(Buffer.concat(chunks)));
    stream.on('error', failed);
  });
}

// ------------------------------------------------------------------------- one-shot

function unsettledError() {
  return {
    type: 'UnsettledPromise',
    message: "the task's promise never settled, and nothing was left running that could settle it",
    retryable: false,
    traceback: null,
  };
}

async function oneShot() {
  const reply = (obj) => protocolOut.write(`${JSON.stringify(obj)}\n`);
  const replyError = (type, message) => reply({ error: { type, message, retryable: false, traceback: null } });

  let request;
  try {
    request = parseJSON(await readAll(process.stdin));
  } catch (e) {
    replyError('InvalidRequest', `stdin is not a JSON document: ${e.message}`);
    return 0;
  }
  let resolved;
  try {
    resolved = resolve(request);
  } catch (e) {
    if (!(e instanceof BadRequest)) throw e;
    replyError(e.type, e.message);
    return 0;
  }
  const call = { ...resolved, request, controller: new AbortController() };
  // A promise that never settles, with nothing left that could settle it, would end the
  // process silently: answer with an error instead.
  const stalled = () => {
    process.removeListener('beforeExit', stalled);
    reply({ error: unsettledError() });
    exitAfterWrites(0);
  };
  process.on('beforeExit', stalled);
  const outcome = await invoke(call);
  process.removeListener('beforeExit', stalled);
  if (outcome.ok) {
    protocolOut.write(`{"result":${outcome.text}}\n`);
    return 0;
  }
  reply({ error: outcome.info });
  if (!outcome.info.retryable) return 0;
  // On exit 75 the worker reports the last lines of stderr, not stdout: say it there too.
  log(`${outcome.info.type}: ${outcome.info.message} (exit 75: asking for a retry)`);
  return EX_TEMPFAIL;
}

// ------------------------------------------------------------------------- persistent

const keyOf = (id) => JSON.stringify(id);

class Server {
  constructor(name, maxInflight) {
    this.name = name;
    this.maxInflight = maxInflight;
    this.calls = new Map();  // key -> call, until answered (queued or running)
    this.queue = [];         // calls waiting for a free slot
    this.running = 0;        // calls started and not answered yet
    this.accepting = true;
    this.eof = false;
    this.shutdowns = [];     // ids of shutdown requests waiting for in-flight calls
    this.exiting = false;
  }

  send(obj) {
    protocolOut.write(`${JSON.stringify(obj)}\n`);
  }

  sendError(id, code, message, data) {
    const error = { code, message };
    if (data !== undefined) error.data = data;
    this.send({ jsonrpc: '2.0', id, error });
  }

  // ---- input

  serve() {
    let pending = [];
    process.stdin.on('data', (chunk) => {
      let start = 0;
      for (let nl = chunk.indexOf(10); nl >= 0; nl = chunk.indexOf(10, start)) {
        pending.push(chunk.subarray(start, nl));
        const line = pending.length === 1 ? pending[0] : Buffer.concat(pending);
        pending = [];
        start = nl + 1;
        this.receive(line);
        if (this.exiting) return;
      }
      if (start < chunk.length) pending.push(chunk.subarray(start));
    });
    process.stdin.on('end', () => {
      if (pending.length) this.receive(Buffer.concat(pending));
      this.eof = true;
      this.maybeExit();
    });
    // After EOF, calls whose promises can no longer settle would keep us waiting forever
    // (or end the process silently): fail them.
    process.on('beforeExit', () => {
      if (this.exiting) return;
      for (const call of [...this.calls.values()]) {
        this.release(call);
        this.finish(call, { ok: false, info: unsettledError() });
      }
      this.queue = [];
      this.settle();
      if (!this.exiting) exitAfterWrites(0);
    });
    process.stdin.on('error', (e) => {
      log(`stdin: ${e.message}`);
      this.eof = true;
      this.maybeExit();
    });
  }

  receive(line) {
    if (this.exiting || line.toString('latin1').trim() === '') return;
    let message;
    try {
      message = parseJSON(line);
    } catch (e) {
      this.sendError(null, PARSE_ERROR, `parse error: ${e.message}`);
      return;
    }
    try {
      this.handle(message);
    } catch (e) {
      log(`internal error: ${e && e.stack ? e.stack : e}`);
    }
  }

  handle(message) {
    if (!isPlainObject(message) || typeof message.method !== 'string') {
      const id = isPlainObject(message) && message.id !== undefined ? message.id : null;
      this.sendError(id, INVALID_REQUEST, 'not a JSON-RPC 2.0 request');
      return;
    }
    const { method, params } = message;
    const hasId = Object.prototype.hasOwnProperty.call(message, 'id');
    const id = message.id;
    if (method === 'task/run' && hasId) {
      this.submit(id, params);
    } else if (method === '$/cancel') {
      if (isPlainObject(params) && Object.prototype.hasOwnProperty.call(params, 'id')) {
        this.cancel(params.id, params.reason ? String(params.reason) : 'cancelled');
      }
    } else if (method === 'initialize' && hasId) {
      this.initialize(id, params);
    } else if (method === 'describe' && hasId) {
      this.send({ jsonrpc: '2.0', id, result: describe(this.name) });
    } else if (method === 'shutdown' && hasId) {
      this.accepting = false;
      this.shutdowns.push(id);
      this.settle();
    } else if (method === 'exit') {
      // After a shutdown request the calls finish and get answered first (normally none
      // are left by now); a bare exit cancels whatever is in flight.
      this.accepting = false;
      if (this.shutdowns.length === 0) this.cancelAll('shutdown');
      this.eof = true;
      this.maybeExit();
    } else if (hasId) {
      this.sendError(id, METHOD_NOT_FOUND, `unknown method ${JSON.stringify(method)}`);
    }
    // other notifications ($/...) are ignored, as JSON-RPC allows
  }

  initialize(id, params) {
    if (isPlainObject(params)) {
      const protocol = params.protocol === undefined ? PROTOCOL : params.protocol;
      if (protocol !== PROTOCOL) log(`worker speaks protocol ${JSON.stringify(protocol)}, this helper speaks ${PROTOCOL}`);
      if (Array.isArray(params.tasks) && entries.length !== 1) {
        const missing = params.tasks.filter((t) => !registry.has(t));
        if (missing.length) log(`asked for tasks this plugin does not serve: ${missing.join(', ')}`);
      }
    }
    this.send({ jsonrpc: '2.0', id, result: { protocol: PROTOCOL, name: this.name, max_inflight: this.maxInflight } });
  }

  // ---- calls

  submit(id, params) {
    if (!this.accepting) {
      this.sendError(id, TASK_FAILED, 'the plugin is shutting down', { type: 'ShuttingDown', retryable: true, traceback: null });
      return;
    }
    let resolved;
    try {
      resolved = resolve(params);
    } catch (e) {
      if (!(e instanceof BadRequest)) throw e;
      this.sendError(id, e.code, e.message, { type: e.type, retryable: false, traceback: null });
      return;
    }
    const key = keyOf(id);
    if (this.calls.has(key)) {
      log(`ignoring a second task/run with id ${key} while the first is in flight`);
      return;
    }
    const call = { id, key, ...resolved, request: params, controller: new AbortController() };
    this.calls.set(key, call);
    this.queue.push(call);
    this.pump();
  }

  pump() {
    while (this.running < this.maxInflight && this.queue.length > 0) {
      const call = this.queue.shift();
      if (!this.calls.has(call.key) || this.calls.get(call.key) !== call) continue; // cancelled while queued
      this.running += 1;
      call.holdsSlot = true;
      invoke(call).then((outcome) => {
        this.release(call);
        this.finish(call, outcome);
        this.pump();
        this.settle();
      });
    }
  }

  // A cancelled call gives its slot back when it is answered, even if its function is
  // still running: the worker counts answers, and will send the next call.
  release(call) {
    if (call.holdsSlot) {
      call.holdsSlot = false;
      this.running -= 1;
    }
  }

  finish(call, outcome) {
    if (this.calls.get(call.key) !== call) return; // already answered as cancelled
    this.calls.delete(call.key);
    if (outcome.ok) {
      protocolOut.write(`{"jsonrpc":"2.0","id":${JSON.stringify(call.id)},"result":${outcome.text}}\n`);
    } else {
      const { type, message, retryable, traceback } = outcome.info;
      this.sendError(call.id, TASK_FAILED, message, { type, retryable, traceback });
    }
  }

  cancel(id, reason) {
    const key = keyOf(id);
    const call = this.calls.get(key);
    if (!call) return; // unknown or already answered: nothing to do
    this.calls.delete(key);
    try {
      call.controller.abort(reason);
    } catch (e) {
      log(`an abort listener threw: ${e && e.stack ? e.stack : e}`);
    }
    this.release(call);
    this.sendError(id, CANCELLED, `cancelled (${reason})`, { type: 'Cancelled', reason, retryable: false, traceback: null });
    this.pump();
    this.settle();
  }

  cancelAll(reason) {
    for (const call of [...this.calls.values()]) this.cancel(call.id, reason);
  }

  /** Answer pending shutdown requests once no call is waiting for an answer. */
  settle() {
    if (this.calls.size === 0 && this.shutdowns.length > 0) {
      for (const id of this.shutdowns.splice(0)) this.send({ jsonrpc: '2.0', id, result: {} });
    }
    this.maybeExit();
  }

  maybeExit() {
    if (!this.eof || this.exiting || this.calls.size > 0 || this.shutdowns.length > 0) return;
    this.exiting = true;
    process.stdin.pause();
    exitAfterWrites(0);
  }
}

// ------------------------------------------------------------------------- entry point

/**
 * Serve the registered tasks in the mode CELERITY_MODE names, then exit the process.
 * options.name: what the initialize answer calls this plugin (default: the script's name).
 * options.maxInflight (or max_inflight): persistent mode only; how many calls may be in
 * flight at once (default 1).
 */
function run(options = {}) {
  if (entries.length === 0) {
    log('no task registered; register a function with task("name", fn)');
    process.exit(EX_USAGE);
  }
  const mode = process.env.CELERITY_MODE || 'oneshot';
  if (mode !== 'oneshot' && mode !== 'persistent' && mode !== 'describe') {
    log(`unknown CELERITY_MODE ${JSON.stringify(mode)} (expected oneshot, persistent or describe)`);
    process.exit(EX_USAGE);
  }
  const wanted = options.maxInflight !== undefined ? options.maxInflight : options.max_inflight;
  const maxInflight = Math.max(1, Math.floor(Number(wanted === undefined ? 1 : wanted)) || 1);
  claimStdio();
  if (mode === 'describe') {
    // stdin holds {"method": "describe", "protocol": 1}: nothing in it to act on.
    readAll(process.stdin).catch(() => null).then(() => {
      protocolOut.write(`${JSON.stringify(describe(options.name))}\n`);
      exitAfterWrites(0);
    });
  } else if (mode === 'oneshot') {
    oneShot().then(exitAfterWrites, (e) => {
      log(`internal error: ${e && e.stack ? e.stack : e}`);
      process.exit(1);
    });
  } else {
    new Server(options.name || pluginName(), maxInflight).serve();
  }
}

module.exports = {
  task,
  run,
  describe,
  RetryableError,
  POLICY_KEYS,
  currentRequest,
  currentSignal,
  cancelled,
  PROTOCOL,
};
