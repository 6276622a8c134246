//! Calendar arithmetic, in one place and from `humantime`: the UTC fields
//! of a time (zip timestamps, build ids) and Docker's RFC 3339 timestamps.

use std::fmt::Write;
use std::time::SystemTime;

/// A time's UTC calendar fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    pub millis: u16,
}

/// The UTC fields of `time`; `None` before 1970 or after 9999 (which no
/// format here can hold; a file's modification time can be either).
pub fn utc(time: SystemTime) -> Option<Utc> {
    let mut text = String::with_capacity(24);
    // humantime refuses (with a formatting error) years past 9999 and
    // panics before 1970: check that first.
    time.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    write!(text, "{}", humantime::format_rfc3339_millis(time)).ok()?;
    // `YYYY-MM-DDTHH:MM:SS.mmmZ`
    let field = |range: std::ops::Range<usize>| text.get(range)?.parse::<u16>().ok();
    Some(Utc {
        year: field(0..4)?,
        month: u8::try_from(field(5..7)?).ok()?,
        day: u8::try_from(field(8..10)?).ok()?,
        hour: u8::try_from(field(11..13)?).ok()?,
        minute: u8::try_from(field(14..16)?).ok()?,
        second: u8::try_from(field(17..19)?).ok()?,
        millis: field(20..23)?,
    })
}

/// Parses a UTC RFC 3339 timestamp with any fraction
/// (`2026-05-07T21:09:36.12Z`, as Docker writes them).
pub fn parse_utc(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn fields_of_known_times() {
        let at = |secs: u64, millis: u64| {
            utc(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis))
        };
        let fields = |u: Utc| (u.year, u.month, u.day, u.hour, u.minute, u.second, u.millis);
        assert_eq!(at(0, 0).map(fields), Some((1970, 1, 1, 0, 0, 0, 0)));
        assert_eq!(
            at(11_016 * 86_400 + 3723, 45).map(fields),
            Some((2000, 2, 29, 1, 2, 3, 45))
        );
        assert_eq!(
            at(19_723 * 86_400, 0).map(fields),
            Some((2024, 1, 1, 0, 0, 0, 0))
        );
        assert_eq!(at(253_402_300_800, 0), None, "year 10000");
        assert_eq!(utc(UNIX_EPOCH - Duration::from_secs(1)), None);
    }

    #[test]
    fn docker_timestamps_parse_and_round_trip() {
        assert_eq!(
            parse_utc("2021-03-04T05:06:07.089Z"),
            Some(UNIX_EPOCH + Duration::from_millis(1_614_834_367_089))
        );
        assert_eq!(parse_utc("1970-01-01T00:00:00Z"), Some(UNIX_EPOCH));
        assert_eq!(parse_utc("yesterday"), None);
        assert_eq!(parse_utc("2021-13-04T05:06:07Z"), None);
        for day in (0..30_000u64).step_by(997) {
            let t = UNIX_EPOCH + Duration::from_secs(day * 86_400 + 3_723);
            let u = utc(t).unwrap();
            let ts = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                u.year, u.month, u.day, u.hour, u.minute, u.second
            );
            assert_eq!(parse_utc(&ts), Some(t), "{ts}");
        }
    }
}
