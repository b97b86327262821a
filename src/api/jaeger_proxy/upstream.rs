//! The request to Jaeger: its URL, the headers that may travel (never a credential), and the
//! client that sends it.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Request headers passed on to Jaeger. Everything else stays here: `Authorization`, `Cookie`
/// and `X-Forwarded-Access-Token` above all, and tracegate's own forwarding headers.
const REQUEST_HEADERS: &[HeaderName] = &[
    header::ACCEPT,
    header::ACCEPT_LANGUAGE,
    header::CACHE_CONTROL,
    header::CONTENT_TYPE,
    header::IF_MODIFIED_SINCE,
    header::IF_NONE_MATCH,
    header::USER_AGENT,
];

/// Response headers never passed back: hop-by-hop headers and cookies of Jaeger's own.
const DROPPED_RESPONSE_HEADERS: &[HeaderName] = &[
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::SET_COOKIE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub struct Upstream {
    /// Scheme and authority of Jaeger's query service.
    base: Uri,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

/// Why the proxy to Jaeger cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum ProxySetupError {
    #[error("api.jaeger_ui.upstream {upstream:?}")]
    Upstream {
        upstream: String,
        #[source]
        source: http::uri::InvalidUri,
    },
    #[error(transparent)]
    Tls(#[from] crate::shared::TlsError),
}

impl Upstream {
    pub fn new(upstream: &str, ca_file: Option<&std::path::Path>, timeout: Duration) -> Result<Upstream, ProxySetupError> {
        let base: Uri = upstream.parse().map_err(|source| ProxySetupError::Upstream { upstream: upstream.to_string(), source })?;
        let connector = crate::shared::https_connector(ca_file, "api.jaeger_ui.ca_file", timeout)?;
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        Ok(Upstream { base, client, timeout })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Jaeger's URL for `path_and_query` (the prefix kept: Jaeger serves under the same base path).
    fn uri(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        let mut parts = self.base.clone().into_parts();
        parts.path_and_query = Some(path_and_query.parse()?);
        Ok(Uri::from_parts(parts)?)
    }

    /// Sends one request; `compressed` lets Jaeger compress its answer (for answers passed on
    /// unread). Within the timeout for the answer's head; the body is read by the caller.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Bytes,
        compressed: bool,
        request_id: &str,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let uri = self.uri(path_and_query).map_err(|e| UpstreamError::Request(e.to_string()))?;
        let mut request =
            Request::builder().method(method).uri(uri).body(Full::new(body)).map_err(|e| UpstreamError::Request(e.to_string()))?;
        let out = request.headers_mut();
        for name in REQUEST_HEADERS {
            for value in headers.get_all(name) {
                out.append(name.clone(), value.clone());
            }
        }
        if compressed {
            if let Some(value) = headers.get(header::ACCEPT_ENCODING) {
                out.insert(header::ACCEPT_ENCODING, value.clone());
            }
        }
        if let Ok(value) = HeaderValue::from_str(request_id) {
            out.insert("x-request-id", value);
        }
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => Err(UpstreamError::Unreachable(crate::shared::error_chain(&error))),
            Err(_) => Err(UpstreamError::Timeout(self.timeout)),
        }
    }
}

/// The headers of Jaeger's answer that go back to the browser.
pub fn response_headers(from: &HeaderMap) -> HeaderMap {
    let mut headers = from.clone();
    for name in DROPPED_RESPONSE_HEADERS {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    headers
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot build the request to Jaeger: {0}")]
    Request(String),
    #[error("Jaeger cannot be reached: {0}")]
    Unreachable(String),
    #[error("Jaeger did not answer within {0:?}")]
    Timeout(Duration),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_and_query_are_kept_and_credentials_never_travel() {
        let upstream = Upstream::new("http://jaeger-query:16686", None, Duration::from_secs(1)).unwrap();
        let uri = upstream.uri("/jaeger/api/traces?service=shop-api&limit=20").unwrap();
        assert_eq!(uri.to_string(), "http://jaeger-query:16686/jaeger/api/traces?service=shop-api&limit=20");
        for name in ["authorization", "cookie", "x-forwarded-access-token", "x-forwarded-for", "host"] {
            assert!(!REQUEST_HEADERS.iter().any(|h| h == name), "{name} would be sent to Jaeger");
        }
        let mut from = HeaderMap::new();
        from.insert(header::SET_COOKIE, HeaderValue::from_static("a=b"));
        from.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        let back = response_headers(&from);
        assert!(back.get(header::SET_COOKIE).is_none());
        assert_eq!(back.get(header::CONTENT_TYPE).unwrap(), "text/html");
    }
}
