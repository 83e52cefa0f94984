#!/usr/bin/env node
// celerity-check: --task plugins.js_factorial --args [25]
// Celerity plugin: tutorial tasks in Node (no npm packages), both modes.
//
// plugins.js_tutorial_add(x, y)   x + y as JS doubles; like plugins.js_add, integer inputs
//                                 beyond 2^53 are refused with a RangeError rather than
//                                 answered with a wrong sum
// plugins.js_factorial(n)         n! exactly, as a BigInt, for 0 <= n <= 1,000,000; the helper
//                                 writes a BigInt result as a JSON number with all its
//                                 digits (factorial(20000) has 77,338)
'use strict';

const { task, run } = require('./celerity_plugin');
const { add } = require('./js_add');   // the same checks as plugins.js_add

const FACTORIAL_LIMIT = 1000000;

// lo * (lo + 1) * ... * hi, halving the range so that the big multiplications are
// between numbers of similar size (much faster than a running product).
function product(lo, hi) {
  if (hi - lo < 16) {
    let p = 1n;
    for (let i = lo; i <= hi; i++) p *= BigInt(i);
    return p;
  }
  const mid = Math.floor((lo + hi) / 2);
  return product(lo, mid) * product(mid + 1, hi);
}

function factorial(n) {
  if (typeof n !== 'number' || !Number.isInteger(n)) {
    throw new TypeError(`factorial() needs an integer n, got ${JSON.stringify(n)}`);
  }
  if (n < 0) throw new RangeError(`factorial() not defined for negative values (n = ${n})`);
  if (n > FACTORIAL_LIMIT) throw new RangeError(`factorial(): n = ${n} is above the limit of 1,000,000`);
  return n < 2 ? 1n : product(2, n);
}

// params: the argument schemas answered to `describe` (a call with a string for n is refused
// before it is queued); queue and time_limit: the policy suggested (tasks.yaml wins).
task('plugins.js_tutorial_add', add, {
  params: { x: 'number', y: 'number' },
  returns: 'number',
  queue: 'plugins',
  doc: 'x + y as JS doubles; integers beyond 2^53 are refused.',
});
task('plugins.js_factorial', factorial, {
  params: { n: { type: 'integer', minimum: 0, maximum: FACTORIAL_LIMIT } },
  returns: 'integer',
  queue: 'plugins',
  time_limit: 120,
  doc: 'n! exactly, for 0 <= n <= 1,000,000.',
});
run({ name: 'tutorial_tasks' });
