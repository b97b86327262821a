//! TLS towards a notifier's peer (an `https://` Alertmanager or webhook, an SMTP server).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::NotifierSetupError;
use crate::shared::{check_readable_file, Issues};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifierTls {
    /// PEM file with the CA certificates to trust instead of the public roots (a peer behind a
    /// private CA).
    pub ca_file: Option<PathBuf>,
}

impl NotifierTls {
    pub fn validate(&self, path: &str, issues: &mut Issues) {
        if let Some(file) = &self.ca_file {
            check_readable_file(issues, format!("{path}.tls.ca_file"), file);
        }
    }
}

/// `url` as an `http(s)://host[:port][/path]` URI, or why not.
pub fn http_url(url: &str) -> Result<http::Uri, NotifierSetupError> {
    let uri: http::Uri = url.parse().map_err(|e| NotifierSetupError::Url(url.to_string(), e))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(NotifierSetupError::NoScheme(url.to_string())),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(NotifierSetupError::NoHost(url.to_string()));
    }
    Ok(uri)
}
