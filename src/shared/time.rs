//! RFC 3339 timestamps <-> Unix nanoseconds, as the store, the read API and the order-events
//! receiver show and read them.
//!
//! Output is always UTC with nine fractional digits (`2026-11-20T09:00:00.000000000Z`), so the
//! strings sort like the times. Input takes any offset (`Z`, `+01:00`, `-05:30`) and up to nine
//! fractional digits; `humantime` reads only `Z`, hence the small parser below.

use std::time::{Duration, UNIX_EPOCH};

/// `ns` since the Unix epoch as RFC 3339 UTC with nanoseconds.
pub fn format_rfc3339_nanos(ns: u64) -> String {
    let mut text = String::with_capacity(30);
    write_rfc3339_nanos(&mut text, ns);
    text
}

/// [`format_rfc3339_nanos`] written into `out` (e.g. a document being encoded), without a
/// `String` of its own.
pub fn write_rfc3339_nanos(out: &mut impl std::fmt::Write, ns: u64) {
    // humantime's formatter fails only when `out` does; neither a `String` nor a `BytesMut` does.
    let _ = write!(out, "{}", humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(ns)));
}

/// Text that is not an RFC 3339 time, and what about it is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an RFC 3339 time ({problem}); write e.g. 2026-11-20T10:00:00Z")]
pub struct TimeError {
    pub text: String,
    pub problem: &'static str,
}

/// Parses an RFC 3339 date-time (`YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)`) into Unix
/// nanoseconds. Times before 1970 are refused: spans cannot carry them.
pub fn parse_rfc3339(text: &str) -> Result<u64, TimeError> {
    let fail = |problem: &'static str| TimeError { text: text.to_string(), problem };
    let b = text.as_bytes();
    if b.len() < 20 {
        return Err(fail("too short"));
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(range)?;
        digits.iter().all(u8::is_ascii_digit).then(|| digits.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) =
        (num(0..4), num(5..7), num(8..10), num(11..13), num(14..16), num(17..19))
    else {
        return Err(fail("digits expected"));
    };
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return Err(fail("separators"));
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(fail("no such date"));
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(fail("no such time of day"));
    }
    let mut pos = 19;
    let mut nanos = 0i64;
    if b[pos] == b'.' {
        pos += 1;
        let start = pos;
        while pos < b.len() && b[pos].is_ascii_digit() {
            pos += 1;
        }
        let digits = &b[start..pos];
        if digits.is_empty() || digits.len() > 9 {
            return Err(fail("one to nine fractional digits"));
        }
        nanos = digits.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')) * 10i64.pow(9 - digits.len() as u32);
    }
    let offset_seconds = match &b[pos..] {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (Some(h), Some(m)) = (num(pos + 1..pos + 3), num(pos + 4..pos + 6)) else {
                return Err(fail("offset digits"));
            };
            if h > 23 || m > 59 {
                return Err(fail("offset out of range"));
            }
            let s = h * 3600 + m * 60;
            if *sign == b'+' {
                s
            } else {
                -s
            }
        }
        _ => return Err(fail("offset Z or +HH:MM expected at the end")),
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    if seconds < 0 {
        return Err(fail("before 1970"));
    }
    // Unix nanoseconds in a u64 end in the year 2554.
    u64::try_from(seconds)
        .ok()
        .and_then(|s| s.checked_mul(1_000_000_000))
        .and_then(|ns| ns.checked_add(nanos as u64))
        .ok_or_else(|| fail("after 2554"))
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The wall clock as Unix nanoseconds (0 if the clock is before 1970).
pub fn now_unix_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// User plus system CPU time of this process, all threads (`getrusage`, microsecond resolution).
pub fn process_cpu_time() -> std::time::Duration {
    cpu_time(libc::RUSAGE_SELF)
}

/// User plus system CPU time of the calling thread (`getrusage`, microsecond resolution).
pub fn thread_cpu_time() -> std::time::Duration {
    cpu_time(libc::RUSAGE_THREAD)
}

fn cpu_time(who: libc::c_int) -> std::time::Duration {
    // SAFETY: getrusage writes into the zeroed struct it is given and reads nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return std::time::Duration::ZERO;
    }
    let tv = |t: libc::timeval| std::time::Duration::from_secs(t.tv_sec as u64) + std::time::Duration::from_micros(t.tv_usec as u64);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 1_795_168_800_000_000_000; // 2026-11-20T10:00:00Z

    #[test]
    fn reads_every_offset_form() {
        assert_eq!(parse_rfc3339("2026-11-20T10:00:00Z"), Ok(BASE));
        assert_eq!(parse_rfc3339("2026-11-20t10:00:00z"), Ok(BASE));
        assert_eq!(parse_rfc3339("2026-11-20T11:00:00+01:00"), Ok(BASE));
        assert_eq!(parse_rfc3339("2026-11-20T04:30:00-05:30"), Ok(BASE));
        assert_eq!(parse_rfc3339("2026-11-20T10:00:00.5Z"), Ok(BASE + 500_000_000));
        assert_eq!(parse_rfc3339("2026-11-20T10:00:00.000000001Z"), Ok(BASE + 1));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_rfc3339("2024-02-29T00:00:00Z"), Ok(1_709_164_800_000_000_000));
    }

    #[test]
    fn refuses_what_is_not_a_time() {
        for bad in [
            "",
            "2026-11-20",
            "2026-11-20T10:00:00",
            "2026-11-20T10:00:00+0100",
            "2026-13-20T10:00:00Z",
            "2026-02-29T10:00:00Z",
            "2026-11-20T24:00:00Z",
            "2026-11-20T10:00:60Z",
            "2026-11-20T10:00:00.Z",
            "2026-11-20T10:00:00.1234567890Z",
            "1969-12-31T23:59:59Z",
            "2026-11-20T10:00:00Zjunk",
            "２０26-11-20T10:00:00Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn formats_utc_with_nanoseconds_and_round_trips() {
        assert_eq!(format_rfc3339_nanos(BASE + 12_500_000), "2026-11-20T10:00:00.012500000Z");
        assert_eq!(parse_rfc3339(&format_rfc3339_nanos(BASE + 7)), Ok(BASE + 7));
    }
}
