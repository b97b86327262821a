//! The connection settings of a server, in the Collector's shape: `max_connections`,
//! `read_header_timeout` and `idle_timeout` on every listener, and for gRPC
//! `keepalive.server_parameters`. Zero is refused while the file is read (with the key's path):
//! a limit of no connections or a timeout of no time is a typo, not a setting.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

/// How long a new connection may take to send its first request header.
pub const DEFAULT_READ_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an HTTP keep-alive connection may wait for its next request.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest `max_connections` accepted (far above any open-file limit in practice).
pub const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;

/// `keepalive:` of a gRPC server, as the Collector's `configgrpc` spells it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcKeepaliveConfig {
    pub server_parameters: KeepaliveServerParameters,
}

/// `keepalive.server_parameters` (grpc-go's `keepalive.ServerParameters`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeepaliveServerParameters {
    /// A connection with no RPC in flight for this long is sent GOAWAY and closed.
    #[serde(deserialize_with = "positive_duration", serialize_with = "humantime_serde::serialize")]
    pub max_connection_idle: Duration,
    /// A connection older than this is sent GOAWAY (unset: no limit).
    #[serde(deserialize_with = "optional_positive_duration", serialize_with = "humantime_serde::serialize")]
    pub max_connection_age: Option<Duration>,
    /// After `max_connection_age`, RPCs in flight get this long before the connection is cut
    /// (unset: as long as they need).
    #[serde(deserialize_with = "optional_positive_duration", serialize_with = "humantime_serde::serialize")]
    pub max_connection_age_grace: Option<Duration>,
    /// After this long without any frame from the client, the server pings it.
    #[serde(deserialize_with = "positive_duration", serialize_with = "humantime_serde::serialize")]
    pub time: Duration,
    /// A ping not answered within this long closes the connection.
    #[serde(deserialize_with = "positive_duration", serialize_with = "humantime_serde::serialize")]
    pub timeout: Duration,
}

impl Default for KeepaliveServerParameters {
    fn default() -> Self {
        KeepaliveServerParameters {
            max_connection_idle: Duration::from_secs(5 * 60),
            max_connection_age: None,
            max_connection_age_grace: None,
            // grpc-go's defaults.
            time: Duration::from_secs(2 * 60 * 60),
            timeout: Duration::from_secs(20),
        }
    }
}

/// A humantime duration longer than zero (`deserialize_with`).
pub fn positive_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let value: Duration = humantime_serde::deserialize(deserializer)?;
    if value.is_zero() {
        return Err(serde::de::Error::custom("must be longer than 0s"));
    }
    Ok(value)
}

/// An optional humantime duration, longer than zero when present (`deserialize_with`).
pub fn optional_positive_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    let value: Option<Duration> = humantime_serde::deserialize(deserializer)?;
    if value.is_some_and(|d| d.is_zero()) {
        return Err(serde::de::Error::custom("must be longer than 0s; leave it out for no limit"));
    }
    Ok(value)
}

/// An optional connection count from 1 to [`MAX_CONNECTIONS_LIMIT`] (`deserialize_with`).
pub fn connection_count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<usize>, D::Error> {
    let value: Option<usize> = Option::deserialize(deserializer)?;
    match value {
        Some(0) => Err(serde::de::Error::custom("must be at least 1")),
        Some(n) if n > MAX_CONNECTIONS_LIMIT => Err(serde::de::Error::custom(format!("must be at most {MAX_CONNECTIONS_LIMIT}"))),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Listener {
        #[serde(default, deserialize_with = "connection_count")]
        max_connections: Option<usize>,
        #[serde(default)]
        keepalive: GrpcKeepaliveConfig,
    }

    fn parse(yaml: &str) -> Result<Listener, String> {
        serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn keepalive_reads_the_collector_shape_and_refuses_zero() {
        let l = parse("keepalive: {server_parameters: {max_connection_idle: 30s, max_connection_age: 1h, time: 1m}}").unwrap();
        let p = l.keepalive.server_parameters;
        assert_eq!(p.max_connection_idle, Duration::from_secs(30));
        assert_eq!(p.max_connection_age, Some(Duration::from_secs(3600)));
        assert_eq!(p.max_connection_age_grace, None);
        assert_eq!(p.time, Duration::from_secs(60));
        assert_eq!(p.timeout, Duration::from_secs(20));
        assert!(parse("keepalive: {server_parameters: {timeout: 0s}}").unwrap_err().contains("must be longer than 0s"));
        assert!(parse("keepalive: {server_parameters: {max_connection_age: 0s}}").unwrap_err().contains("must be longer than 0s"));
        assert!(parse("keepalive: {server_parameters: {max_idle: 1s}}").unwrap_err().contains("unknown field"));
    }

    #[test]
    fn max_connections_is_between_one_and_the_limit() {
        assert_eq!(parse("max_connections: 256").unwrap().max_connections, Some(256));
        assert_eq!(parse("{}").unwrap().max_connections, None);
        assert!(parse("max_connections: 0").unwrap_err().contains("must be at least 1"));
        assert!(parse("max_connections: 2000000").unwrap_err().contains("must be at most"));
    }
}
