//! The `webhook` notifier: a JSON body (`facts::notice_json`) POSTed to one URL, signed with
//! HMAC-SHA256 the way Stripe and GitHub sign theirs, so that the receiver can check who sent
//! it and refuse a replay:
//!
//! - `X-Tracegate-Timestamp: <Unix seconds>` (of this attempt);
//! - `X-Tracegate-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`;
//! - `Idempotency-Key: {monitor}/{rule}/{order_id}/{kind}` (also the body's `id`).
//!
//! 2xx is delivered; 5xx, 408, 429 and connection failures are retried; any other 4xx is
//! permanent.

mod config;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use sha2::Sha256;

pub use config::WebhookConfig;

use super::http::HttpClient;
use super::{facts, Notice, NotifierSetupError, NotifyError};
use crate::shared::now_unix_nanos;

pub const TIMESTAMP_HEADER: &str = "x-tracegate-timestamp";
pub const SIGNATURE_HEADER: &str = "x-tracegate-signature";
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

pub struct WebhookNotifier {
    uri: Uri,
    secret: Option<Vec<u8>>,
    headers: HeaderMap,
    client: HttpClient,
}

impl WebhookNotifier {
    pub fn new(config: &WebhookConfig) -> Result<WebhookNotifier, NotifierSetupError> {
        let uri = super::tls::http_url(&config.url)?;
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| NotifierSetupError::Header(name.clone(), e.into()))?;
            let mut value = HeaderValue::from_str(value).map_err(|e| NotifierSetupError::Header(name.to_string(), e.into()))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let client = HttpClient::new(config.tls.ca_file.as_deref(), config.timeout)?;
        Ok(WebhookNotifier { uri, secret: config.secret.as_ref().map(|s| s.as_bytes().to_vec()), headers, client })
    }

    /// One attempt, signed afresh (a retry minutes later carries a current timestamp).
    pub async fn send(&self, notice: &Notice) -> Result<(), NotifyError> {
        let body = facts::notice_json(notice).to_string();
        let mut headers = self.headers.clone();
        let id = HeaderValue::from_str(&facts::idempotency_id(notice))
            .map_err(|_| NotifyError::Permanent("the notice id is not a valid header value".into()))?;
        headers.insert(HeaderName::from_static(IDEMPOTENCY_HEADER), id);
        if let Some(secret) = &self.secret {
            let timestamp = now_unix_nanos() / 1_000_000_000;
            headers.insert(HeaderName::from_static(TIMESTAMP_HEADER), HeaderValue::from(timestamp));
            let signed = signature(secret, timestamp, body.as_bytes());
            // Hex digits are a valid header value.
            headers.insert(HeaderName::from_static(SIGNATURE_HEADER), HeaderValue::from_str(&signed).expect("hex is a header value"));
        }
        self.client.post_json(&self.uri, &headers, Bytes::from(body)).await
    }
}

/// `sha256=<hex>` of HMAC-SHA256 keyed with `secret` over `"{timestamp}.{body}"`.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_hmac() {
        // Python: hmac.new(b"key", b"1700000000.{}", hashlib.sha256).hexdigest()
        assert_eq!(signature(b"key", 1_700_000_000, b"{}"), "sha256=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae");
    }
}
