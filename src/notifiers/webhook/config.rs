//! Configuration of the `webhook` notifier.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::notifiers::delivery::{default_retry, default_timeout, DeliveryConfig};
use crate::notifiers::tls::{http_url, NotifierTls};
use crate::shared::{Issues, RetryConfig};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where the JSON body is POSTed.
    pub url: String,
    /// Key of the HMAC-SHA256 signature (`X-Tracegate-Signature`); without it nothing is signed.
    #[serde(default)]
    pub secret: Option<String>,
    /// Extra request headers (an API key of the receiving service, say).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub tls: NotifierTls,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "default_retry", alias = "retry")]
    pub retry_on_failure: RetryConfig,
    #[serde(default)]
    pub dead_letter: Option<PathBuf>,
}

/// Headers tracegate sets itself; a configured one would be overwritten or would break the
/// signature.
const OWN_HEADERS: [&str; 6] =
    ["content-type", "content-length", "host", super::TIMESTAMP_HEADER, super::SIGNATURE_HEADER, super::IDEMPOTENCY_HEADER];

impl WebhookConfig {
    pub fn delivery(&self) -> DeliveryConfig {
        DeliveryConfig { timeout: self.timeout, retry: self.retry_on_failure.clone(), dead_letter: self.dead_letter.clone() }
    }

    pub fn validate(&self, path: &str, issues: &mut Issues) {
        if let Err(e) = http_url(&self.url) {
            issues.push(format!("{path}.url"), crate::shared::error_chain(&e));
        }
        if self.secret.as_deref() == Some("") {
            issues.push(format!("{path}.secret"), "is empty (an unset variable?); remove the key to send unsigned");
        }
        for (name, value) in &self.headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                issues.push(format!("{path}.headers.{name}"), "not a valid header name");
            } else if OWN_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                issues.push(format!("{path}.headers.{name}"), "set by tracegate itself");
            } else if http::HeaderValue::from_str(value).is_err() {
                issues.push(format!("{path}.headers.{name}"), "not a valid header value");
            }
        }
        self.tls.validate(path, issues);
        self.delivery().validate(path, issues);
    }
}
