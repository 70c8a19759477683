import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Backoff } from '../../js/backoff.js';

test('the ceiling doubles from the base up to the cap', () => {
  const backoff = new Backoff({ baseMs: 500, capMs: 30_000, random: () => 1 });
  const delays = Array.from({ length: 10 }, () => backoff.next());
  assert.deepEqual(delays, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]);
});

test('full jitter: every delay is uniform between the minimum and the ceiling', () => {
  let r = 0;
  const values = [0, 0.25, 0.5, 0.999];
  const backoff = new Backoff({ baseMs: 1000, capMs: 8000, minMs: 100, random: () => values[r++ % values.length] });
  // Attempt 0..3: ceilings 1000, 2000, 4000, 8000.
  assert.deepEqual(
    [backoff.next(), backoff.next(), backoff.next(), backoff.next()],
    [100, 100 + 0.25 * 1900, 100 + 0.5 * 3900, Math.round(100 + 0.999 * 7900)],
  );
  const real = new Backoff({ baseMs: 500, capMs: 30_000 });
  for (let i = 0; i < 200; i++) {
    const ceiling = real.ceiling();
    const delay = real.next();
    assert.ok(delay >= 100 && delay <= ceiling, `${delay} within [100, ${ceiling}]`);
  }
});

test('a huge number of failures never overflows past the cap', () => {
  const backoff = new Backoff({ random: () => 1 });
  backoff.attempt = 5000;
  assert.equal(backoff.next(), 30_000);
});

test('reset starts the schedule again', () => {
  const backoff = new Backoff({ baseMs: 500, random: () => 1 });
  backoff.next();
  backoff.next();
  backoff.next();
  backoff.reset();
  assert.equal(backoff.next(), 500);
});
