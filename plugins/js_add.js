#!/usr/bin/env node
// Celerity one-shot plugin in plain Node (no npm packages).
// Task plugins.js_add(x, y): returns x + y. JSON numbers become JS doubles, so integers
// beyond 2^53 cannot be added exactly; such inputs get an error instead of a wrong sum.
'use strict';

function respond(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function fail(type, message, traceback) {
  respond({ error: { type, message, retryable: false, traceback: traceback || null } });
}

function add(x, y) {
  for (const [name, v] of [['x', x], ['y', y]]) {
    if (typeof v !== 'number') {
      const e = new TypeError(`${name} must be a number, got ${JSON.stringify(v)}`);
      throw e;
    }
    if (Number.isInteger(v) && !Number.isSafeInteger(v)) {
      throw new RangeError(`${name} (${v}) is an integer-valued number beyond 2^53; JavaScript cannot add it exactly`);
    }
  }
  return x + y;
}

if ((process.env.CELERITY_MODE || 'oneshot') !== 'oneshot') {
  process.stderr.write(`js_add.js only speaks one-shot mode (CELERITY_MODE=${process.env.CELERITY_MODE})\n`);
  process.exit(64);
}

const chunks = [];
process.stdin.on('data', (c) => chunks.push(c));
process.stdin.on('end', () => {
  let request;
  try {
    request = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    if (request === null || typeof request !== 'object' || Array.isArray(request)) {
      throw new SyntaxError('the request must be a JSON object');
    }
  } catch (e) {
    fail('InvalidRequest', `stdin is not a JSON request: ${e.message}`);
    return;
  }
  const args = Array.isArray(request.args) ? request.args : [];
  const kwargs = request.kwargs && typeof request.kwargs === 'object' ? request.kwargs : {};
  const x = args.length > 0 ? args[0] : kwargs.x;
  const y = args.length > 1 ? args[1] : kwargs.y;
  try {
    const result = add(x, y);
    if (!Number.isFinite(result)) {
      throw new RangeError(`the sum is not finite (${result})`);
    }
    respond({ result });
  } catch (e) {
    fail(e.name || 'Error', e.message, e.stack);
  }
});
