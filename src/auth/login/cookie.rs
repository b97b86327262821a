//! What the browser holds and sends: the session cookie (its name and flags), the sign-in
//! binding cookie, where to go after sign-in (`?next=`), and whether a request came from our
//! own pages (`Origin` / `Sec-Fetch-Site`).

use axum::http::HeaderMap;

/// The session cookie over HTTPS: `__Host-` makes the browser insist on `Secure`, `Path=/` and
/// no `Domain`, so no other host or path can set or shadow it.
pub const SECURE_SESSION_COOKIE: &str = "__Host-tracegate_session";
/// The session cookie over plain HTTP (loopback development only).
pub const PLAIN_SESSION_COOKIE: &str = "tracegate_session";
/// Binds a sign-in under way to the browser that started it (login CSRF).
pub const SECURE_LOGIN_COOKIE: &str = "__Host-tracegate_login";
pub const PLAIN_LOGIN_COOKIE: &str = "tracegate_login";

/// The longest `?next=` followed.
const MAX_NEXT_BYTES: usize = 2048;

/// The names of the session and sign-in cookies for a deployment served over HTTPS or not.
pub fn cookie_names(secure: bool) -> (&'static str, &'static str) {
    if secure {
        (SECURE_SESSION_COOKIE, SECURE_LOGIN_COOKIE)
    } else {
        (PLAIN_SESSION_COOKIE, PLAIN_LOGIN_COOKIE)
    }
}

/// A `Set-Cookie` value: always `HttpOnly` and `SameSite=Lax`, `Secure` over HTTPS, `Path=/`
/// (a `__Host-` cookie must have it), `Max-Age` as given (0 deletes it).
pub fn set_cookie(name: &str, value: &str, max_age_secs: u64, secure: bool) -> String {
    let mut out = format!("{name}={value}; Path=/; Max-Age={max_age_secs}; HttpOnly; SameSite=Lax");
    if secure {
        out.push_str("; Secure");
    }
    out
}

/// The value of cookie `name` in the request's `Cookie` headers. A name sent twice is refused
/// (a sibling domain may have planted one of them).
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut found = None;
    for header in headers.get_all(axum::http::header::COOKIE) {
        let Ok(text) = header.to_str() else { continue };
        for pair in text.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=') {
                if k == name {
                    if found.is_some() {
                        return None;
                    }
                    found = Some(v.trim().trim_matches('"'));
                }
            }
        }
    }
    found
}

/// `?next=` when it is a path on this site: starts with one `/`, no `//` or `/\` (which
/// browsers read as another host), no scheme, no control characters or backslashes. Anything
/// else gives `None` and the caller goes to the start page.
pub fn safe_next(next: &str) -> Option<&str> {
    let ok = next.len() <= MAX_NEXT_BYTES
        && next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.chars().any(|c| c.is_control() || c.is_whitespace())
        && !next[1..].to_ascii_lowercase().starts_with("%2f")
        && !next[1..].to_ascii_lowercase().starts_with("%5c");
    ok.then_some(next)
}

/// Whether a request was made by a page of `origin` (`scheme://host:port`): its `Origin`
/// header names it, or, without `Origin`, the browser says `Sec-Fetch-Site: same-origin`.
/// A request that carries neither is not taken as same-origin.
pub fn same_origin(headers: &HeaderMap, origin: &str) -> bool {
    if let Some(sent) = headers.get(axum::http::header::ORIGIN) {
        return sent.to_str().is_ok_and(|s| s.eq_ignore_ascii_case(origin));
    }
    headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) == Some("same-origin")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::client::tests::headers;

    #[test]
    fn cookie_flags_over_https_and_over_plain_http() {
        let (session, login) = cookie_names(true);
        assert_eq!((session, login), ("__Host-tracegate_session", "__Host-tracegate_login"));
        assert_eq!(
            set_cookie(session, "abc", 3600, true),
            "__Host-tracegate_session=abc; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax; Secure"
        );
        let (session, _) = cookie_names(false);
        assert_eq!(set_cookie(session, "abc", 0, false), "tracegate_session=abc; Path=/; Max-Age=0; HttpOnly; SameSite=Lax");
    }

    #[test]
    fn cookies_are_read_and_duplicates_refused() {
        let h = headers(&[("cookie", "a=1; tracegate_session=xyz; b=2")]);
        assert_eq!(cookie_value(&h, "tracegate_session"), Some("xyz"));
        assert_eq!(cookie_value(&h, "c"), None);
        let twice = headers(&[("cookie", "tracegate_session=one"), ("cookie", "tracegate_session=two")]);
        assert_eq!(cookie_value(&twice, "tracegate_session"), None);
    }

    #[test]
    fn next_stays_on_this_site() {
        for good in ["/", "/api/v1/orders/A-1001", "/console?order=A-1#x"] {
            assert_eq!(safe_next(good), Some(good), "{good}");
        }
        for bad in [
            "https://evil.test/",
            "//evil.test",
            "/\\evil.test",
            "\\\\evil.test",
            "/%2f%2fevil.test",
            "/%5cevil.test",
            "javascript:alert(1)",
            "",
            "/a b",
            "/\tx",
            "evil",
        ] {
            assert_eq!(safe_next(bad), None, "{bad}");
        }
    }

    #[test]
    fn same_origin_by_origin_or_fetch_metadata() {
        let origin = "https://tg.test";
        assert!(same_origin(&headers(&[("origin", "https://tg.test")]), origin));
        assert!(!same_origin(&headers(&[("origin", "https://evil.test"), ("sec-fetch-site", "same-origin")]), origin));
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")]), origin));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "cross-site")]), origin));
        assert!(!same_origin(&headers(&[("origin", "null")]), origin));
        assert!(!same_origin(&HeaderMap::new(), origin));
    }
}
