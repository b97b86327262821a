//! The typed configuration. Component sections are read per component (see `load.rs`) so that
//! every error carries its full path; everything here denies unknown keys.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::audit::AuditConfig;
use crate::auth::AuthConfig;
// Each component kind's registry lives with its components; the configuration assembles them.
pub use crate::exporters::ExporterConfig;
pub use crate::monitors::MonitorConfig;
use crate::net::{connection_count, positive_duration, ConnectionLimits, DEFAULT_IDLE_TIMEOUT, DEFAULT_READ_HEADER_TIMEOUT};
pub use crate::notifiers::NotifierConfig;
pub use crate::processors::ProcessorConfig;
pub use crate::receivers::ReceiverConfig;
pub use crate::telemetry::{LogEncoding, LogsConfig};

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub receivers: BTreeMap<String, ReceiverConfig>,
    pub processors: BTreeMap<String, ProcessorConfig>,
    pub exporters: BTreeMap<String, ExporterConfig>,
    /// How support learns of order alerts (see `notifiers/`); monitors name them in `notify`.
    pub notifiers: BTreeMap<String, NotifierConfig>,
    /// Order monitors (see `monitors/`): thresholds on the time between statuses.
    pub monitors: BTreeMap<String, MonitorConfig>,
    pub api: ApiConfig,
    pub query: QueryConfig,
    pub service: ServiceConfig,
    /// Who may send and read (see `auth/`); no issuers = no authentication (loopback only).
    pub auth: AuthConfig,
    pub audit: AuditConfig,
    /// The configuration as read (after `${env:...}`) with every secret replaced, for the admin
    /// view.
    pub redacted: serde_json::Value,
}

/// The HTTP API and UI listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub endpoint: String,
    /// Connections served at once; one more is closed as soon as it is accepted. Unset: 4096, or
    /// fewer so that all listeners together stay under half the open-file limit.
    #[serde(deserialize_with = "connection_count")]
    pub max_connections: Option<usize>,
    /// A connection that has not sent a complete first request header within this time is closed.
    #[serde(alias = "header_read_timeout", deserialize_with = "positive_duration", serialize_with = "humantime_serde::serialize")]
    pub read_header_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed.
    #[serde(deserialize_with = "positive_duration", serialize_with = "humantime_serde::serialize")]
    pub idle_timeout: Duration,
    /// Where people reach this API and console from outside (e.g. `https://tracegate.shop.example`):
    /// notifications link to `{public_url}/orders/{id}`. Unset: notices carry no link.
    pub public_url: Option<String>,
    /// tracegate in front of a real Jaeger: its UI and API under a path of this port, after
    /// tracegate's sign-in, masking and audit (see `docs/jaeger-proxy.md`).
    pub jaeger_ui: Option<crate::api::JaegerUiConfig>,
    /// Where people open Jaeger UI (e.g. `https://tracegate.shop.example/jaeger`): the order
    /// timeline's events link to `{jaeger_ui_url}/trace/{trace_id}`. Unset: the proxy under
    /// `public_url` when both are configured, else no link.
    pub jaeger_ui_url: Option<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            endpoint: "127.0.0.1:8080".into(),
            max_connections: None,
            read_header_timeout: DEFAULT_READ_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            public_url: None,
            jaeger_ui: None,
            jaeger_ui_url: None,
        }
    }
}

impl ApiConfig {
    /// The base of the order timeline's links to Jaeger UI: `jaeger_ui_url`, else the proxy
    /// (`api.jaeger_ui.path`) under `public_url`.
    pub fn jaeger_link_base(&self) -> Option<String> {
        let base = match (&self.jaeger_ui_url, &self.public_url, &self.jaeger_ui) {
            (Some(url), _, _) => url.clone(),
            (None, Some(public), Some(proxy)) => format!("{}{}", public.trim_end_matches('/'), proxy.path),
            _ => return None,
        };
        Some(base.trim_end_matches('/').to_string())
    }

    /// How the listener treats its connections; `default_max` unless `max_connections` is set.
    pub fn connection_limits(&self, default_max: usize) -> ConnectionLimits {
        ConnectionLimits::http(self.max_connections.unwrap_or(default_max), self.read_header_timeout, self.idle_timeout)
    }
}

/// Where the read API gets its answers.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// The id of the exporter whose store answers reads (an `embedded` or `elasticsearch`
    /// exporter); defaults to the only embedded exporter.
    pub backend: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub pipelines: BTreeMap<String, PipelineConfig>,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// How long SIGTERM waits for the queues to drain.
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// The Collector's `memory_limiter` for the whole process; unset: no memory limit.
    #[serde(default)]
    pub memory_limiter: Option<crate::pipeline::MemoryLimiterConfig>,
    /// When `/readyz` answers 503 (see `telemetry::Readiness`).
    #[serde(default)]
    pub readiness: crate::telemetry::ReadinessConfig,
}

fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub receivers: Vec<String>,
    #[serde(default)]
    pub processors: Vec<String>,
    pub exporters: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    pub logs: LogsConfig,
}
