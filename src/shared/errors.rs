//! Errors for logs: an error with its whole chain of causes.

/// An error with its sources, for logs; secrets in any URL it quotes are redacted.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    super::redact_urls(&out).into_owned()
}
