//! What stops `tracegate demo`.

use std::time::Duration;

/// Errors of `tracegate demo`; each says what to check.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("invalid {what} URL {url:?}: expected http://host:port")]
    InvalidUrl { what: &'static str, url: String },
    #[error(
        "no gateway answered at {endpoint} within {waited:?} (last error: {last_error}); start one \
         (`target/release/tracegate`, or `cargo run --release`) or pass its address"
    )]
    GatewayUnreachable { endpoint: String, waited: Duration, last_error: String },
    #[error("the gateway refused the {what}: {reply}")]
    Refused { what: &'static str, reply: String },
    #[error(
        "the read API at {api} answers {status}: this gateway requires a token, and `tracegate demo` \
         is for a local gateway without authentication (the built-in configuration)"
    )]
    NeedsToken { api: String, status: u16 },
    #[error("order {order_id} was not readable at {url} within {waited:?} (last reply: {last_reply})")]
    NotReadable { order_id: String, url: String, waited: Duration, last_reply: String },
}
