#!/usr/bin/env node
// celerity-check: --task plugins.js_add --args [2,3]
// Celerity plugin in plain Node (no npm packages), both modes, through celerity_plugin.js.
// Task plugins.js_add(x, y): returns x + y. JSON numbers become JS doubles, so integers
// beyond 2^53 cannot be added exactly; such inputs get a RangeError instead of a wrong sum.
// Also callable with kwargs: {"args": [], "kwargs": {"x": 2, "y": 40}}.
'use strict';

const { task, run } = require('./celerity_plugin');

function add(x, y) {
  for (const [name, v] of [['x', x], ['y', y]]) {
    if (typeof v !== 'number') {
      throw new TypeError(`${name} must be a number, got ${JSON.stringify(v)}`);
    }
    if (Number.isInteger(v) && !Number.isSafeInteger(v)) {
      throw new RangeError(`${name} (${v}) is an integer-valued number beyond 2^53; JavaScript cannot add it exactly`);
    }
  }
  const sum = x + y;
  if (!Number.isFinite(sum)) {
    throw new RangeError(`the sum is not finite (${sum})`);
  }
  return sum;
}

module.exports = { add };

// Run as a plugin only when executed, so other plugins can reuse add() (tutorial_tasks.js).
if (require.main === module) {
  task('plugins.js_add', add, {
    params: { x: 'number', y: 'number' },   // the argument schema answered to `describe`
    returns: 'number',
    queue: 'plugins',
    doc: 'x + y as JS doubles; integers beyond 2^53 are refused.',
  });
  run({ name: 'js_add' });
}
