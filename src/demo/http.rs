//! The few plain-HTTP calls of a demo run (order events, the read API, Jaeger's query API).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

/// One call's budget; a gateway or Jaeger that takes longer is asked again.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub(crate) struct HttpClient(Client<HttpConnector, Full<Bytes>>);

/// A reply: status and body, or why there was none.
pub(crate) type Reply = Result<(u16, Bytes), CallError>;

/// Why a call got no reply.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    #[error("bad request to {url}")]
    Request {
        url: String,
        #[source]
        source: http::Error,
    },
    #[error("no reply")]
    Transport(#[source] hyper_util::client::legacy::Error),
    #[error("reading the reply")]
    Body(#[source] hyper::Error),
    #[error("no reply within {0:?}")]
    TimedOut(Duration),
    /// A poll's reply before the first call.
    #[error("not asked yet")]
    NotAsked,
}

impl HttpClient {
    pub(crate) fn new() -> Self {
        HttpClient(Client::builder(TokioExecutor::new()).build_http())
    }

    pub(crate) async fn get(&self, url: &str) -> Reply {
        self.call(http::Method::GET, url, Bytes::new()).await
    }

    pub(crate) async fn post_json(&self, url: &str, body: Bytes) -> Reply {
        self.call(http::Method::POST, url, body).await
    }

    async fn call(&self, method: http::Method, url: &str, body: Bytes) -> Reply {
        let request = http::Request::builder()
            .method(method)
            .uri(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|source| CallError::Request { url: url.to_string(), source })?;
        let call = async {
            let response = self.0.request(request).await.map_err(CallError::Transport)?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.map_err(CallError::Body)?.to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(CALL_TIMEOUT, call).await.unwrap_or(Err(CallError::TimedOut(CALL_TIMEOUT)))
    }
}

/// Percent-encodes a path segment or query value (everything but RFC 3986's unreserved characters).
pub(crate) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The first 200 characters of a reply, for an error message.
pub(crate) fn describe(reply: &Reply) -> String {
    match reply {
        Ok((status, body)) => {
            let text = String::from_utf8_lossy(body);
            let text: String = text.chars().take(200).collect();
            format!("HTTP {status}: {}", text.trim())
        }
        Err(error) => crate::shared::error_chain(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_encoded_for_a_query_string() {
        assert_eq!(encode(r#"{"order.id":"A-1001"}"#), "%7B%22order.id%22%3A%22A-1001%22%7D");
        assert_eq!(encode("A 1/2"), "A%201%2F2");
    }
}
