//! How forgexec waits on a forge or a store, whatever carries the request
//! (ureq in the executor, reqwest in the launcher): the retry policy, what
//! `Retry-After` and GitHub's rate-limit headers mean, the time budgets and
//! the pace of status writes. No I/O here, so both clients behave the same.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Longest single wait between attempts, whatever a server asks for.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// Total time for posting the final status (waits and attempts included).
/// With `FORGE_GRACE` (10 s by default) and the uploads it fits inside the
/// launcher's stop grace period (60 s).
pub const FINAL_STATUS_BUDGET: Duration = Duration::from_secs(30);
/// Total time for one `pending` update; it is skipped when that runs out.
pub const PENDING_STATUS_BUDGET: Duration = Duration::from_secs(5);
/// Least time between two status writes of one build (GitHub asks for a
/// second between content-creating requests).
pub const MIN_STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// A server's wait beyond this is read as this: far enough that every
/// budget is spent, near enough that no clock arithmetic overflows.
pub const MAX_SERVER_WAIT: Duration = Duration::from_secs(24 * 3600);

/// How often and how patiently a request is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (at least 1).
    pub max_attempts: u32,
    /// Ceiling of the first backoff; doubles with each retry.
    pub base_delay: Duration,
    /// Cap of any single wait, `Retry-After` included.
    pub max_delay: Duration,
    /// Least wait between attempts (statuses: a second, as GitHub asks).
    pub min_delay: Duration,
    /// Whether a rate limit is waited out (else it ends the request: a
    /// `pending` update is not worth the wait).
    pub wait_out_rate_limits: bool,
    /// Total time for all attempts and waits; `None` bounds only the
    /// attempts.
    pub budget: Option<Duration>,
}

impl Default for RetryPolicy {
    /// Six attempts, 500 ms base, 30 s cap: about a minute of patience for
    /// a forge or store that restarts.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: MAX_WAIT,
            min_delay: Duration::ZERO,
            wait_out_rate_limits: true,
            budget: None,
        }
    }
}

/// What the retry loop does after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Wait this long, then try again.
    Retry(Duration),
    /// The error is final (not worth another attempt).
    Final,
    /// The attempts are spent.
    Exhausted,
    /// Waiting `wanted` more would pass the budget.
    OutOfTime { wanted: Duration },
}

impl RetryPolicy {
    pub fn new(max_attempts: u32, base_delay: Duration, max_delay: Duration) -> Self {
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            base_delay,
            max_delay: max_delay.min(MAX_WAIT),
            min_delay: Duration::ZERO,
            wait_out_rate_limits: true,
            budget: None,
        }
    }

    /// `pending` statuses: short, and a rate limit ends the attempt.
    pub fn for_pending_status() -> Self {
        RetryPolicy {
            wait_out_rate_limits: false,
            ..RetryPolicy::for_status(PENDING_STATUS_BUDGET)
        }
    }

    /// The same policy bounded to `budget` in total.
    pub fn within(mut self, budget: Duration) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Statuses: as patient as the default, writes at least
    /// [`MIN_STATUS_INTERVAL`] apart, within `budget`.
    pub fn for_status(budget: Duration) -> Self {
        RetryPolicy {
            max_attempts: 10,
            min_delay: MIN_STATUS_INTERVAL,
            ..RetryPolicy::default()
        }
        .within(budget)
    }

    /// The upper bound of the jittered wait after failed attempt number
    /// `retry` (0 for the wait after the first attempt):
    /// `min(max_delay, base_delay * 2^retry)`.
    pub fn backoff_ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.base_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// The wait before the next attempt: the server's `Retry-After` when it
    /// gave one, else a uniformly random duration up to
    /// [`backoff_ceiling`](Self::backoff_ceiling) (full jitter); capped at
    /// `max_delay` either way, and at least `min_delay`.
    pub fn delay(
        &self,
        retry: u32,
        retry_after: Option<Duration>,
        rng: &mut fastrand::Rng,
    ) -> Duration {
        let wait = match retry_after {
            Some(wait) => wait.min(self.max_delay),
            None => {
                let ceiling = self.backoff_ceiling(retry).as_millis() as u64;
                Duration::from_millis(rng.u64(0..=ceiling))
            }
        };
        wait.max(self.min_delay)
    }

    /// After failed attempt number `tries` (1 for the first), `elapsed`
    /// since the first began: retry after a wait, or stop and say why. A
    /// server's wait that the budget cannot hold stops at once: the next
    /// attempt would be refused again.
    pub fn decide(
        &self,
        tries: u32,
        failure: Failure,
        elapsed: Duration,
        rng: &mut fastrand::Rng,
    ) -> Decision {
        if !failure.retryable || (failure.rate_limited && !self.wait_out_rate_limits) {
            return Decision::Final;
        }
        if tries >= self.max_attempts {
            return Decision::Exhausted;
        }
        let wait = self.delay(tries.saturating_sub(1), failure.retry_after, rng);
        if let Some(budget) = self.budget {
            let left = budget.saturating_sub(elapsed);
            let wanted = failure.retry_after.unwrap_or(wait).max(wait);
            if wanted >= left {
                return Decision::OutOfTime { wanted };
            }
        }
        Decision::Retry(wait)
    }

    /// Time left in the budget, `None` without one.
    pub fn left(&self, elapsed: Duration) -> Option<Duration> {
        self.budget.map(|b| b.saturating_sub(elapsed))
    }
}

/// What an attempt's failure says about the next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Failure {
    pub retryable: bool,
    /// The forge's rate limit.
    pub rate_limited: bool,
    /// The wait the server asked for, if any.
    pub retry_after: Option<Duration>,
}

/// How an HTTP error status is to be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusAdvice {
    /// 5xx, 429 or a rate limit: another attempt may succeed.
    pub retryable: bool,
    /// GitHub's rate limit (403 or 429 with `retry-after`, or with
    /// `x-ratelimit-remaining: 0`).
    pub rate_limited: bool,
    /// How long the server asked to wait (`retry-after`, or until
    /// `x-ratelimit-reset` when no request is left).
    pub retry_after: Option<Duration>,
}

/// Reads an error answer as GitHub means it: 5xx and 429 are worth
/// retrying; a 403 is final unless it is a rate limit (`retry-after`, or
/// `x-ratelimit-remaining: 0` with `x-ratelimit-reset`). `header` looks up
/// a response header by lower-case name.
pub fn advise<'a>(
    code: u16,
    header: impl Fn(&str) -> Option<&'a str>,
    now: SystemTime,
) -> StatusAdvice {
    let retry_after = header("retry-after").and_then(|v| parse_retry_after(v, now));
    let exhausted = header("x-ratelimit-remaining").is_some_and(|v| v.trim() == "0");
    let reset = if exhausted {
        header("x-ratelimit-reset").and_then(|v| parse_rate_limit_reset(v, now))
    } else {
        None
    };
    let rate_limited = matches!(code, 403 | 429) && (retry_after.is_some() || exhausted);
    StatusAdvice {
        retryable: code == 429 || (500..600).contains(&code) || rate_limited,
        rate_limited,
        retry_after: retry_after.or(reset),
    }
}

/// Parse a `Retry-After` value: delay seconds or an HTTP-date (RFC 9110:
/// IMF-fixdate, RFC 850 or asctime), measured from `now`. A date in the
/// past means no wait; an unparsable value (garbage, a year past 9999) is
/// ignored; a wait beyond a day is read as a day.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for u64 is still "very long".
        value
            .parse::<u64>()
            .map_or(MAX_SERVER_WAIT, Duration::from_secs)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_SERVER_WAIT))
}

/// Parse `x-ratelimit-reset` (Unix seconds) into the wait from `now`.
pub fn parse_rate_limit_reset(value: &str, now: SystemTime) -> Option<Duration> {
    let secs: u64 = value.trim().parse().ok()?;
    let wait = UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))
        .map_or(MAX_SERVER_WAIT, |at| {
            at.duration_since(now).unwrap_or(Duration::ZERO)
        });
    Some(wait.min(MAX_SERVER_WAIT))
}

/// The pace of one build's status writes: at least
/// [`MIN_STATUS_INTERVAL`] apart, and none while the forge's rate limit
/// holds.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatusPace {
    last_write: Option<Instant>,
    limited_until: Option<Instant>,
}

impl StatusPace {
    /// A write was attempted at `now`.
    pub fn wrote(&mut self, now: Instant) {
        self.last_write = Some(now);
    }

    /// The forge said to wait `wait` from `now`.
    pub fn limited_for(&mut self, now: Instant, wait: Duration) {
        let until = now.checked_add(wait.min(MAX_SERVER_WAIT));
        self.limited_until = self.limited_until.max(until);
    }

    /// Whether the rate limit still holds at `now`.
    pub fn is_limited(&self, now: Instant) -> bool {
        self.limited_until.is_some_and(|until| until > now)
    }

    /// How long to wait at `now` before the next write may go out.
    pub fn wait_before_write(&self, now: Instant) -> Duration {
        let spacing = self
            .last_write
            .and_then(|at| at.checked_add(MIN_STATUS_INTERVAL))
            .map_or(Duration::ZERO, |next| next.saturating_duration_since(now));
        let limit = self
            .limited_until
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now));
        spacing.max(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy::new(6, Duration::from_millis(500), Duration::from_secs(30))
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = policy();
        assert_eq!(p.backoff_ceiling(0), Duration::from_millis(500));
        assert_eq!(p.backoff_ceiling(1), Duration::from_secs(1));
        assert_eq!(p.backoff_ceiling(3), Duration::from_secs(4));
        assert_eq!(p.backoff_ceiling(6), Duration::from_secs(30));
        assert_eq!(p.backoff_ceiling(200), Duration::from_secs(30));
    }

    #[test]
    fn jittered_delay_stays_within_the_ceiling_and_varies() {
        let p = policy();
        let mut rng = fastrand::Rng::with_seed(7);
        let delays: Vec<Duration> = (0..200).map(|_| p.delay(2, None, &mut rng)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(2)));
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert!(distinct.len() > 50, "full jitter spreads the waits");
    }

    #[test]
    fn retry_after_wins_and_is_capped() {
        let p = policy();
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(7)), &mut rng),
            Duration::from_secs(7)
        );
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(3600)), &mut rng),
            Duration::from_secs(30)
        );
        let greedy = RetryPolicy::new(3, Duration::ZERO, Duration::from_secs(3600));
        assert_eq!(greedy.max_delay, MAX_WAIT, "no policy waits longer");
    }

    #[test]
    fn retry_after_parses_seconds_and_http_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sat, 05 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            parse_retry_after("Sun, 06 Foo 1994 08:50:07 GMT", now),
            None
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:10 GMT", UNIX_EPOCH),
            Some(Duration::from_secs(10))
        );
        let leap_eve = UNIX_EPOCH + Duration::from_secs(951_782_400 - 60);
        assert_eq!(
            parse_retry_after("Tue, 29 Feb 2000 00:00:00 GMT", leap_eve),
            Some(Duration::from_secs(60))
        );
        // RFC 850 and asctime, which RFC 9110 still asks recipients to read.
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun Nov  6 08:50:07 1994", now),
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn hostile_retry_after_values_neither_panic_nor_wait_forever() {
        let now = SystemTime::now();
        // Issue 11: this date overflowed the clock and aborted forgexec.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 400000000000 08:49:37 GMT", now),
            None
        );
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now),
            Some(MAX_SERVER_WAIT)
        );
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(MAX_SERVER_WAIT)
        );
        assert_eq!(
            parse_retry_after("18446744073709551615", now),
            Some(MAX_SERVER_WAIT)
        );
        for garbage in [
            "",
            "-1",
            "1.5",
            "+3",
            "\u{0}",
            "Sun, 32 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_retry_after(garbage, now), None, "{garbage:?}");
        }
        let mut rng = fastrand::Rng::with_seed(3);
        let wait = policy().delay(0, parse_retry_after("99999999999", now), &mut rng);
        assert_eq!(wait, MAX_WAIT);
    }

    #[test]
    fn rate_limit_resets_are_unix_seconds() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(
            parse_rate_limit_reset("1030", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_rate_limit_reset("10", now), Some(Duration::ZERO));
        assert_eq!(
            parse_rate_limit_reset(&u64::MAX.to_string(), now),
            Some(MAX_SERVER_WAIT)
        );
        assert_eq!(parse_rate_limit_reset("soon", now), None);
    }

    #[test]
    fn github_rate_limits_are_told_from_final_403s() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let headers = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
        };
        let secondary = advise(403, headers(&[("retry-after", "20")]), now);
        assert!(secondary.rate_limited && secondary.retryable);
        assert_eq!(secondary.retry_after, Some(Duration::from_secs(20)));
        let primary = advise(
            403,
            headers(&[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1012"),
            ]),
            now,
        );
        assert!(primary.rate_limited && primary.retryable);
        assert_eq!(primary.retry_after, Some(Duration::from_secs(12)));
        let too_many = advise(429, headers(&[]), now);
        assert!(too_many.retryable && !too_many.rate_limited);
        let forbidden = advise(403, headers(&[("x-ratelimit-remaining", "4999")]), now);
        assert_eq!(forbidden, StatusAdvice::default(), "a plain 403 is final");
        assert!(advise(502, headers(&[]), now).retryable);
        assert!(!advise(404, headers(&[("retry-after", "1")]), now).retryable);
    }

    #[test]
    fn status_retries_are_a_second_apart_at_least() {
        let p = RetryPolicy::for_status(FINAL_STATUS_BUDGET);
        let mut rng = fastrand::Rng::with_seed(9);
        for retry in 0..8 {
            assert!(p.delay(retry, None, &mut rng) >= MIN_STATUS_INTERVAL);
        }
        assert_eq!(
            p.delay(0, Some(Duration::ZERO), &mut rng),
            MIN_STATUS_INTERVAL
        );
    }

    #[test]
    fn a_budget_stops_retries_that_cannot_fit() {
        let p = RetryPolicy::new(10, Duration::from_millis(100), MAX_WAIT)
            .within(Duration::from_secs(10));
        let mut rng = fastrand::Rng::with_seed(5);
        let retry = |after| Failure {
            retryable: true,
            rate_limited: false,
            retry_after: Some(Duration::from_secs(after)),
        };
        assert_eq!(
            p.decide(1, retry(2), Duration::from_secs(1), &mut rng),
            Decision::Retry(Duration::from_secs(2))
        );
        assert_eq!(
            p.decide(1, retry(60), Duration::ZERO, &mut rng),
            Decision::OutOfTime {
                wanted: Duration::from_secs(60)
            }
        );
        assert_eq!(
            p.decide(2, retry(2), Duration::from_secs(9), &mut rng),
            Decision::OutOfTime {
                wanted: Duration::from_secs(2)
            }
        );
        assert_eq!(
            p.decide(10, retry(1), Duration::ZERO, &mut rng),
            Decision::Exhausted
        );
        assert_eq!(
            p.decide(1, Failure::default(), Duration::ZERO, &mut rng),
            Decision::Final
        );
        let limited = Failure {
            rate_limited: true,
            ..retry(1)
        };
        assert_eq!(
            p.decide(1, limited, Duration::ZERO, &mut rng),
            Decision::Retry(Duration::from_secs(1))
        );
        assert_eq!(
            RetryPolicy::for_pending_status().decide(1, limited, Duration::ZERO, &mut rng),
            Decision::Final,
            "a pending update does not wait out a rate limit"
        );
    }

    #[test]
    fn status_writes_are_spaced_and_held_while_limited() {
        let start = Instant::now();
        let mut pace = StatusPace::default();
        assert_eq!(pace.wait_before_write(start), Duration::ZERO);
        pace.wrote(start);
        assert_eq!(pace.wait_before_write(start), MIN_STATUS_INTERVAL);
        let later = start + Duration::from_millis(400);
        assert_eq!(pace.wait_before_write(later), Duration::from_millis(600));
        pace.limited_for(later, Duration::from_secs(5));
        assert!(pace.is_limited(later));
        assert_eq!(pace.wait_before_write(later), Duration::from_secs(5));
        assert!(!pace.is_limited(later + Duration::from_secs(5)));
        // An absurd wait neither overflows nor shortens a longer hold.
        pace.limited_for(later, Duration::MAX);
        pace.limited_for(later, Duration::from_secs(1));
        assert!(pace.is_limited(later + Duration::from_secs(3600)));
    }
}
