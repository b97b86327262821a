//! Notifiers: how support learns of an order alert. Each kind is a folder owning its config,
//! validation and sending; this file is the registry (`NotifierConfig`, `Notifier`).
//!
//! A notifier only sends. Deciding *when* (once on firing, once on resolution, re-sends while
//! firing) belongs to the monitors, which call [`Notifier::send`] with a [`Notice`].

use crate::orders::OrderAlert;

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
