//! Rate limits (governor's GCRA): sends, conversation creation and safety
//! actions (blocks, reports) per user
//! (keyed, shared by the user's sessions on this router), frames per
//! session (one limiter each). A refusal says when to retry.

use std::num::NonZeroU32;
use std::sync::LazyLock;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{DefaultKeyedRateLimiter, NotUntil, Quota, RateLimiter};

use crate::config::Limits;

/// The limiter of one session's frames.
pub type FrameLimiter = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    DefaultClock,
    NoOpMiddleware,
>;

/// One clock for every limiter: making a quanta clock reads CPUID each
/// time, which was ~9 % of the router's CPU while clients connected (a
/// frame limiter per session), and a refusal's wait is read on the clock
/// that measured it.
static CLOCK: LazyLock<DefaultClock> = LazyLock::new(DefaultClock::default);

/// The per-user limiters of one router.
pub struct UserLimits {
    /// `send` frames per user.
    pub sends: DefaultKeyedRateLimiter<String>,
    /// `POST /conversations` per user.
    pub creates: DefaultKeyedRateLimiter<String>,
    /// `POST /blocks`, `DELETE /blocks/{id}`, `POST /reports` per user.
    pub safety: DefaultKeyedRateLimiter<String>,
}

impl UserLimits {
    /// Limiters with the configured rates.
    pub fn new(limits: &Limits) -> Self {
        let sends = Quota::per_second(at_least_one(limits.send_per_second))
            .allow_burst(at_least_one(limits.send_burst));
        let creates = Quota::per_minute(at_least_one(limits.conversations_per_minute))
            .allow_burst(at_least_one(limits.conversations_burst));
        let safety = Quota::per_minute(at_least_one(limits.safety_per_minute))
            .allow_burst(at_least_one(limits.safety_burst));
        UserLimits {
            sends: keyed(sends),
            creates: keyed(creates),
            safety: keyed(safety),
        }
    }

    /// Forgets users who went quiet (their state is back to a full bucket).
    pub fn retain_recent(&self) {
        self.sends.retain_recent();
        self.creates.retain_recent();
        self.safety.retain_recent();
    }
}

/// A per-user limiter on the shared clock (so that [`wait_ms`] reads the
/// clock its refusals were measured on).
fn keyed(quota: Quota) -> DefaultKeyedRateLimiter<String> {
    RateLimiter::new(quota, DefaultKeyedStateStore::default(), CLOCK.clone())
}

/// The frame limiter of a new session: `frames_per_second`, burst twice that.
pub fn frame_limiter(limits: &Limits) -> FrameLimiter {
    let per_second = at_least_one(limits.frames_per_second);
    let burst = NonZeroU32::new(per_second.get().saturating_mul(2)).unwrap_or(per_second);
    RateLimiter::direct_with_clock(
        Quota::per_second(per_second).allow_burst(burst),
        CLOCK.clone(),
    )
}

/// Milliseconds until a refused request would be allowed (at least 1).
pub fn wait_ms(not_until: &NotUntil<<DefaultClock as Clock>::Instant>) -> u64 {
    let wait = not_until.wait_time_from(CLOCK.now());
    u64::try_from(wait.as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

fn at_least_one(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_says_when_to_come_back() {
        let limits = Limits {
            conversations_per_minute: 60,
            conversations_burst: 2,
            ..Limits::default()
        };
        let users = UserLimits::new(&limits);
        let alice = "alice".to_string();
        assert!(users.creates.check_key(&alice).is_ok());
        assert!(users.creates.check_key(&alice).is_ok());
        let refused = users.creates.check_key(&alice).unwrap_err();
        let wait = wait_ms(&refused);
        assert!((1..=1001).contains(&wait), "one per second: {wait} ms");
        assert!(
            users.creates.check_key(&"bob".to_string()).is_ok(),
            "per user"
        );
    }

    #[test]
    fn frames_burst_to_twice_the_rate() {
        let limits = Limits {
            frames_per_second: 3,
            ..Limits::default()
        };
        let frames = frame_limiter(&limits);
        let allowed = (0..10).filter(|_| frames.check().is_ok()).count();
        assert_eq!(allowed, 6);
    }
}
