//! When to try a push job again: the shared schedule (exponential backoff
//! with full jitter, `turbochat-backoff`), never sooner than the server's
//! `Retry-After`.

use std::time::{Duration, SystemTime};

/// The retry schedule of `[push]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay bound after the first attempt.
    pub base: Duration,
    /// Largest delay bound.
    pub max: Duration,
    /// Longest `Retry-After` honoured (a longer one is cut to this).
    pub max_retry_after: Duration,
}

impl Backoff {
    fn schedule(&self) -> turbochat_backoff::Backoff {
        turbochat_backoff::Backoff {
            initial: self.base,
            max: self.max,
            multiplier: 2.0,
        }
    }

    /// The delay bound after attempt `attempt` (1-based):
    /// `min(max, base * 2^(attempt - 1))`.
    pub fn bound(&self, attempt: u32) -> Duration {
        self.schedule().ceiling(attempt.saturating_sub(1))
    }

    /// The delay before the next attempt after attempt `attempt` failed:
    /// uniform in `[0, bound(attempt)]` ("full jitter", so workers that
    /// failed together do not retry together), but at least what the
    /// server asked for in `Retry-After`.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let jittered = self.schedule().jittered(attempt.saturating_sub(1));
        match retry_after {
            Some(asked) => jittered.max(asked.min(self.max_retry_after)),
            None => jittered,
        }
    }
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP date (RFC 9110).
/// A date in the past means "now".
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEDULE: Backoff = Backoff {
        base: Duration::from_secs(1),
        max: Duration::from_secs(60),
        max_retry_after: Duration::from_secs(600),
    };

    #[test]
    fn bounds_double_up_to_the_max() {
        let bounds: Vec<u64> = (1..=9).map(|a| SCHEDULE.bound(a).as_secs()).collect();
        assert_eq!(bounds, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(SCHEDULE.bound(0), Duration::from_secs(1));
        assert_eq!(SCHEDULE.bound(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn delays_stay_within_the_bound() {
        for attempt in 1..=10 {
            for _ in 0..200 {
                assert!(SCHEDULE.delay(attempt, None) <= SCHEDULE.bound(attempt));
            }
        }
    }

    #[test]
    fn jitter_spreads_delays() {
        let delays: std::collections::HashSet<Duration> =
            (0..50).map(|_| SCHEDULE.delay(6, None)).collect();
        assert!(delays.len() > 10, "{delays:?}");
    }

    #[test]
    fn retry_after_is_a_floor_and_capped() {
        for _ in 0..100 {
            let delay = SCHEDULE.delay(1, Some(Duration::from_secs(30)));
            assert_eq!(delay, Duration::from_secs(30), "above the 1 s bound");
        }
        let delay = SCHEDULE.delay(1, Some(Duration::from_secs(86_400)));
        assert_eq!(delay, Duration::from_secs(600));
        let delay = SCHEDULE.delay(9, Some(Duration::ZERO));
        assert!(delay <= Duration::from_secs(60));
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
