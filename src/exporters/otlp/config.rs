//! Configuration of the `otlp` exporter (Jaeger v2 and any OTLP receiver).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::shared::Issues;
use crate::shared::{validate_common, BatchConfig, QueueConfig, RetryConfig};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpExporterConfig {
    /// `http://host:4317` (gRPC) or `https://host:4318` (HTTP; `/v1/traces` is appended unless
    /// the URL already has a path).
    pub endpoint: String,
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// Extra request headers (gRPC metadata), e.g. an `authorization` token.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub tls: TlsClientConfig,
    #[serde(default)]
    pub compression: Compression,
    /// Per attempt.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default)]
    pub retry_on_failure: RetryConfig,
    #[serde(default)]
    pub sending_queue: QueueConfig,
    #[serde(default)]
    pub batch: BatchConfig,
    /// Spans the peer refuses for good (after bisection, alone) are appended here, one JSON
    /// line each with the error; unset: they are logged and counted only.
    #[serde(default)]
    pub dead_letter_path: Option<std::path::PathBuf>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    #[default]
    Grpc,
    #[serde(alias = "http/protobuf")]
    Http,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    #[default]
    Gzip,
}

/// TLS towards the exporter's endpoint; used when the endpoint is `https://`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsClientConfig {
    /// PEM file with the CA certificates to trust instead of the public roots.
    pub ca_file: Option<PathBuf>,
    /// Overrides the name checked in the server's certificate.
    pub server_name_override: Option<String>,
}

impl OtlpExporterConfig {
    pub fn validate(&self, path: &str, issues: &mut Issues) {
        match self.endpoint.parse::<http::Uri>() {
            Ok(uri) => {
                match uri.scheme_str() {
                    Some("http") | Some("https") => {}
                    _ => issues.push(
                        format!("{path}.endpoint"),
                        format!("{:?} needs a scheme: http://host:port or https://host:port", self.endpoint),
                    ),
                }
                if uri.host().is_none() {
                    issues.push(format!("{path}.endpoint"), format!("{:?} has no host", self.endpoint));
                }
                if uri.scheme_str() == Some("http") && self.tls.ca_file.is_some() {
                    issues.push(format!("{path}.tls.ca_file"), "set, but the endpoint is plain http://; use https:// for TLS");
                }
            }
            Err(e) => issues.push(format!("{path}.endpoint"), format!("{:?} is not a URL: {e}", self.endpoint)),
        }
        if let Some(ca) = &self.tls.ca_file {
            if !ca.is_file() {
                issues.push(format!("{path}.tls.ca_file"), format!("{} does not exist", ca.display()));
            }
        }
        for name in self.headers.keys() {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                issues.push(format!("{path}.headers.{name}"), "not a valid header name");
            }
        }
        for (name, value) in &self.headers {
            if http::HeaderValue::from_str(value).is_err() {
                issues.push(format!("{path}.headers.{name}"), "not a valid header value");
            }
        }
        if self.timeout.is_zero() {
            issues.push(format!("{path}.timeout"), "must be greater than 0");
        }
        validate_common(path, &self.sending_queue, &self.batch, &self.retry_on_failure, issues);
        if let Some(file) = &self.dead_letter_path {
            crate::shared::check_writable(issues, format!("{path}.dead_letter_path"), file);
        }
    }
}
