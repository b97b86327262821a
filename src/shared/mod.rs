//! Shared primitives: what every layer may use and nothing below it defines. The one span
//! attribute reader, configuration
//! building blocks (the issue list every `validate()` writes, byte sizes, checks of the files a
//! configuration names, secrets in URLs, the sending settings shared by exporter queues and
//! exporters, and the one retry/backoff/timeout policy everything that sends uses), RFC 3339
//! time, TLS roots, and error chains for logs. This module imports no other module of the crate.

mod attributes;
mod blocking;
mod errors;
mod files;
mod issues;
mod redact;
mod retry;
mod sending;
mod time;
mod tls;
mod units;

pub use attributes::{attr_string, attr_text, first_value, kv_text};
pub use blocking::{on_blocking_pool, RuntimeShutdown};
pub use errors::error_chain;
pub use files::{check_readable_file, check_writable};
pub use issues::{ConfigIssue, Issues};
pub use redact::{redact_url, redact_urls};
pub use retry::{jitter, AttemptError, Backoff, GaveUp, RetryPolicy, Schedule, Stopped, Verdict};
pub use sending::{validate_common, BatchConfig, QueueConfig, RetryConfig, SyncPolicy, WhenFull};
pub use time::{format_rfc3339_nanos, now_unix_nanos, parse_rfc3339, process_cpu_time, thread_cpu_time, write_rfc3339_nanos, TimeError};
pub use tls::{ca_certificates, https_connector, root_store, CertificateProblem, TlsError};
pub use units::{ByteSize, SizeError};
