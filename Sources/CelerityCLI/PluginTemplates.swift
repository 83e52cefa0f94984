// The files `celerity plugin new` writes (PluginCommand.swift), one set per language: a plugin
// serving one task, greet(name: string, times: integer = 1) -> string, that answers `describe`
// with its argument schema, and its test, which runs the plugin through the one-shot protocol
// and describe. Placeholders: {{NAME}} (the plugin's file name without extension), {{IDENT}}
// (NAME with '-' as '_', for test file names), {{TASK}} (the task name), {{DIR}} (the folder
// as given), {{RUN}} (shell tests: the command that runs the plugin).

enum PluginTemplates {
    /// the plugin, NAME.py
    static let python = ###"""
#!/usr/bin/env python3
# celerity-check: --task {{TASK}} --args ["world"]
"""Celerity plugin {{NAME}}, written by `celerity plugin new`.

{{TASK}}(name, times=1): a greeting for name, repeated times times.

Discovery (`plugin_dirs` in tasks.yaml) finds this file and asks it to describe itself: the
type annotations below are the task's argument schema, so a call such as
`celerity call {{TASK}} 42` is refused before anything is queued. The docstring's first
paragraph is the task's doc; task() takes the policy it suggests (queue=, time_limit=,
mode="persistent", ...). celerity_plugin.py, beside this file, speaks the protocol.

Test: python3 {{DIR}}/tests/test_{{IDENT}}.py
"""
from celerity_plugin import task, run


@task("{{TASK}}")
def greet(name: str, times: int = 1) -> str:
    """Greets name, times times."""
    if times < 1:
        raise ValueError("times must be at least 1, got %d" % times)
    return " ".join(["Hello, %s!" % name] * times)


if __name__ == "__main__":
    run()
"""### + "\n"

    /// its test, tests/test_IDENT.py (unittest)
    static let pythonTest = ###"""
"""Tests of the plugin {{NAME}} through the plugin protocol: one-shot calls and describe.

Run: python3 {{DIR}}/tests/test_{{IDENT}}.py
"""
import json
import os
import subprocess
import sys
import unittest

PLUGIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "{{NAME}}.py")
TASK = "{{TASK}}"


def run_plugin(request, mode="oneshot"):
    """Runs the plugin once as the worker would; returns its answer (a dict)."""
    env = dict(os.environ, CELERITY_MODE=mode, CELERITY_PROTOCOL="1")
    done = subprocess.run([sys.executable, PLUGIN], input=json.dumps(request).encode(),
                          capture_output=True, env=env, timeout=60)
    if done.returncode != 0:
        raise AssertionError("exit %d; stderr: %s" % (done.returncode, done.stderr.decode()))
    return json.loads(done.stdout.decode())


class PluginTest(unittest.TestCase):
    def call(self, args, kwargs=None):
        return run_plugin({"id": "test-1", "task": TASK, "args": args, "kwargs": kwargs or {}})

    def test_a_call(self):
        self.assertEqual(self.call(["Ada"], {"times": 2}), {"result": "Hello, Ada! Hello, Ada!"})

    def test_the_default(self):
        self.assertEqual(self.call(["world"]), {"result": "Hello, world!"})

    def test_an_error_is_an_answer(self):
        error = self.call(["Ada", 0])["error"]
        self.assertEqual(error["type"], "ValueError")
        self.assertIn("at least 1", error["message"])

    def test_describe(self):
        document = run_plugin({"method": "describe", "protocol": 1}, mode="describe")
        entry = document["tasks"][TASK]
        self.assertEqual(entry["params"], {"name": {"type": "string"},
                                           "times": {"type": "integer", "default": 1}})
        self.assertEqual(entry["returns"], {"type": "string"})
        self.assertEqual(entry["doc"], "Greets name, times times.")


if __name__ == "__main__":
    unittest.main()
"""### + "\n"

    /// the plugin, NAME.js
    static let node = ###"""
#!/usr/bin/env node
// celerity-check: --task {{TASK}} --args ["world"]
// Celerity plugin {{NAME}}, written by `celerity plugin new`.
//
// {{TASK}}(name, times = 1): a greeting for name, repeated times times.
//
// Discovery (`plugin_dirs` in tasks.yaml) finds this file and asks it to describe itself:
// `params` below is the task's argument schema (a type name or a JSON Schema per
// parameter, in order), so a call such as `celerity call {{TASK}} 42` is refused before
// anything is queued. The other options are the policy the plugin suggests (queue,
// time_limit, mode: 'persistent', ...). celerity_plugin.js, beside this file, speaks the
// protocol.
//
// Test: node --test {{DIR}}/tests/{{NAME}}.test.js
'use strict';

const { task, run } = require('./celerity_plugin');

function greet(name, times = 1) {
  if (times < 1) throw new RangeError(`times must be at least 1, got ${times}`);
  return Array(times).fill(`Hello, ${name}!`).join(' ');
}

task('{{TASK}}', greet, {
  params: { name: 'string', times: { type: 'integer', minimum: 1, default: 1 } },
  returns: 'string',
  doc: 'Greets name, times times.',
});
run();
"""### + "\n"

    /// its test, tests/NAME.test.js (node --test)
    static let nodeTest = ###"""
// Tests of the plugin {{NAME}} through the plugin protocol: one-shot calls and describe.
// Run: node --test {{DIR}}/tests/{{NAME}}.test.js
'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const path = require('node:path');

const PLUGIN = path.join(__dirname, '..', '{{NAME}}.js');
const TASK = '{{TASK}}';

/** Runs the plugin once as the worker would; returns its answer. */
function runPlugin(request, mode = 'oneshot') {
  const done = spawnSync(process.execPath, [PLUGIN], {
    input: JSON.stringify(request),
    env: { ...process.env, CELERITY_MODE: mode, CELERITY_PROTOCOL: '1' },
    timeout: 60000,
  });
  assert.equal(done.status, 0, `exit ${done.status}; stderr: ${done.stderr}`);
  return JSON.parse(String(done.stdout));
}

const call = (args, kwargs = {}) => runPlugin({ id: 'test-1', task: TASK, args, kwargs });

test('a call', () => {
  assert.deepEqual(call(['Ada'], { times: 2 }), { result: 'Hello, Ada! Hello, Ada!' });
});

test('the default', () => {
  assert.deepEqual(call(['world']), { result: 'Hello, world!' });
});

test('an error is an answer', () => {
  const { error } = call(['Ada', 0]);
  assert.equal(error.type, 'RangeError');
  assert.match(error.message, /at least 1/);
});

test('describe', () => {
  const entry = runPlugin({ method: 'describe', protocol: 1 }, 'describe').tasks[TASK];
  assert.deepEqual(entry.params, { name: { type: 'string' }, times: { type: 'integer', minimum: 1, default: 1 } });
  assert.deepEqual(entry.returns, { type: 'string' });
});
"""### + "\n"

    /// the plugin, NAME.rb
    static let ruby = ###"""
#!/usr/bin/env ruby
# celerity-check: --task {{TASK}} --args ["world"]
# frozen_string_literal: true
#
# Celerity plugin {{NAME}}, written by `celerity plugin new`.
#
# {{TASK}}(name, times = 1): a greeting for name, repeated times times.
#
# Discovery (`plugin_dirs` in tasks.yaml) finds this file and asks it to describe itself:
# params: below is the task's argument schema (a type name or a JSON Schema per parameter,
# in order), so a call such as `celerity call {{TASK}} 42` is refused before anything is
# queued. The other options are the policy the plugin suggests (queue:, time_limit:,
# mode: 'persistent', ...). celerity_plugin.rb, beside this file, speaks the protocol.
#
# Test: ruby {{DIR}}/tests/test_{{IDENT}}.rb

require_relative 'celerity_plugin'
include CelerityPlugin

task '{{TASK}}', params: { name: 'string', times: { type: 'integer', minimum: 1, default: 1 } },
                 returns: 'string', doc: 'Greets name, times times.' do |name, times = 1|
  raise ArgumentError, "times must be at least 1, got #{times}" if times < 1

  (["Hello, #{name}!"] * times).join(' ')
end

run
"""### + "\n"

    /// its test, tests/test_IDENT.rb (minitest)
    static let rubyTest = ###"""
# frozen_string_literal: true

# Tests of the plugin {{NAME}} through the plugin protocol: one-shot calls and describe.
# Run: ruby {{DIR}}/tests/test_{{IDENT}}.rb

require 'json'
require 'minitest/autorun'
require 'open3'
require 'rbconfig'

PLUGIN = File.expand_path('../{{NAME}}.rb', __dir__)
TASK = '{{TASK}}'

class PluginTest < Minitest::Test
  # Runs the plugin once as the worker would; returns its answer.
  def run_plugin(request, mode = 'oneshot')
    env = { 'CELERITY_MODE' => mode, 'CELERITY_PROTOCOL' => '1' }
    out, err, status = Open3.capture3(env, RbConfig.ruby, PLUGIN, stdin_data: JSON.generate(request))
    assert status.success?, "exit #{status.exitstatus}; stderr: #{err}"
    JSON.parse(out)
  end

  def call(args, kwargs = {})
    run_plugin({ 'id' => 'test-1', 'task' => TASK, 'args' => args, 'kwargs' => kwargs })
  end

  def test_a_call
    assert_equal({ 'result' => 'Hello, Ada! Hello, Ada!' }, call(['Ada'], { 'times' => 2 }))
  end

  def test_the_default
    assert_equal({ 'result' => 'Hello, world!' }, call(['world']))
  end

  def test_an_error_is_an_answer
    error = call(['Ada', 0])['error']
    assert_equal 'ArgumentError', error['type']
    assert_match(/at least 1/, error['message'])
  end

  def test_describe
    entry = run_plugin({ 'method' => 'describe', 'protocol' => 1 }, 'describe')['tasks'][TASK]
    assert_equal({ 'name' => { 'type' => 'string' }, 'times' => { 'type' => 'integer', 'minimum' => 1, 'default' => 1 } },
                 entry['params'])
    assert_equal({ 'type' => 'string' }, entry['returns'])
  end
end
"""### + "\n"

    /// the plugin, NAME.sh (POSIX sh and awk; one-shot)
    static let sh = ###"""
#!/bin/sh
# celerity-check: --mode oneshot --task {{TASK}} --args ["world"]
# Celerity plugin {{NAME}} in POSIX sh (+ awk), written by `celerity plugin new`: one-shot mode.
#
# {{TASK}}(name, times=1): a greeting for name, repeated times times (1 to 1000).
# Test: sh {{DIR}}/tests/test_{{IDENT}}.sh
#
# The worker writes one JSON request to stdin, e.g.
#   {"id": "…", "task": "{{TASK}}", "args": ["Ada"], "kwargs": {"times": 2}, …}
# and reads one answer from stdout: {"result": …} or {"error": {"type", "message", …}}.
# With CELERITY_MODE=describe it answers with the task's description (below): its
# argument schema and the policy it suggests. awk reads the request and binds the
# arguments; strings stay in their JSON form (escapes and all), which is what the answer
# needs.

if [ "${CELERITY_MODE:-}" = describe ]; then
    cat >/dev/null    # the request: {"method": "describe", "protocol": 1}
    cat <<'DESCRIBE'
{"protocol": 1, "name": "{{NAME}}", "tasks": {"{{TASK}}": {"doc": "Greets name, times times.", "params": {"name": {"type": "string"}, "times": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1}}, "returns": {"type": "string"}, "mode": "oneshot"}}}
DESCRIBE
    exit 0
fi
if [ "${CELERITY_MODE:-oneshot}" != oneshot ]; then
    echo "{{NAME}} only speaks one-shot mode (CELERITY_MODE=$CELERITY_MODE)" >&2
    exit 64
fi
LC_ALL=C
export LC_ALL

# Prints "OK<tab><name, JSON string body><tab><times>" or "ERR<tab><type><tab><message>".
bound=$(awk '
function ws() { while (i <= n && index(" \t\r\n", substr(s, i, 1)) > 0) i++ }
function fail(m) { if (err == "") err = m; i = n + 1; return "" }
function str(   start, c) {                   # at a quote; returns the string with its quotes
    start = i++
    while (i <= n) {
        c = substr(s, i, 1)
        if (c == "\\") { i += 2; continue }
        if (c == "\"") { i++; kind = "string"; return substr(s, start, i - start) }
        i++
    }
    return fail("an unterminated string")
}
function value(   c, start, t) {               # returns scalars; skips arrays and objects
    ws(); c = substr(s, i, 1)
    if (c == "\"") return str()
    if (c == "[" || c == "{") { container(); return "" }
    start = i
    while (i <= n && index("+-.0123456789eEtruefalsn", substr(s, i, 1)) > 0) i++
    t = substr(s, start, i - start)
    if (t == "") return fail("not a JSON value")
    if (t == "true" || t == "false") kind = "boolean"
    else if (t == "null") kind = "null"
    else if (t ~ /^-?(0|[1-9][0-9]*)$/) kind = "integer"
    else if (t ~ /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$/) kind = "number"
    else return fail("not a JSON value")
    return t
}
function container(   closer, key, v, c) {        # at [ or {; the request itself when depth is 0
    closer = substr(s, i, 1) == "[" ? "]" : "}"
    depth++; i++; ws()
    if (substr(s, i, 1) == closer) { i++; depth--; kind = "container"; return }
    while (i <= n) {
        ws(); key = ""
        if (closer == "}") {
            if (substr(s, i, 1) != "\"") { fail("an object key must be a string"); return }
            key = str(); ws()
            if (substr(s, i, 1) != ":") { fail("a colon is missing after an object key"); return }
            i++; ws()
        }
        if (depth == 1 && key == "\"args\"" && substr(s, i, 1) == "[") items()
        else if (depth == 1 && key == "\"kwargs\"" && substr(s, i, 1) == "{") members()
        else {
            v = value()
            if (depth == 1 && (key == "\"args\"" || key == "\"kwargs\"") && kind != "null") {
                fail(key == "\"args\"" ? "args must be an array" : "kwargs must be an object"); return
            }
        }
        ws(); c = substr(s, i, 1); i++
        if (c == ",") continue
        if (c == closer) { depth--; kind = "container"; return }
        fail("a comma or a closing bracket is missing"); return
    }
    fail("the input ends too early")
}
function items(   v, c) {
    i++; ws()
    if (substr(s, i, 1) == "]") { i++; return }
    while (i <= n) {
        v = value(); nargs++; arg[nargs] = v; argkind[nargs] = kind; ws()
        c = substr(s, i, 1); i++
        if (c == ",") continue
        if (c == "]") return
        fail("a comma or ] is missing in args"); return
    }
}
function members(   name, v, c) {
    i++; ws()
    if (substr(s, i, 1) == "}") { i++; return }
    while (i <= n) {
        ws()
        if (substr(s, i, 1) != "\"") { fail("an object key must be a string"); return }
        name = str(); ws()
        if (substr(s, i, 1) != ":") { fail("a colon is missing after an object key"); return }
        i++
        v = value(); nkw++; kwname[nkw] = substr(name, 2, length(name) - 2); kw[nkw] = v; kwkind[nkw] = kind; ws()
        c = substr(s, i, 1); i++
        if (c == ",") continue
        if (c == "}") return
        fail("a comma or } is missing in kwargs"); return
    }
}
{ s = s $0 "\n" }
END {
    n = length(s); i = 1; depth = 0; err = ""; nargs = 0; nkw = 0
    ws()
    if (substr(s, i, 1) != "{") { print "ERR\tInvalidRequest\tstdin is not a JSON object"; exit }
    container(); ws()
    if (err == "" && i <= n) err = "more after the JSON document"
    if (err != "") { print "ERR\tInvalidRequest\tstdin is not a JSON document: " err; exit }

    # Bind the arguments as Python would: name, times = 1.
    if (nargs > 2) { print "ERR\tTypeError\tgreet() takes from 1 to 2 positional arguments but " nargs " were given"; exit }
    hasname = nargs >= 1; name = arg[1]; namekind = argkind[1]
    hastimes = nargs >= 2; times = arg[2]; timeskind = argkind[2]
    for (k = 1; k <= nkw; k++) {
        if (kwname[k] == "name") {
            if (hasname) { print "ERR\tTypeError\tgreet() got multiple values for argument name"; exit }
            hasname = 1; name = kw[k]; namekind = kwkind[k]
        } else if (kwname[k] == "times") {
            if (hastimes) { print "ERR\tTypeError\tgreet() got multiple values for argument times"; exit }
            hastimes = 1; times = kw[k]; timeskind = kwkind[k]
        } else { print "ERR\tTypeError\tgreet() got an unexpected keyword argument"; exit }
    }
    if (!hasname) { print "ERR\tTypeError\tgreet() missing 1 required argument: name"; exit }
    if (namekind != "string") { print "ERR\tTypeError\targument name: expected string"; exit }
    if (!hastimes) times = 1
    else if (timeskind == "number" && times + 0 == int(times + 0)) times = int(times + 0)
    else if (timeskind != "integer") { print "ERR\tTypeError\targument times: expected integer"; exit }
    if (length(times) > 6 || times + 0 < 1 || times + 0 > 1000) { print "ERR\tValueError\targument times: must be between 1 and 1000"; exit }
    print "OK\t" substr(name, 2, length(name) - 2) "\t" (times + 0)
}')

tab=$(printf '\t')
case $bound in
    "OK$tab"*)
        rest=${bound#OK$tab}
        name=${rest%$tab*}
        times=${rest##*$tab}
        # The task itself: edit from here.
        greeting="Hello, $name!"
        k=1
        while [ "$k" -lt "$times" ]; do
            greeting="$greeting Hello, $name!"
            k=$((k + 1))
        done
        printf '{"result": "%s"}\n' "$greeting"
        ;;
    "ERR$tab"*)
        rest=${bound#ERR$tab}
        printf '{"error": {"type": "%s", "message": "%s", "retryable": false, "traceback": null}}\n' \
            "${rest%%$tab*}" "${rest#*$tab}"
        ;;
    *)
        echo "{{NAME}}: awk failed" >&2
        exit 1
        ;;
esac
"""### + "\n"

    /// the plugin's source, NAME.c (C99, no libraries; one-shot), compiled to NAME
    static let c = ###"""
// celerity-check: --mode oneshot --task {{TASK}} --args ["world"]
// Celerity plugin {{NAME}} in C, written by `celerity plugin new`: one-shot mode, no libraries.
//
// {{TASK}}(name, times=1): a greeting for name, repeated times times (1 to 1000).
//
// Build: cc -O2 -o {{DIR}}/{{NAME}} {{DIR}}/{{NAME}}.c   (discovery runs the executable {{DIR}}/{{NAME}})
// Test:  sh {{DIR}}/tests/test_{{IDENT}}.sh
//
// The worker writes one JSON request to stdin, e.g.
//   {"id": "…", "task": "{{TASK}}", "args": ["Ada"], "kwargs": {"times": 2}, …}
// and reads one answer from stdout: {"result": …} or {"error": {"type", "message", …}}.
// With CELERITY_MODE=describe it reads {"method": "describe", "protocol": 1} and answers
// with the task's description: its argument schema and the policy it suggests.
// The JSON reader below checks the whole request and keeps the spans of "args" and
// "kwargs" members; strings stay in their JSON form (escapes and all), which is what the
// answer needs.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TASK "{{TASK}}"

static const char *describe_document =
    "{\"protocol\": 1, \"name\": \"{{NAME}}\", \"tasks\": {\"" TASK "\": {"
    "\"doc\": \"Greets name, times times.\", "
    "\"params\": {\"name\": {\"type\": \"string\"}, "
    "\"times\": {\"type\": \"integer\", \"minimum\": 1, \"maximum\": 1000, \"default\": 1}}, "
    "\"returns\": {\"type\": \"string\"}, \"mode\": \"oneshot\"}}}\n";

// ---------------------------------------------------------------- a small JSON reader

enum kind { J_NULL, J_BOOL, J_INT, J_NUMBER, J_STRING, J_ARRAY, J_OBJECT };

struct span { enum kind kind; const char *start; size_t len; };  // a value's JSON text

#define MAX_ITEMS 16
struct request {
    struct span args[MAX_ITEMS];
    size_t nargs;
    struct span kwnames[MAX_ITEMS], kwvalues[MAX_ITEMS];  // names without their quotes
    size_t nkwargs;
    int too_many;
};

struct reader { const char *p, *end; const char *error; int depth; };

static void skip_ws(struct reader *r) {
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')) r->p++;
}

static int fail(struct reader *r, const char *message) {
    if (!r->error) r->error = message;
    return 0;
}

static int parse_value(struct reader *r, struct span *out);

static int parse_string(struct reader *r, struct span *out) {
    const char *start = r->p++;  // at the opening quote
    while (r->p < r->end) {
        unsigned char c = (unsigned char)*r->p;
        if (c == '"') {
            r->p++;
            if (out) { out->kind = J_STRING; out->start = start; out->len = (size_t)(r->p - start); }
            return 1;
        }
        if (c < 0x20) return fail(r, "a control character inside a string");
        if (c == '\\') {
            if (r->p + 1 >= r->end) break;
            char e = r->p[1];
            if (e == 'u') {
                if (r->p + 6 > r->end) break;
                for (int k = 2; k < 6; k++) {
                    if (!strchr("0123456789abcdefABCDEF", r->p[k]) || r->p[k] == 0) return fail(r, "a bad \\u escape");
                }
                r->p += 6;
                continue;
            }
            if (!strchr("\"\\/bfnrt", e) || e == 0) return fail(r, "a bad escape in a string");
            r->p += 2;
            continue;
        }
        r->p++;
    }
    return fail(r, "an unterminated string");
}

static int parse_number(struct reader *r, struct span *out) {
    const char *start = r->p;
    int integral = 1;
    if (r->p < r->end && *r->p == '-') r->p++;
    if (r->p >= r->end || *r->p < '0' || *r->p > '9') return fail(r, "not a JSON value");
    if (*r->p == '0') r->p++;
    else while (r->p < r->end && *r->p >= '0' && *r->p <= '9') r->p++;
    if (r->p < r->end && *r->p == '.') {
        integral = 0;
        r->p++;
        if (r->p >= r->end || *r->p < '0' || *r->p > '9') return fail(r, "a bad number");
        while (r->p < r->end && *r->p >= '0' && *r->p <= '9') r->p++;
    }
    if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
        integral = 0;
        r->p++;
        if (r->p < r->end && (*r->p == '+' || *r->p == '-')) r->p++;
        if (r->p >= r->end || *r->p < '0' || *r->p > '9') return fail(r, "a bad number");
        while (r->p < r->end && *r->p >= '0' && *r->p <= '9') r->p++;
    }
    if (out) { out->kind = integral ? J_INT : J_NUMBER; out->start = start; out->len = (size_t)(r->p - start); }
    return 1;
}

static int literal(struct reader *r, const char *word, enum kind kind, struct span *out) {
    size_t n = strlen(word);
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0) return fail(r, "not a JSON value");
    if (out) { out->kind = kind; out->start = r->p; out->len = n; }
    r->p += n;
    return 1;
}

// Parses an array or an object; with `req` (the request object itself), keeps "args" and
// "kwargs".
static int parse_container(struct reader *r, struct span *out, struct request *req) {
    const char *start = r->p;
    char close = *r->p == '[' ? ']' : '}';
    if (++r->depth > 64) return fail(r, "nested too deeply");
    r->p++;
    skip_ws(r);
    if (r->p < r->end && *r->p == close) {
        r->p++;
    } else {
        for (;;) {
            struct span key = {0};
            skip_ws(r);
            if (close == '}') {
                if (r->p >= r->end || *r->p != '"') return fail(r, "an object key must be a string");
                if (!parse_string(r, &key)) return 0;
                skip_ws(r);
                if (r->p >= r->end || *r->p != ':') return fail(r, "a ':' is missing after an object key");
                r->p++;
                skip_ws(r);
            }
            int is_args = req && key.len == 6 && memcmp(key.start, "\"args\"", 6) == 0;
            int is_kwargs = req && key.len == 8 && memcmp(key.start, "\"kwargs\"", 8) == 0;
            if (is_args && r->p < r->end && *r->p == '[') {
                // args: keep each element
                r->p++;
                skip_ws(r);
                if (r->p < r->end && *r->p == ']') { r->p++; }
                else for (;;) {
                    struct span item;
                    if (!parse_value(r, &item)) return 0;
                    if (req->nargs < MAX_ITEMS) req->args[req->nargs++] = item; else req->too_many = 1;
                    skip_ws(r);
                    if (r->p < r->end && *r->p == ',') { r->p++; skip_ws(r); continue; }
                    if (r->p < r->end && *r->p == ']') { r->p++; break; }
                    return fail(r, "a ',' or ']' is missing in args");
                }
            } else if (is_kwargs && r->p < r->end && *r->p == '{') {
                // kwargs: keep each member
                r->p++;
                skip_ws(r);
                if (r->p < r->end && *r->p == '}') { r->p++; }
                else for (;;) {
                    struct span name, value;
                    if (r->p >= r->end || *r->p != '"') return fail(r, "an object key must be a string");
                    if (!parse_string(r, &name)) return 0;
                    skip_ws(r);
                    if (r->p >= r->end || *r->p != ':') return fail(r, "a ':' is missing after an object key");
                    r->p++;
                    if (!parse_value(r, &value)) return 0;
                    if (req->nkwargs < MAX_ITEMS) {
                        name.start++; name.len -= 2;
                        req->kwnames[req->nkwargs] = name;
                        req->kwvalues[req->nkwargs++] = value;
                    } else {
                        req->too_many = 1;
                    }
                    skip_ws(r);
                    if (r->p < r->end && *r->p == ',') { r->p++; skip_ws(r); continue; }
                    if (r->p < r->end && *r->p == '}') { r->p++; break; }
                    return fail(r, "a ',' or '}' is missing in kwargs");
                }
            } else if (is_args || is_kwargs) {
                struct span other;
                if (!parse_value(r, &other)) return 0;
                if (other.kind != J_NULL) return fail(r, is_args ? "args must be an array" : "kwargs must be an object");
            } else if (!parse_value(r, NULL)) {
                return 0;
            }
            skip_ws(r);
            if (r->p < r->end && *r->p == ',') { r->p++; continue; }
            if (r->p < r->end && *r->p == close) { r->p++; break; }
            return fail(r, close == ']' ? "a ',' or ']' is missing" : "a ',' or '}' is missing");
        }
    }
    r->depth--;
    if (out) { out->kind = close == ']' ? J_ARRAY : J_OBJECT; out->start = start; out->len = (size_t)(r->p - start); }
    return 1;
}

static int parse_value(struct reader *r, struct span *out) {
    skip_ws(r);
    if (r->p >= r->end) return fail(r, "the input ends too early");
    switch (*r->p) {
    case '"': return parse_string(r, out);
    case '[': case '{': return parse_container(r, out, NULL);
    case 't': return literal(r, "true", J_BOOL, out);
    case 'f': return literal(r, "false", J_BOOL, out);
    case 'n': return literal(r, "null", J_NULL, out);
    default: return parse_number(r, out);
    }
}

// ---------------------------------------------------------------- answers

static void answer_error(const char *type, const char *message) {
    // type and message are ours: no character in them needs escaping.
    printf("{\"error\": {\"type\": \"%s\", \"message\": \"%s\", \"retryable\": false, \"traceback\": null}}\n", type, message);
}

static char *read_all(FILE *in, size_t *length) {
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    if (!buf) return NULL;
    for (;;) {
        if (n == cap) {
            char *bigger = realloc(buf, cap *= 2);
            if (!bigger) { free(buf); return NULL; }
            buf = bigger;
        }
        size_t got = fread(buf + n, 1, cap - n, in);
        if (got == 0) break;
        n += got;
    }
    *length = n;
    return buf;
}

int main(void) {
    size_t length = 0;
    char *input = read_all(stdin, &length);
    if (!input) { fprintf(stderr, "{{NAME}}: out of memory\n"); return 1; }
    const char *mode = getenv("CELERITY_MODE");
    if (mode && strcmp(mode, "describe") == 0) {
        fputs(describe_document, stdout);
        return 0;
    }
    if (mode && *mode && strcmp(mode, "oneshot") != 0) {
        fprintf(stderr, "{{NAME}} only speaks one-shot mode (CELERITY_MODE=%s)\n", mode);
        return 64;
    }

    struct request req = {0};
    struct reader r = {input, input + length, NULL, 0};
    skip_ws(&r);
    if (r.p >= r.end || *r.p != '{') {
        answer_error("InvalidRequest", "stdin is not a JSON object");
        return 0;
    }
    int ok = parse_container(&r, NULL, &req);
    skip_ws(&r);
    if (ok && r.p != r.end) ok = fail(&r, "more after the JSON document");
    if (!ok) {
        char message[200];
        snprintf(message, sizeof message, "stdin is not a JSON document: %s", r.error);
        answer_error("InvalidRequest", message);
        return 0;
    }

    // Bind the arguments as Python would: name, times = 1.
    const struct span *name = NULL, *times = NULL;
    if (req.too_many || req.nargs > 2) {
        answer_error("TypeError", "greet() takes from 1 to 2 positional arguments");
        return 0;
    }
    if (req.nargs >= 1) name = &req.args[0];
    if (req.nargs >= 2) times = &req.args[1];
    for (size_t k = 0; k < req.nkwargs; k++) {
        const struct span *key = &req.kwnames[k];
        if (key->len == 4 && memcmp(key->start, "name", 4) == 0) {
            if (name) { answer_error("TypeError", "greet() got multiple values for argument 'name'"); return 0; }
            name = &req.kwvalues[k];
        } else if (key->len == 5 && memcmp(key->start, "times", 5) == 0) {
            if (times) { answer_error("TypeError", "greet() got multiple values for argument 'times'"); return 0; }
            times = &req.kwvalues[k];
        } else {
            answer_error("TypeError", "greet() got an unexpected keyword argument");
            return 0;
        }
    }
    if (!name) { answer_error("TypeError", "greet() missing 1 required argument: 'name'"); return 0; }
    if (name->kind != J_STRING) { answer_error("TypeError", "argument name: expected string"); return 0; }
    long count = 1;
    if (times) {
        // An integer, or a number with an integral value (2.0), as JSON Schema's "integer" says.
        double value = times->kind == J_INT || times->kind == J_NUMBER ? strtod(times->start, NULL) : 0.5;
        int integral = times->kind == J_INT || (times->kind == J_NUMBER &&
                       (value > 1e15 || value < -1e15 || value == (double)(long long)value));
        if (!integral) {
            answer_error("TypeError", "argument times: expected integer");
            return 0;
        }
        if (value < 1 || value > 1000) { answer_error("ValueError", "argument times: must be between 1 and 1000"); return 0; }
        count = (long)value;
    }

    // The answer: "Hello, <name>!" count times, the name in its JSON form (escapes kept).
    const char *body = name->start + 1;
    size_t body_len = name->len - 2;
    fputs("{\"result\": \"", stdout);
    for (long k = 0; k < count; k++) {
        fputs(k ? " Hello, " : "Hello, ", stdout);
        fwrite(body, 1, body_len, stdout);
        fputc('!', stdout);
    }
    fputs("\"}\n", stdout);
    free(input);
    return fflush(stdout) == 0 ? 0 : 1;
}
"""### + "\n"

    /// the test of a sh or C plugin, tests/test_IDENT.sh ({{RUN}}: how it runs the plugin)
    static let shellTest = ###"""
#!/bin/sh
# Tests of the plugin {{NAME}} through the plugin protocol: one-shot calls and describe.
# Run: sh {{DIR}}/tests/test_{{IDENT}}.sh   (exit status 0 when every check passes)
here=$(cd "$(dirname "$0")" && pwd)
run_plugin() { {{RUN}}; }
failures=0

# check WHAT MODE REQUEST PATTERN: the answer must match the shell pattern.
check() {
    answer=$(export CELERITY_MODE="$2" CELERITY_PROTOCOL=1; printf '%s' "$3" | run_plugin)
    status=$?
    case $answer in
        $4) [ "$status" -eq 0 ] && { echo "ok    $1"; return; } ;;
    esac
    echo "FAIL  $1: exit $status, answer: $answer" >&2
    echo "      expected: $4" >&2
    failures=$((failures + 1))
}

check "a call" oneshot '{"id": "test-1", "task": "{{TASK}}", "args": ["Ada"], "kwargs": {"times": 2}}' \
    '{"result": "Hello, Ada! Hello, Ada!"}'
check "the default" oneshot '{"id": "test-2", "task": "{{TASK}}", "args": ["world"], "kwargs": {}}' \
    '{"result": "Hello, world!"}'
check "an error is an answer" oneshot '{"id": "test-3", "task": "{{TASK}}", "args": ["Ada", 0], "kwargs": {}}' \
    '{"error": {"type": "ValueError", "message": "argument times: must be between 1 and 1000"*'
check "a wrong type is an answer" oneshot '{"id": "test-4", "task": "{{TASK}}", "args": [42], "kwargs": {}}' \
    '{"error": {"type": "TypeError", "message": "argument name: expected string"*'
check "describe" describe '{"method": "describe", "protocol": 1}' \
    '*"tasks": {"{{TASK}}": {*"params": {"name": {"type": "string"}, "times": {"type": "integer"*'

[ "$failures" -eq 0 ] && echo "all checks pass" || { echo "$failures failed" >&2; exit 1; }
"""### + "\n"

}
