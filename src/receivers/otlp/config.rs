//! Configuration of the `otlp` receiver.

use serde::{Deserialize, Serialize};

use crate::config::{ByteSize, Issues};
use crate::receivers::RateLimitConfig;

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
}

impl Default for GrpcServerConfig {
    fn default() -> Self {
        GrpcServerConfig { endpoint: "127.0.0.1:4317".into(), max_recv_msg_size: ByteSize::mib(16) }
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
}

impl Default for HttpServerConfig {
    fn default() -> Self {
        HttpServerConfig {
            endpoint: "127.0.0.1:4318".into(),
            max_request_body_size: ByteSize::mib(16),
            max_decompressed_body_size: ByteSize::mib(64),
            max_decompression_ratio: 200,
        }
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
