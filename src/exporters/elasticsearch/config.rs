//! Configuration of the `elasticsearch` exporter. Key names follow the OpenTelemetry Collector's
//! elasticsearchexporter where the idea is the same (`endpoints`, `logs_index`-style names,
//! `flush.bytes`, `num_workers`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::shared::{validate_common, BatchConfig, QueueConfig, RetryConfig};
use crate::shared::{ByteSize, Issues};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchExporterConfig {
    /// Node URLs, e.g. `["https://es1:9200", "https://es2:9200"]`; requests go round robin.
    pub endpoints: Vec<String>,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub tls: EsTlsConfig,
    /// Where span documents go: a data stream (default) or daily indices.
    #[serde(default)]
    pub mapping: TargetConfig,
    /// The orders entity index; off when `index` is empty.
    #[serde(default)]
    pub orders: OrdersConfig,
    /// Where order monitors keep their state when this exporter is the read API's backend.
    #[serde(default)]
    pub monitors: MonitorStateConfig,
    /// Install the index template (and, for data streams, a lifecycle policy) at start.
    #[serde(default)]
    pub templates: TemplatesConfig,
    #[serde(default)]
    pub flush: FlushConfig,
    /// Bulk requests in flight at once, per export call.
    #[serde(default = "default_in_flight")]
    pub max_requests_in_flight: usize,
    /// Bulk items (429 / 5xx) are retried this many times within one export call before the
    /// batch goes back to `retry_on_failure`.
    #[serde(default = "default_item_retries")]
    pub item_retries: u32,
    /// JSON lines file for documents Elasticsearch refused for good (4xx other than 409/429).
    #[serde(default = "default_dead_letter")]
    pub dead_letter_path: PathBuf,
    #[serde(default = "default_true")]
    pub compression: bool,
    /// Per bulk request.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default)]
    pub retry_on_failure: RetryConfig,
    #[serde(default)]
    pub sending_queue: QueueConfig,
    #[serde(default)]
    pub batch: BatchConfig,
}

fn default_in_flight() -> usize {
    2
}
fn default_item_retries() -> u32 {
    3
}
fn default_dead_letter() -> PathBuf {
    PathBuf::from("./data/elasticsearch-dead-letter.jsonl")
}
fn default_true() -> bool {
    true
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// One of: `username` + `password` (basic), `api_key` (the base64 `id:key` Elasticsearch
/// prints), or `bearer_token`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub username: Option<String>,
    pub password: Option<String>,
    pub api_key: Option<String>,
    pub bearer_token: Option<String>,
}

/// The credentials to send; an empty value (an unset `${env:...:-}`) counts as absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    Basic(String, String),
    ApiKey(String),
    Bearer(String),
}

impl AuthConfig {
    fn given(value: &Option<String>) -> Option<&String> {
        value.as_ref().filter(|v| !v.is_empty())
    }

    pub fn resolve(&self) -> Auth {
        match (Self::given(&self.username), Self::given(&self.password), Self::given(&self.api_key), Self::given(&self.bearer_token)) {
            (Some(u), Some(p), _, _) => Auth::Basic(u.clone(), p.clone()),
            (_, _, Some(k), _) => Auth::ApiKey(k.clone()),
            (_, _, _, Some(t)) => Auth::Bearer(t.clone()),
            _ => Auth::None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EsTlsConfig {
    /// PEM file with the CA certificate to trust (e.g. Elasticsearch's `http_ca.crt`).
    pub ca_file: Option<PathBuf>,
    /// Skip certificate checks; for a throw-away test cluster only.
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetMode {
    /// `create` into a data stream named `traces-{dataset}-{namespace}`.
    #[default]
    DataStream,
    /// `create` into `{index}-YYYY.MM.DD`, the date of the span's start (so a re-sent span
    /// always lands in the same index).
    Index,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TargetConfig {
    pub mode: TargetMode,
    pub dataset: String,
    pub namespace: String,
    /// Prefix of the daily indices in `index` mode.
    pub index: String,
}

impl Default for TargetConfig {
    fn default() -> Self {
        TargetConfig {
            mode: TargetMode::DataStream,
            dataset: "tracegate".into(),
            namespace: "default".into(),
            index: "tracegate-spans".into(),
        }
    }
}

impl TargetConfig {
    pub fn data_stream(&self) -> String {
        format!("traces-{}-{}", self.dataset, self.namespace)
    }
    /// The index pattern that matches every span document, for searches and templates.
    pub fn pattern(&self) -> String {
        match self.mode {
            TargetMode::DataStream => self.data_stream(),
            TargetMode::Index => format!("{}-*", self.index),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrdersConfig {
    /// Name of the orders index; empty turns it off.
    pub index: String,
    /// Timeline events kept per order document (the latest are dropped first... no: the
    /// earliest are kept, since they tell how the order started).
    pub max_events: usize,
    /// Attempts per order update when instances race on the same order.
    pub max_conflict_retries: u32,
}

impl Default for OrdersConfig {
    fn default() -> Self {
        OrdersConfig { index: "tracegate-orders".into(), max_events: 200, max_conflict_retries: 10 }
    }
}

/// The order monitors' state index (docs/monitors.md): one document per (monitor, rule, order),
/// its clock, its alert and the notices not yet confirmed; instances coordinate on it with
/// conditional writes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorStateConfig {
    pub index: String,
}

impl Default for MonitorStateConfig {
    fn default() -> Self {
        MonitorStateConfig { index: "tracegate-monitor-clocks".into() }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TemplatesConfig {
    pub install: bool,
    /// Documents older than this are deleted by the lifecycle policy (data streams); `0s` keeps
    /// them for ever.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for TemplatesConfig {
    fn default() -> Self {
        TemplatesConfig { install: true, retention: Duration::from_secs(30 * 24 * 3600) }
    }
}

/// When a bulk request is cut: by documents (`batch.max_spans`), by time (`batch.max_wait`) and
/// by body size here.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlushConfig {
    /// Largest uncompressed bulk body; a larger batch is sent as several requests.
    pub bytes: ByteSize,
}

impl Default for FlushConfig {
    fn default() -> Self {
        FlushConfig { bytes: ByteSize(5 << 20) }
    }
}

impl ElasticsearchExporterConfig {
    pub fn validate(&self, path: &str, issues: &mut Issues) {
        if self.endpoints.is_empty() {
            issues.push(format!("{path}.endpoints"), "needs at least one URL, e.g. http://127.0.0.1:9200");
        }
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            let at = format!("{path}.endpoints[{i}]");
            match endpoint.parse::<http::Uri>() {
                Ok(uri) if matches!(uri.scheme_str(), Some("http") | Some("https")) && uri.host().is_some() => {}
                Ok(_) => issues.push(at, format!("{endpoint:?} needs a scheme and host: http://host:9200 or https://host:9200")),
                Err(e) => issues.push(at, format!("{endpoint:?} is not a URL: {e}")),
            }
        }
        let a = &self.auth;
        let given = |v: &Option<String>| AuthConfig::given(v).is_some();
        let kinds = [given(&a.username) || given(&a.password), given(&a.api_key), given(&a.bearer_token)];
        if kinds.iter().filter(|k| **k).count() > 1 {
            issues.push(format!("{path}.auth"), "choose one of username/password, api_key or bearer_token");
        }
        if given(&a.username) != given(&a.password) {
            issues.push(format!("{path}.auth"), "username and password go together");
        }
        crate::shared::check_writable(issues, format!("{path}.dead_letter_path"), &self.dead_letter_path);
        if let Some(ca) = &self.tls.ca_file {
            if !ca.is_file() {
                issues.push(format!("{path}.tls.ca_file"), format!("{} does not exist", ca.display()));
            }
        }
        let name_ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.');
        if !name_ok(&self.mapping.dataset) {
            issues.push(format!("{path}.mapping.dataset"), "lower-case letters, digits, '_' and '.' only (no '-')");
        }
        if !name_ok(&self.mapping.namespace) {
            issues.push(format!("{path}.mapping.namespace"), "lower-case letters, digits, '_' and '.' only (no '-')");
        }
        let index_ok = |s: &str| {
            !s.is_empty()
                && !s.starts_with(['-', '_', '+'])
                && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
        };
        if !index_ok(&self.mapping.index) {
            issues.push(format!("{path}.mapping.index"), "an index name: lower-case letters, digits, '-', '_', '.'");
        }
        if !self.orders.index.is_empty() && !index_ok(&self.orders.index) {
            issues.push(
                format!("{path}.orders.index"),
                "an index name: lower-case letters, digits, '-', '_', '.' (empty turns the orders index off)",
            );
        }
        if !index_ok(&self.monitors.index) {
            issues.push(format!("{path}.monitors.index"), "an index name: lower-case letters, digits, '-', '_', '.'");
        }
        if self.orders.max_events == 0 {
            issues.push(format!("{path}.orders.max_events"), "must be at least 1");
        }
        if self.max_requests_in_flight == 0 {
            issues.push(format!("{path}.max_requests_in_flight"), "must be at least 1");
        }
        if self.flush.bytes.0 < 1024 {
            issues.push(format!("{path}.flush.bytes"), "must be at least 1KiB");
        }
        if self.timeout.is_zero() {
            issues.push(format!("{path}.timeout"), "must be greater than 0");
        }
        validate_common(path, &self.sending_queue, &self.batch, &self.retry_on_failure, issues);
    }
}
