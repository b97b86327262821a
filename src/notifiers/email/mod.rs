//! The `email` notifier: one plain-text mail per notice over SMTP (`lettre`), with STARTTLS
//! required by default, implicit TLS on request, plain SMTP only without credentials.
//!
//! Subject: `[tracegate] FIRING crm_accepts: order A-1001 (warning)`; the body lists the facts
//! (`facts::lines`).

mod config;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

pub use config::{EmailConfig, Security, SmtpConfig};

use super::{facts, Notice, NotifierSetupError, NotifyError};
use crate::shared::error_chain;

pub struct EmailNotifier {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    subject_prefix: String,
}

/// `text` as a mailbox (`a@b.example` or `Name <a@b.example>`), or why not.
pub fn mailbox(text: &str) -> Result<Mailbox, NotifierSetupError> {
    text.parse::<Mailbox>().map_err(|e| NotifierSetupError::Mailbox(text.to_string(), e))
}

impl EmailNotifier {
    pub fn new(config: &EmailConfig) -> Result<EmailNotifier, NotifierSetupError> {
        let smtp = &config.smtp;
        let tls = match smtp.security() {
            Security::None => Tls::None,
            security => {
                let mut params = TlsParameters::builder(smtp.host.clone());
                match &smtp.ca_file {
                    Some(file) => {
                        params = params.certificate_store(CertificateStore::None);
                        for cert in crate::shared::ca_certificates(file, "smtp.ca_file")? {
                            let cert = Certificate::from_der(cert.to_vec()).map_err(NotifierSetupError::SmtpCertificate)?;
                            params = params.add_root_certificate(cert);
                        }
                    }
                    None => params = params.certificate_store(CertificateStore::WebpkiRoots),
                }
                let params = params.build_rustls().map_err(NotifierSetupError::SmtpTls)?;
                if security == Security::Implicit {
                    Tls::Wrapper(params)
                } else {
                    Tls::Required(params)
                }
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.clone())
            .port(smtp.port())
            .tls(tls)
            .timeout(Some(config.timeout));
        if let (Some(user), Some(password)) = (&smtp.username, &smtp.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        if let Some(name) = &smtp.hello_name {
            builder = builder.hello_name(ClientId::Domain(name.clone()));
        }
        let from = mailbox(&config.from)?;
        let to = config.to.iter().map(|t| mailbox(t)).collect::<Result<Vec<_>, _>>()?;
        Ok(EmailNotifier { transport: builder.build(), from, to, subject_prefix: config.subject_prefix.clone() })
    }

    /// One attempt: connect, send the mail, quit.
    pub async fn send(&self, notice: &Notice) -> Result<(), NotifyError> {
        let message = self.message(notice)?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            // 5xx: the server refuses (a recipient, the sender, the credentials): as configured,
            // this will not succeed. Everything else (4xx, connection, TLS, timeout) may pass.
            Err(e) if e.is_permanent() => Err(NotifyError::Permanent(format!("the SMTP server refused: {}", error_chain(&e)))),
            Err(e) => Err(NotifyError::Retryable(format!("SMTP: {}", error_chain(&e)))),
        }
    }

    fn message(&self, notice: &Notice) -> Result<Message, NotifyError> {
        let a = &notice.alert;
        let subject =
            format!("{} {} {}: order {} ({})", self.subject_prefix, facts::headline(notice), a.rule, a.order_id, a.severity.as_str());
        let mut builder = Message::builder().from(self.from.clone()).subject(subject.trim_start()).header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        builder.body(body(notice)).map_err(|e| NotifyError::Permanent(format!("cannot build the mail: {e}")))
    }
}

/// The plain-text body: the summary, then one fact per line.
pub fn body(notice: &Notice) -> String {
    let mut out = facts::summary(&notice.alert);
    out.push_str(".\n\n");
    let lines = facts::lines(notice);
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    for (key, value) in lines {
        out.push_str(&format!("{:<width$} {value}\n", format!("{key}:")));
    }
    out.push_str("\n-- \nSent by tracegate (order monitor ");
    out.push_str(&notice.alert.monitor);
    out.push_str(").\n");
    out
}
