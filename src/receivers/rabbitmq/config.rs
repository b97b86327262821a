//! Configuration of the `rabbitmq` receiver.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::mapping::MappingConfig;
use crate::net::positive_duration;
use crate::receivers::SpanLimitsConfig;
use crate::shared::{check_readable_file, Issues};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitMqReceiverConfig {
    /// `amqp://user:password@host:5672/vhost` (the default vhost `/` is `%2f`), or `amqps://`
    /// for TLS. The password usually comes from `${env:...}`.
    #[serde(alias = "url")]
    pub endpoint: String,
    /// The service every message speaks for: the `service.name` of the spans its events
    /// become, and the receiver's ingest identity (the bus carries no token).
    pub service: String,
    /// The queue to consume.
    pub queue: String,
    /// `true` (the default): declare the queue (durable) if it does not exist. `false`: it must
    /// exist (declared by its owner, with whatever arguments, e.g. a dead-letter exchange).
    #[serde(default = "yes")]
    pub declare_queue: bool,
    /// Binds the queue to an exchange (which must exist) with a routing key.
    #[serde(default)]
    pub bind: Option<BindConfig>,
    /// Messages delivered and not yet acknowledged, at most (AMQP `basic.qos`).
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// Where a message that cannot be mapped to order events goes: published there (with the
    /// reason in its headers) and confirmed before the original is acknowledged. Unset: the
    /// message is rejected without requeue, so the queue's own dead-letter exchange gets it
    /// (or the broker drops it when the queue has none).
    #[serde(default)]
    pub dead_letter: Option<DeadLetterConfig>,
    /// JSON pointers from a message to an order event's fields. Unset: each message is an order
    /// event (or an array of them) as `POST /v1/order-events` takes it.
    #[serde(default)]
    pub mapping: Option<MappingConfig>,
    /// How long to wait between connection attempts.
    #[serde(default)]
    pub reconnect: ReconnectConfig,
    /// For `amqps://`: the CA that signed the broker's certificate (PEM); unset: the public
    /// web roots.
    #[serde(default)]
    pub tls: Option<AmqpTlsConfig>,
    /// The same per-span limits as the `otlp` receiver's.
    #[serde(default)]
    pub span_limits: SpanLimitsConfig,
}

fn yes() -> bool {
    true
}

fn default_prefetch() -> u16 {
    100
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BindConfig {
    pub exchange: String,
    #[serde(default)]
    pub routing_key: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// `""` is the default exchange: the routing key is then a queue name, and the receiver
    /// declares that queue (durable).
    #[serde(default)]
    pub exchange: String,
    pub routing_key: String,
}

/// Exponential backoff between connection attempts: `initial_interval`, doubled after each
/// failure up to `max_interval`, with a little jitter; back to `initial_interval` once connected.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconnectConfig {
    #[serde(deserialize_with = "positive_duration", serialize_with = "humantime_serde::serialize")]
    pub initial_interval: Duration,
    #[serde(deserialize_with = "positive_duration", serialize_with = "humantime_serde::serialize")]
    pub max_interval: Duration,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig { initial_interval: Duration::from_secs(1), max_interval: Duration::from_secs(30) }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpTlsConfig {
    pub ca_file: Option<PathBuf>,
}

impl RabbitMqReceiverConfig {
    pub fn validate(&self, path: &str, issues: &mut Issues) {
        match lapin::uri::AMQPUri::from_str(&self.endpoint) {
            Ok(uri) => {
                if self.tls.as_ref().is_some_and(|t| t.ca_file.is_some()) && uri.scheme != lapin::uri::AMQPScheme::AMQPS {
                    issues.push(format!("{path}.tls"), "tls.ca_file needs an amqps:// endpoint");
                }
            }
            Err(error) => issues.push(
                format!("{path}.endpoint"),
                format!(
                    "{:?} is not an AMQP URL ({error}); write amqp://user:password@host:5672/%2f (or amqps://)",
                    crate::shared::redact_url(&self.endpoint)
                ),
            ),
        }
        if self.service.trim().is_empty() {
            issues.push(format!("{path}.service"), "must name the service the messages speak for (e.g. mes-api)");
        }
        if self.queue.trim().is_empty() {
            issues.push(format!("{path}.queue"), "must name the queue to consume");
        }
        if self.prefetch == 0 {
            issues.push(format!("{path}.prefetch"), "must be at least 1 (0 would mean no limit)");
        }
        if let Some(bind) = &self.bind {
            if bind.exchange.is_empty() {
                issues.push(format!("{path}.bind.exchange"), "name the exchange to bind to (the default exchange takes no bindings)");
            }
        }
        if let Some(dl) = &self.dead_letter {
            if dl.routing_key.is_empty() {
                issues.push(format!("{path}.dead_letter.routing_key"), "required (with exchange \"\": the dead-letter queue's name)");
            } else if dl.exchange.is_empty() && dl.routing_key == self.queue {
                issues.push(
                    format!("{path}.dead_letter.routing_key"),
                    "is the consumed queue itself; a bad message would come back for ever",
                );
            }
        }
        // AMQP names are short strings: 255 bytes at most.
        let mut names = vec![("queue", &self.queue)];
        if let Some(bind) = &self.bind {
            names.extend([("bind.exchange", &bind.exchange), ("bind.routing_key", &bind.routing_key)]);
        }
        if let Some(dl) = &self.dead_letter {
            names.extend([("dead_letter.exchange", &dl.exchange), ("dead_letter.routing_key", &dl.routing_key)]);
        }
        for (key, name) in names {
            if name.len() > 255 {
                issues.push(format!("{path}.{key}"), format!("{} bytes long; AMQP names are 255 bytes at most", name.len()));
            }
        }
        if self.reconnect.max_interval < self.reconnect.initial_interval {
            issues.push(format!("{path}.reconnect.max_interval"), "must not be shorter than initial_interval");
        }
        if let Some(ca) = self.tls.as_ref().and_then(|t| t.ca_file.as_ref()) {
            check_readable_file(issues, format!("{path}.tls.ca_file"), ca);
        }
        if let Some(mapping) = &self.mapping {
            mapping.validate(&format!("{path}.mapping"), issues);
        }
        self.span_limits.validate(&format!("{path}.span_limits"), issues);
    }
}
