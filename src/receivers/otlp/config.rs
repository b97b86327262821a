//! Configuration of the `otlp` receiver.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::net::{
    connection_count, positive_duration, ConnectionLimits, GrpcKeepaliveConfig, Http2Keepalive, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_READ_HEADER_TIMEOUT,
};
use crate::receivers::{RateLimitConfig, SpanLimitsConfig};
use crate::shared::{ByteSize, Issues};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpReceiverConfig {
    #[serde(default)]
    pub grpc: Option<GrpcServerConfig>,
    #[serde(default)]
    pub http: Option<HttpServerConfig>,
    /// `jwt`: every request needs a service token whose identity matches the spans'
    /// `service.name`. `none` (the default): anyone who can connect may send.
    #[serde(default)]
    pub auth: ReceiverAuth,
    /// Spans per second per sender (token subject, or `anonymous`); over it: 429 /
    /// RESOURCE_EXHAUSTED with a retry delay.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Attributes, events and links per span and value sizes (cut and counted, as the SDKs do),
    /// and the largest span (rejected through `partial_success`). The defaults never touch
    /// a span an SDK produced with its own defaults.
    #[serde(default)]
    pub span_limits: SpanLimitsConfig,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiverAuth {
    #[default]
    None,
    Jwt,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcServerConfig {
    pub endpoint: String,
    /// Largest accepted message, after decompression.
    #[serde(alias = "max_recv_msg_size_mib")]
    pub max_recv_msg_size: ByteSize,
    /// Connections served at once; one more is closed as soon as it is accepted. Unset: 4096, or
    /// fewer so that all listeners together stay under half the open-file limit.
    #[serde(deserialize_with = "connection_count")]
    pub max_connections: Option<usize>,
    /// A connection that has not sent its first request within this time is closed.
    #[serde(alias = "header_read_timeout", deserialize_with = "positive_duration", serialize_with = "humantime_serde::serialize")]
    pub read_header_timeout: Duration,
    /// `keepalive.server_parameters`: idle and age limits, pings.
    pub keepalive: GrpcKeepaliveConfig,
}

impl Default for GrpcServerConfig {
    fn default() -> Self {
        GrpcServerConfig {
            endpoint: "127.0.0.1:4317".into(),
            max_recv_msg_size: ByteSize::mib(16),
            max_connections: None,
            read_header_timeout: DEFAULT_READ_HEADER_TIMEOUT,
            keepalive: GrpcKeepaliveConfig::default(),
        }
    }
}

impl GrpcServerConfig {
    /// How the listener treats its connections; `default_max` unless `max_connections` is set.
    pub fn connection_limits(&self, default_max: usize) -> ConnectionLimits {
        let p = &self.keepalive.server_parameters;
        ConnectionLimits {
            max_connections: self.max_connections.unwrap_or(default_max),
            read_header_timeout: self.read_header_timeout,
            idle_timeout: p.max_connection_idle,
            max_connection_age: p.max_connection_age,
            max_connection_age_grace: p.max_connection_age_grace,
            http2_keepalive: Some(Http2Keepalive { interval: p.time, timeout: p.timeout }),
            http2_only: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpServerConfig {
    pub endpoint: String,
    /// Largest accepted body as sent (compressed).
    pub max_request_body_size: ByteSize,
    /// Largest body after decompression.
    pub max_decompressed_body_size: ByteSize,
    /// A body that inflates more than this many times is refused as a decompression bomb once
    /// it has produced more than 4 MiB.
    pub max_decompression_ratio: u32,
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
}

impl Default for HttpServerConfig {
    fn default() -> Self {
        HttpServerConfig {
            endpoint: "127.0.0.1:4318".into(),
            max_request_body_size: ByteSize::mib(16),
            max_decompressed_body_size: ByteSize::mib(64),
            max_decompression_ratio: 200,
            max_connections: None,
            read_header_timeout: DEFAULT_READ_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

impl HttpServerConfig {
    /// How the listener treats its connections; `default_max` unless `max_connections` is set.
    pub fn connection_limits(&self, default_max: usize) -> ConnectionLimits {
        ConnectionLimits::http(self.max_connections.unwrap_or(default_max), self.read_header_timeout, self.idle_timeout)
    }
}

impl OtlpReceiverConfig {
    pub fn validate(&self, path: &str, issues: &mut Issues) {
        if self.grpc.is_none() && self.http.is_none() {
            issues.push(path, "enable at least one protocol: grpc: {} or http: {}");
        }
        if let Some(limit) = &self.rate_limit {
            limit.validate(&format!("{path}.rate_limit"), issues);
        }
        self.span_limits.validate(&format!("{path}.span_limits"), issues);
        if let Some(h) = &self.http {
            if h.max_decompressed_body_size < h.max_request_body_size {
                issues.push(format!("{path}.http.max_decompressed_body_size"), "must not be smaller than max_request_body_size");
            }
            if h.max_decompression_ratio == 0 {
                issues.push(format!("{path}.http.max_decompression_ratio"), "must be at least 1");
            }
        }
    }
}
