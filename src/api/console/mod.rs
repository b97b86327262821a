//! The support console: server-rendered HTML pages on the API port (`/`, `/orders/{id}`,
//! `/traces/{id}`, `/alerts`, `/admin`), for people in a browser.
//!
//! Every page is a compiled `maud` template (values escaped by default), served with a strict
//! Content-Security-Policy: no inline script or style, no third-party origin, no framing. The
//! little JavaScript there is (live updates, local times) and the stylesheet are files embedded
//! in the binary and served from `/static/`. Pages pass the same door as the JSON API (rules in
//! `auth::API_ROUTES`, actions `console.*`), which answers them with HTML: a sign-in redirect
//! instead of 401, a page instead of 403.

pub(super) mod admin;
pub(super) mod alerts;
pub(super) mod assets;
mod form;
mod layout;
pub(super) mod order;
pub(super) mod orders;
pub(super) mod trace;

pub use layout::{error_pages, forbidden, unauthenticated, Ctx, Nav, PageError};
use layout::{filter_error, more_href, path_param, path_segment, thead};

/// True for the door's rules that serve console pages (they get HTML refusals).
pub fn is_page_action(action: &str) -> bool {
    action.starts_with("console.")
}

/// A duration for people: `350 ms`, `12.4 s`, `5m 03s`, `1h 02m`, `2d 4h`.
pub fn fmt_duration(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "—".into();
    }
    let sign = if seconds < 0.0 { "-" } else { "" };
    let s = seconds.abs();
    let text = if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 60.0 {
        format!("{s:.1} s")
    } else {
        let whole = s.round() as u64;
        let (d, h, m, sec) = (whole / 86_400, whole / 3600 % 24, whole / 60 % 60, whole % 60);
        if d > 0 {
            format!("{d}d {h}h")
        } else if h > 0 {
            format!("{h}h {m:02}m")
        } else {
            format!("{m}m {sec:02}s")
        }
    };
    format!("{sign}{text}")
}

#[cfg(test)]
mod tests {
    use super::fmt_duration;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(fmt_duration(0.35), "350 ms");
        assert_eq!(fmt_duration(12.44), "12.4 s");
        assert_eq!(fmt_duration(303.0), "5m 03s");
        assert_eq!(fmt_duration(3720.0), "1h 02m");
        assert_eq!(fmt_duration(187_200.0), "2d 4h");
        assert_eq!(fmt_duration(-90.0), "-1m 30s");
    }
}
