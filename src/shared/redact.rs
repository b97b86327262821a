//! Secrets inside URLs: `http://user:pass@host` and credential query parameters
//! (`?access_token=...`, `&sig=...`) are redacted before a URL reaches the admin configuration
//! view or a log line.

use std::borrow::Cow;
use std::sync::OnceLock;

use regex::Regex;

const REDACTED: &str = "<redacted>";

/// Query parameters that carry credentials, by exact (lower-case) name.
const SECRET_PARAMS: [&str; 14] = [
    "access_token",
    "token",
    "apikey",
    "api_key",
    "key",
    "password",
    "passwd",
    "pwd",
    "sig",
    "signature",
    "secret",
    "client_secret",
    "auth",
    "credential",
];

/// A credential parameter by name: one of [`SECRET_PARAMS`], or a name that ends like one
/// (`refresh_token`, `x-amz-signature`, `sas_key`, `x-amz-security-token`).
fn secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PARAMS.contains(&name.as_str())
        || ["token", "secret", "password", "signature", "credential", "_key", "-key", "apikey"].iter().any(|s| name.ends_with(s))
}

/// Every URL in `text` with its secrets redacted; `text` itself when it holds none.
pub fn redact_urls(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    static URL: OnceLock<Regex> = OnceLock::new();
    // The pattern is a constant that compiles.
    let url = URL.get_or_init(|| Regex::new(r#"(?i)[a-z][a-z0-9+.\-]*://[^\s"'<>`]+"#).expect("constant pattern"));
    match url.replace_all(text, |c: &regex::Captures<'_>| redact_url(&c[0]).into_owned()) {
        Cow::Borrowed(_) => Cow::Borrowed(text),
        Cow::Owned(s) if s == text => Cow::Borrowed(text),
        Cow::Owned(s) => Cow::Owned(s),
    }
}

/// One URL with its user information's password (or a lone token used as the user) and its
/// credential query parameters redacted.
pub fn redact_url(url: &str) -> Cow<'_, str> {
    let Some(scheme_end) = url.find("://") else { return Cow::Borrowed(url) };
    let rest_start = scheme_end + 3;
    let rest = &url[rest_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..rest_start]);
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.split_once(':') {
                Some((user, _)) => {
                    out.push_str(user);
                    out.push(':');
                    out.push_str(REDACTED);
                }
                None => out.push_str(REDACTED),
            }
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    let tail = &rest[authority_end..];
    let (before_fragment, fragment) = match tail.find('#') {
        Some(i) => tail.split_at(i),
        None => (tail, ""),
    };
    match before_fragment.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let params: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if secret_param(name) => format!("{name}={REDACTED}"),
                    _ => pair.to_string(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(before_fragment),
    }
    out.push_str(fragment);
    if out == url {
        Cow::Borrowed(url)
    } else {
        Cow::Owned(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_urls_are_redacted() {
        let cases = [
            ("http://user:pass@es:9200/_bulk", "http://user:<redacted>@es:9200/_bulk"),
            ("https://ghp_token123@github.com/x", "https://<redacted>@github.com/x"),
            ("https://idp/jwks?access_token=abc&kid=1", "https://idp/jwks?access_token=<redacted>&kid=1"),
            (
                "https://a/b?X-Amz-Signature=f00&X-Amz-Credential=AK&x=1#frag",
                "https://a/b?X-Amz-Signature=<redacted>&X-Amz-Credential=<redacted>&x=1#frag",
            ),
            (
                "https://hooks/abc?sig=1&apikey=2&api_key=3&key=4&password=5&token=6",
                "https://hooks/abc?sig=<redacted>&apikey=<redacted>&api_key=<redacted>&key=<redacted>&password=<redacted>&token=<redacted>",
            ),
            ("http://jaeger:4317", "http://jaeger:4317"),
            ("https://h/p?monkey=banana&page=2", "https://h/p?monkey=banana&page=2"),
        ];
        for (input, expected) in cases {
            assert_eq!(redact_url(input), expected, "{input}");
        }
        assert_eq!(
            redact_urls("error sending request for url (http://elastic:changeme@127.0.0.1:9200/_bulk): connection refused"),
            "error sending request for url (http://elastic:<redacted>@127.0.0.1:9200/_bulk): connection refused"
        );
        assert!(matches!(redact_urls("no url here"), Cow::Borrowed(_)));
    }
}
