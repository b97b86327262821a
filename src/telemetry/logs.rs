//! Log set-up: `tracing` to stderr, human-readable or JSON lines.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `RUST_LOG`, when set, overrides the configured level.
/// Calling it twice is harmless (the second call changes nothing).
pub fn init_logs(config: &LogsConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.level));
    // Colour only on a terminal, and never with NO_COLOR set (https://no-color.org).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    let _ = match config.encoding {
        LogEncoding::Console => builder.try_init(),
        LogEncoding::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// `service.telemetry.logs`.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// `error`, `warn`, `info`, `debug`, `trace`, or a full `RUST_LOG`-style filter.
    pub level: String,
    pub encoding: LogEncoding,
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig { level: "info".into(), encoding: LogEncoding::Console }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogEncoding {
    Console,
    Json,
}
