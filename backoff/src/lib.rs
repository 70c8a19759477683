//! Reconnect and retry delays: exponential growth, full jitter, a cap, and a
//! reset once a connection has stayed up for a while.
//!
//! Everything here is a pure function of its inputs (the attempt number, a
//! random fraction, the current [`Instant`]), so the schedule is tested on
//! the numbers, never on wall time.

use std::time::{Duration, Instant};

/// The delay schedule: attempt `n` waits a uniformly random time in
/// `[0, min(max, initial × multiplier^n)]` ("full jitter").
///
/// Full jitter spreads a crowd of clients that lost the same router over
/// the whole window instead of bringing them back in synchronized waves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Ceiling of the first retry.
    pub initial: Duration,
    /// Largest ceiling; no delay is ever longer.
    pub max: Duration,
    /// Growth of the ceiling per attempt (2.0 doubles it).
    pub multiplier: f64,
}

impl Default for Backoff {
    /// 250 ms, doubling, capped at 30 s.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(30),
            multiplier: 2.0,
        }
    }
}

impl Backoff {
    /// The ceiling of attempt `attempt` (0-based): `initial × multiplier^attempt`,
    /// never above `max`. Monotonic in `attempt` for `multiplier >= 1`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = self.multiplier.max(1.0).powi(attempt.min(1024) as i32);
        let secs = self.initial.as_secs_f64() * factor;
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The delay of attempt `attempt` for a random fraction `unit` in
    /// `[0, 1]` (clamped): `unit × ceiling(attempt)`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            1.0
        };
        self.ceiling(attempt).mul_f64(unit)
    }

    /// The delay of attempt `attempt` with a fresh random fraction.
    pub fn jittered(&self, attempt: u32) -> Duration {
        self.delay(attempt, rand::random::<f64>())
    }

    /// The ceilings of attempts 0, 1, 2, ... (an endless iterator).
    pub fn ceilings(&self) -> impl Iterator<Item = Duration> + '_ {
        (0u32..).map(|attempt| self.ceiling(attempt))
    }
}

/// Which attempt the next reconnect is: counts failures, and starts over
/// after a connection that stayed up for `stable_after`.
///
/// Without the reset, a client that had a flaky hour would wait the full
/// cap after every later blip; without the stability condition, a server
/// that accepts and immediately drops connections would be hammered at the
/// initial rate forever.
#[derive(Debug, Clone)]
pub struct Reconnect {
    backoff: Backoff,
    stable_after: Duration,
    attempt: u32,
    connected_at: Option<Instant>,
}

impl Reconnect {
    /// Starts at attempt 0.
    pub fn new(backoff: Backoff, stable_after: Duration) -> Self {
        Reconnect {
            backoff,
            stable_after,
            attempt: 0,
            connected_at: None,
        }
    }

    /// A connection came up at `now`.
    pub fn connected(&mut self, now: Instant) {
        self.connected_at = Some(now);
    }

    /// A connection ended, or an attempt failed, at `now`: returns the
    /// attempt number whose delay applies before the next try, and counts it.
    pub fn failed(&mut self, now: Instant) -> u32 {
        if let Some(since) = self.connected_at.take() {
            if now.saturating_duration_since(since) >= self.stable_after {
                self.attempt = 0;
            }
        }
        let attempt = self.attempt;
        self.attempt = self.attempt.saturating_add(1);
        attempt
    }

    /// [`Reconnect::failed`] turned into a delay with the random fraction `unit`.
    pub fn next_delay(&mut self, now: Instant, unit: f64) -> Duration {
        let attempt = self.failed(now);
        self.backoff.delay(attempt, unit)
    }

    /// The schedule in use.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn ceilings_double_then_stay_at_the_cap() {
        let backoff = Backoff {
            initial: ms(100),
            max: ms(5_000),
            multiplier: 2.0,
        };
        let first: Vec<Duration> = backoff.ceilings().take(9).collect();
        assert_eq!(
            first,
            [
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1_600),
                ms(3_200),
                ms(5_000),
                ms(5_000),
                ms(5_000)
            ]
        );
        assert!(first.windows(2).all(|w| w[0] <= w[1]), "never shrinks");
    }

    #[test]
    fn huge_attempts_do_not_overflow() {
        let backoff = Backoff::default();
        assert_eq!(backoff.ceiling(u32::MAX), backoff.max);
        assert_eq!(backoff.delay(u32::MAX, 1.0), backoff.max);
        let silly = Backoff {
            multiplier: f64::INFINITY,
            ..Backoff::default()
        };
        assert_eq!(silly.ceiling(3), silly.max);
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        let backoff = Backoff::default();
        for attempt in 0..20 {
            let ceiling = backoff.ceiling(attempt);
            assert_eq!(backoff.delay(attempt, 0.0), Duration::ZERO);
            assert_eq!(backoff.delay(attempt, 1.0), ceiling);
            assert_eq!(backoff.delay(attempt, 7.0), ceiling, "clamped");
            assert_eq!(backoff.delay(attempt, f64::NAN), ceiling);
            let half = backoff.delay(attempt, 0.5);
            assert!(half <= ceiling && half >= ceiling / 2 - ms(1));
            let random = backoff.jittered(attempt);
            assert!(random <= ceiling);
        }
    }

    #[test]
    fn failures_climb_and_a_stable_connection_resets() {
        let backoff = Backoff {
            initial: ms(100),
            max: ms(1_000),
            multiplier: 2.0,
        };
        let mut reconnect = Reconnect::new(backoff, Duration::from_secs(10));
        let t0 = Instant::now();
        // Failed attempts without any connection: 0, 1, 2, 3, ...
        let attempts: Vec<u32> = (0..5).map(|_| reconnect.failed(t0)).collect();
        assert_eq!(attempts, [0, 1, 2, 3, 4]);

        // A connection that drops after 2 s is not stable: keep climbing.
        reconnect.connected(t0);
        assert_eq!(reconnect.failed(t0 + Duration::from_secs(2)), 5);
        assert_eq!(reconnect.next_delay(t0, 1.0), ms(1_000), "capped");

        // One that stayed up 10 s is: start over.
        reconnect.connected(t0);
        assert_eq!(reconnect.failed(t0 + Duration::from_secs(10)), 0);
        assert_eq!(reconnect.next_delay(t0, 1.0), ms(200));
    }
}
