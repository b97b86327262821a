//! Configuration of the `email` notifier.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::notifiers::delivery::{default_retry, default_timeout, DeliveryConfig};
use crate::shared::{check_readable_file, Issues, RetryConfig};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub smtp: SmtpConfig,
    /// The sender, `tracegate@shop.example` or `Tracegate <tracegate@shop.example>`.
    pub from: String,
    /// Every recipient gets the same mail.
    pub to: Vec<String>,
    /// Starts every subject.
    #[serde(default = "default_subject_prefix")]
    pub subject_prefix: String,
    /// Per attempt: connecting, the SMTP dialogue and the message.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "default_retry", alias = "retry")]
    pub retry_on_failure: RetryConfig,
    #[serde(default)]
    pub dead_letter: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    /// Default: 465 with `tls: true`, 587 with STARTTLS, 25 without either.
    #[serde(default)]
    pub port: Option<u16>,
    /// Upgrade the connection with STARTTLS and refuse a server that does not offer it; on
    /// unless `tls` is.
    #[serde(default)]
    pub starttls: Option<bool>,
    /// TLS from the first byte ("implicit TLS", SMTPS on 465); excludes `starttls`.
    #[serde(default)]
    pub tls: bool,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// The name this client gives in EHLO; default `[127.0.0.1]` (an address literal, as RFC
    /// 5321 allows when the client has no obvious name).
    #[serde(default)]
    pub hello_name: Option<String>,
    /// PEM file with the CA certificates to trust instead of the public roots (a server behind
    /// a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_subject_prefix() -> String {
    "[tracegate]".into()
}

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    Implicit,
    StartTls,
    None,
}

impl SmtpConfig {
    pub fn security(&self) -> Security {
        if self.tls {
            Security::Implicit
        } else if self.starttls.unwrap_or(true) {
            Security::StartTls
        } else {
            Security::None
        }
    }

    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.security() {
            Security::Implicit => 465,
            Security::StartTls => 587,
            Security::None => 25,
        })
    }
}

impl EmailConfig {
    pub fn delivery(&self) -> DeliveryConfig {
        DeliveryConfig { timeout: self.timeout, retry: self.retry_on_failure.clone(), dead_letter: self.dead_letter.clone() }
    }

    pub fn validate(&self, path: &str, issues: &mut Issues) {
        let smtp = &self.smtp;
        if smtp.host.trim().is_empty() {
            issues.push(format!("{path}.smtp.host"), "must not be empty");
        } else if smtp.host.contains("://") || smtp.host.contains(':') && smtp.host.parse::<std::net::Ipv6Addr>().is_err() {
            issues
                .push(format!("{path}.smtp.host"), format!("{:?}: a host name or IP address only; the port goes in smtp.port", smtp.host));
        }
        if smtp.port == Some(0) {
            issues.push(format!("{path}.smtp.port"), "must be between 1 and 65535");
        }
        if smtp.tls && smtp.starttls == Some(true) {
            issues
                .push(format!("{path}.smtp.starttls"), "tls: true is TLS from the first byte; STARTTLS is for a plain connection: set one");
        }
        if smtp.username.is_some() != smtp.password.is_some() {
            let missing = if smtp.username.is_some() { "password" } else { "username" };
            issues.push(format!("{path}.smtp.{missing}"), "username and password go together");
        }
        if smtp.security() == Security::None && (smtp.username.is_some() || smtp.password.is_some()) {
            issues.push(
                format!("{path}.smtp.starttls"),
                "the password would travel in clear: enable starttls (or tls), or remove the credentials",
            );
        }
        if let Some(file) = &smtp.ca_file {
            if smtp.security() == Security::None {
                issues.push(format!("{path}.smtp.ca_file"), "set, but neither starttls nor tls is on");
            } else {
                check_readable_file(issues, format!("{path}.smtp.ca_file"), file);
            }
        }
        if let Err(e) = super::mailbox(&self.from) {
            issues.push(format!("{path}.from"), crate::shared::error_chain(&e));
        }
        if self.to.is_empty() {
            issues.push(format!("{path}.to"), "at least one recipient is needed");
        }
        for (i, to) in self.to.iter().enumerate() {
            if let Err(e) = super::mailbox(to) {
                issues.push(format!("{path}.to[{i}]"), crate::shared::error_chain(&e));
            }
        }
        self.delivery().validate(path, issues);
    }
}
