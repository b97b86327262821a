//! Configuration of the `alertmanager` notifier.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::notifiers::delivery::{default_retry, default_timeout, DeliveryConfig};
use crate::notifiers::tls::{http_url, NotifierTls};
use crate::shared::{Issues, RetryConfig};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Every Alertmanager of the cluster (`http://alertmanager:9093`): clients of an HA cluster
    /// send to each, the cluster deduplicates. `/api/v2/alerts` is appended.
    pub endpoints: Vec<String>,
    /// The `alertname` label.
    #[serde(default = "default_alertname")]
    pub alertname: String,
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    /// Sent as `Authorization: Bearer ...` (an Alertmanager behind an authenticating proxy).
    #[serde(default)]
    pub bearer_token: Option<String>,
    #[serde(default)]
    pub tls: NotifierTls,
    /// Per attempt (all endpoints are tried at once).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "default_retry", alias = "retry")]
    pub retry_on_failure: RetryConfig,
    /// A JSON line per notice given up on.
    #[serde(default)]
    pub dead_letter: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password: String,
}

fn default_alertname() -> String {
    "TracegateOrderLate".into()
}

impl AlertmanagerConfig {
    pub fn delivery(&self) -> DeliveryConfig {
        DeliveryConfig { timeout: self.timeout, retry: self.retry_on_failure.clone(), dead_letter: self.dead_letter.clone() }
    }

    pub fn validate(&self, path: &str, issues: &mut Issues) {
        if self.endpoints.is_empty() {
            issues.push(format!("{path}.endpoints"), "at least one Alertmanager URL is needed (e.g. http://alertmanager:9093)");
        }
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            match http_url(endpoint) {
                Ok(uri) if uri.query().is_some() => {
                    issues.push(format!("{path}.endpoints[{i}]"), format!("{endpoint:?}: no query string; /api/v2/alerts is appended"))
                }
                Ok(_) => {}
                Err(e) => issues.push(format!("{path}.endpoints[{i}]"), crate::shared::error_chain(&e)),
            }
        }
        if self.alertname.is_empty() {
            issues.push(format!("{path}.alertname"), "must not be empty");
        }
        if self.basic_auth.is_some() && self.bearer_token.is_some() {
            issues.push(format!("{path}.bearer_token"), "set either basic_auth or bearer_token, not both");
        }
        if let Some(token) = &self.bearer_token {
            if http::HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
                issues.push(format!("{path}.bearer_token"), "not a valid header value");
            }
        }
        self.tls.validate(path, issues);
        self.delivery().validate(path, issues);
    }
}
