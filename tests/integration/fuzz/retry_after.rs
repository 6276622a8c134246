//! `Retry-After` and GitHub's rate-limit headers: any value parses without
//! a panic and never asks for a wait beyond the documented caps; valid
//! HTTP-dates and delay-seconds parse to what they say.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use forgexec::http::policy::{
    advise, parse_rate_limit_reset, parse_retry_after, RetryPolicy, MAX_SERVER_WAIT, MAX_WAIT,
};
use proptest::prelude::*;

use super::fuzz;

/// A `now` anywhere from 1970 to 2200.
fn now() -> impl Strategy<Value = SystemTime> {
    (0u64..7_258_118_400).prop_map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

#[test]
fn any_value_parses_without_panic_within_the_caps() {
    let value = prop_oneof![
        any::<String>(),
        "[0-9]{0,40}",
        // HTTP-date shapes with any numbers in them, years far out included.
        (
            "(Mon|Tue|Sun|Xyz|)",
            0u64..100,
            "(Jan|Feb|Nov|Dec|Foo)",
            any::<u64>(),
            0u64..100,
            0u64..100,
            0u64..100,
            "( GMT| UTC|)"
        )
            .prop_map(|(wd, d, m, y, h, mi, s, z)| format!(
                "{wd}, {d:02} {m} {y} {h:02}:{mi:02}:{s:02}{z}"
            )),
    ];
    fuzz(
        "retry_after_any",
        (value, now(), any::<u16>(), 0u32..10),
        |(value, now, code, retry)| {
            let wait = parse_retry_after(&value, now);
            if let Some(wait) = wait {
                prop_assert!(wait <= MAX_SERVER_WAIT, "{value:?} → {wait:?}");
            }
            if let Some(reset) = parse_rate_limit_reset(&value, now) {
                prop_assert!(reset <= MAX_SERVER_WAIT);
            }
            let mut rng = fastrand::Rng::with_seed(u64::from(retry));
            let delay = RetryPolicy::default().delay(retry, wait, &mut rng);
            prop_assert!(delay <= MAX_WAIT);
            let headers = [
                ("retry-after", value.as_str()),
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", value.as_str()),
            ];
            let advice = advise(
                code,
                |name| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v),
                now,
            );
            prop_assert!(advice.retry_after.is_none_or(|w| w <= MAX_SERVER_WAIT));
            if code == 403 {
                prop_assert!(advice.rate_limited && advice.retryable);
            }
            Ok(())
        },
    );
}

#[test]
fn valid_dates_and_seconds_mean_what_they_say() {
    // 1970-01-01 to 9999-12-31, whole seconds.
    let at = 0u64..253_402_300_799;
    fuzz(
        "retry_after_valid",
        (at, now(), any::<u64>()),
        |(at, now, seconds)| {
            let at = UNIX_EPOCH + Duration::from_secs(at);
            let date = httpdate::fmt_http_date(at);
            let expected = at
                .duration_since(now)
                .unwrap_or(Duration::ZERO)
                .min(MAX_SERVER_WAIT);
            prop_assert_eq!(parse_retry_after(&date, now), Some(expected), "{}", date);
            prop_assert_eq!(
                parse_retry_after(&seconds.to_string(), now),
                Some(Duration::from_secs(seconds).min(MAX_SERVER_WAIT))
            );
            Ok(())
        },
    );
}
