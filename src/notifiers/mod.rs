//! Notifiers: how support learns of an order alert. Each kind is a folder owning its config,
//! validation and sending (`alertmanager`, `email`, `webhook`); this file is the registry
//! (`NotifierConfig`, `Notifier`). What every kind shares: the facts of a notice (`facts`),
//! delivery with a per-attempt timeout, retries and a dead-letter file (`delivery`), and the
//! HTTP client of the two HTTP kinds (`http`).
//!
//! A notifier only sends. Deciding *when* (once on firing, once on resolution, re-sends while
//! firing) belongs to the monitors, which call [`Notifier::deliver`] with a [`Notice`].

mod alertmanager;
mod delivery;
mod email;
mod facts;
mod http;
mod setup;
mod tls;
mod webhook;

pub use alertmanager::{alert_json, AlertmanagerConfig, BasicAuth};
pub use delivery::DEFAULT_TIMEOUT;
pub use email::{EmailConfig, SmtpConfig};
pub use facts::{idempotency_id, notice_json};
pub use setup::{HeaderProblem, NotifierSetupError};
pub use tls::NotifierTls;
pub use webhook::{signature, WebhookConfig, IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};

use alertmanager::AlertmanagerNotifier;
use delivery::Delivery;
use email::EmailNotifier;
use webhook::WebhookNotifier;

use crate::orders::OrderAlert;
use crate::shared::Issues;
use crate::telemetry::Metrics;

/// One notifier's configuration, by kind: the notifiers' registry (the configuration reads each
/// `notifiers.<id>` into one of these; [`Notifier::build`] makes it send).
#[derive(Debug, Clone)]
pub enum NotifierConfig {
    Alertmanager(AlertmanagerConfig),
    Email(EmailConfig),
    Webhook(WebhookConfig),
}

impl NotifierConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            NotifierConfig::Alertmanager(_) => "alertmanager",
            NotifierConfig::Email(_) => "email",
            NotifierConfig::Webhook(_) => "webhook",
        }
    }

    pub fn validate(&self, path: &str, issues: &mut Issues) {
        match self {
            NotifierConfig::Alertmanager(c) => c.validate(path, issues),
            NotifierConfig::Email(c) => c.validate(path, issues),
            NotifierConfig::Webhook(c) => c.validate(path, issues),
        }
    }

    /// Where the notifier sends, with secrets in URLs redacted: for logs and the summary.
    pub fn destination(&self) -> String {
        use crate::shared::redact_url;
        match self {
            NotifierConfig::Alertmanager(c) => c.endpoints.iter().map(|e| redact_url(e).into_owned()).collect::<Vec<_>>().join(", "),
            NotifierConfig::Email(c) => format!("{} via {}:{}", c.to.join(", "), c.smtp.host, c.smtp.port()),
            NotifierConfig::Webhook(c) => redact_url(&c.url).into_owned(),
        }
    }
}

/// One configured notifier, ready to send: its kind's sender inside the shared delivery
/// (per-attempt timeout, retries, dead letter, `tracegate_notifications_total`).
pub struct Notifier {
    id: String,
    sender: Sender,
    delivery: Delivery,
}

/// Every notifier kind; an exhaustive match instead of a plugin registry.
enum Sender {
    Alertmanager(AlertmanagerNotifier),
    Email(Box<EmailNotifier>),
    Webhook(WebhookNotifier),
}

impl Notifier {
    /// Builds `notifiers.<id>`; the error names what cannot be set up (a CA file that vanished
    /// since validation, say).
    pub fn build(id: &str, config: &NotifierConfig, metrics: &Metrics) -> Result<Notifier, NotifierSetupError> {
        let (sender, delivery) = match config {
            NotifierConfig::Alertmanager(c) => (Sender::Alertmanager(AlertmanagerNotifier::new(c)?), c.delivery()),
            NotifierConfig::Email(c) => (Sender::Email(Box::new(EmailNotifier::new(c)?)), c.delivery()),
            NotifierConfig::Webhook(c) => (Sender::Webhook(WebhookNotifier::new(c)?), c.delivery()),
        };
        let delivery = Delivery { id: id.to_string(), config: delivery, outcomes: metrics.notifier(id) };
        Ok(Notifier { id: id.to_string(), sender, delivery })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Sends `notice`, retrying what may pass later; on giving up, writes the dead letter (if
    /// configured) and returns the last error. Takes as long as the retry policy allows
    /// (`retry_on_failure.max_elapsed_time`, 5 minutes by default): callers run it on a task
    /// of its own.
    pub async fn deliver(&self, notice: &Notice) -> Result<(), NotifyError> {
        self.delivery
            .run(notice, || async {
                match &self.sender {
                    Sender::Alertmanager(s) => s.send(notice).await,
                    Sender::Email(s) => s.send(notice).await,
                    Sender::Webhook(s) => s.send(notice).await,
                }
            })
            .await
    }
}

/// Why the monitor is sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    /// The alert fired now.
    Fired,
    /// The alert resolved now.
    Resolved,
    /// Still firing; re-sent so that a receiver which expires alerts (Alertmanager) keeps it.
    Repeat,
}

/// One message about one alert.
#[derive(Debug, Clone)]
pub struct Notice {
    pub kind: NoticeKind,
    pub alert: OrderAlert,
    /// `public_url` + `/orders/{id}`, when `public_url` is configured.
    pub link: Option<String>,
}

/// Why a notification could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Worth trying again (connection refused, timeout, 5xx, 429).
    #[error("{0}")]
    Retryable(String),
    /// Will not succeed as configured (4xx, bad address, authentication refused).
    #[error("{0}")]
    Permanent(String),
}
