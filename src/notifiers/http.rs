//! The HTTP client of the `alertmanager` and `webhook` notifiers, and how their replies are
//! judged.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::NotifyError;
use crate::shared::redact_urls;

/// Of a reply, only this much is read (for the error message).
const MAX_REPLY: usize = 64 * 1024;

#[derive(Clone)]
pub struct HttpClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HttpClient {
    pub fn new(ca_file: Option<&Path>, connect_timeout: Duration) -> Result<HttpClient, crate::shared::TlsError> {
        let connector = crate::shared::https_connector(ca_file, "tls.ca_file", connect_timeout)?;
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        Ok(HttpClient { client })
    }

    /// One POST of a JSON body; 2xx is success, 5xx, 408, 429 and failures to connect are worth
    /// another try, any other reply is permanent.
    pub async fn post_json(&self, uri: &Uri, headers: &HeaderMap, body: Bytes) -> Result<(), NotifyError> {
        let mut request = Request::post(uri.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| NotifyError::Permanent(format!("cannot build the request: {e}")))?;
        request.headers_mut().extend(headers.clone());
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| NotifyError::Retryable(redact_urls(&format!("{}: {}", uri, crate::shared::error_chain(&e))).into_owned()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = Limited::new(response.into_body(), MAX_REPLY).collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        let text = String::from_utf8_lossy(&body);
        let text: String = text.trim().chars().take(300).collect();
        let message = redact_urls(&format!("{uri} answered {status}: {text}")).into_owned();
        Err(classify(status, message))
    }
}

fn classify(status: StatusCode, message: String) -> NotifyError {
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT {
        NotifyError::Retryable(message)
    } else {
        NotifyError::Permanent(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_and_throttling_are_retried_other_refusals_are_not() {
        for code in [500, 502, 503, 504, 429, 408] {
            assert!(matches!(classify(StatusCode::from_u16(code).unwrap(), String::new()), NotifyError::Retryable(_)), "{code}");
        }
        for code in [400, 401, 403, 404, 413, 422, 301] {
            assert!(matches!(classify(StatusCode::from_u16(code).unwrap(), String::new()), NotifyError::Permanent(_)), "{code}");
        }
    }
}
