// Reconnect delays: exponential with "full jitter" and a cap.
//
// The n-th retry waits a uniformly random time in [min, min(cap, base * 2^n)].
// Jitter spreads thousands of clients that lost the same router over the
// whole window instead of having them all come back at once; the cap keeps
// a long outage from growing the wait past what a person will tolerate.
// `reset()` is called once a connection has stayed up for a while, so one
// flaky minute does not leave a client waiting 30 s on the next drop.

/** Default schedule: 0.5 s, 1 s, 2 s, ... up to 30 s (before jitter). */
export const DEFAULTS = Object.freeze({ baseMs: 500, capMs: 30_000, minMs: 100 });

export class Backoff {
  /**
   * @param {{baseMs?: number, capMs?: number, minMs?: number, random?: () => number}} [options]
   */
  constructor(options = {}) {
    this.baseMs = options.baseMs ?? DEFAULTS.baseMs;
    this.capMs = options.capMs ?? DEFAULTS.capMs;
    this.minMs = Math.min(options.minMs ?? DEFAULTS.minMs, this.capMs);
    this.random = options.random ?? Math.random;
    /** Failed attempts since the last reset. */
    this.attempt = 0;
  }

  /** The upper bound of the next delay, before jitter. */
  ceiling() {
    // 2^attempt overflows to Infinity long after the cap is reached; min() copes.
    return Math.min(this.capMs, this.baseMs * 2 ** this.attempt);
  }

  /** The delay before the next attempt, in ms; advances the schedule. */
  next() {
    const ceiling = this.ceiling();
    this.attempt += 1;
    return Math.round(this.minMs + this.random() * Math.max(0, ceiling - this.minMs));
  }

  /** Back to the first step (after a stable connection). */
  reset() {
    this.attempt = 0;
  }
}
