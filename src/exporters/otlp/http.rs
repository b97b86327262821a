//! OTLP over HTTP (`POST .../v1/traces`, protobuf).

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;

use super::body::{gzip, Parts};
use super::config::{Compression, OtlpExporterConfig};
use crate::exporters::error::{Cause, ExportError, ExportOutcome, SetupError};

/// Replies larger than this are not read (a reply is normally a few bytes).
const MAX_REPLY: usize = 1 << 20;

pub struct HttpClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Parts>,
    uri: Uri,
    headers: HeaderMap,
    compression: Compression,
}

impl HttpClient {
    pub fn new(config: &OtlpExporterConfig) -> Result<HttpClient, SetupError> {
        let invalid = |source: http::uri::InvalidUri| SetupError::Endpoint { endpoint: config.endpoint.clone(), source: source.into() };
        let mut uri: Uri = config.endpoint.parse().map_err(invalid)?;
        if uri.path() == "/" || uri.path().is_empty() {
            uri = format!("{}/v1/traces", config.endpoint.trim_end_matches('/')).parse().map_err(invalid)?;
        }
        let connector = crate::shared::https_connector(config.tls.ca_file.as_deref(), "tls.ca_file", config.timeout)?;
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(60)).build(connector);
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let header = |source: Cause| SetupError::Header { name: name.clone(), source };
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| header(e.into()))?;
            let value = HeaderValue::from_str(value).map_err(|e| header(e.into()))?;
            headers.insert(name, value);
        }
        Ok(HttpClient { client, uri, headers, compression: config.compression })
    }

    pub async fn export(&self, body: Vec<Bytes>) -> Result<ExportOutcome, ExportError> {
        let mut request = Request::post(self.uri.clone()).header(header::CONTENT_TYPE, "application/x-protobuf");
        let body = match self.compression {
            // The parts go out as they are, one after the other: a batch is not copied into a
            // body of its own while it is sent (issue 10's memory target).
            Compression::None => Parts::new(body),
            Compression::Gzip => {
                request = request.header(header::CONTENT_ENCODING, "gzip");
                Parts::new(vec![gzip(&body)])
            }
        };
        let mut request = request.body(body).map_err(|e| ExportError::permanent(format!("cannot build request: {e}")))?;
        request.headers_mut().extend(self.headers.clone());
        let response = self.client.request(request).await.map_err(|e| ExportError::retryable(format!("HTTP request failed: {e}")))?;
        let status = response.status();
        let retry_after = response.headers().get(header::RETRY_AFTER).and_then(parse_retry_after);
        let body = http_body_util::Limited::new(response.into_body(), MAX_REPLY).collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        classify(status, retry_after, &body)
    }
}

/// The OTLP spec's rules for HTTP replies.
pub fn classify(status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> Result<ExportOutcome, ExportError> {
    if status.is_success() {
        let reply = ExportTraceServiceResponse::decode(body).unwrap_or_default();
        return Ok(match reply.partial_success {
            Some(p) if p.rejected_spans > 0 => ExportOutcome { rejected_spans: p.rejected_spans as u64, message: p.error_message },
            _ => ExportOutcome::default(),
        });
    }
    let detail = String::from_utf8_lossy(&body[..body.len().min(256)]).into_owned();
    let message = format!("HTTP {status}: {detail}");
    match status.as_u16() {
        429 | 502 | 503 | 504 => Err(ExportError::Retryable { message, retry_after }),
        400 => Err(ExportError::Refused { message }),
        _ => Err(ExportError::Permanent { message }),
    }
}

/// `Retry-After` as delay-seconds or an HTTP date.
fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(text).ok()?;
    Some(when.duration_since(std::time::SystemTime::now()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_replies() {
        assert!(classify(StatusCode::OK, None, b"").unwrap().rejected_spans == 0);
        assert!(
            matches!(classify(StatusCode::SERVICE_UNAVAILABLE, Some(Duration::from_secs(3)), b""), Err(ExportError::Retryable { retry_after: Some(d), .. }) if d == Duration::from_secs(3))
        );
        assert!(matches!(classify(StatusCode::TOO_MANY_REQUESTS, None, b""), Err(ExportError::Retryable { .. })));
        assert!(matches!(classify(StatusCode::BAD_REQUEST, None, b"bad"), Err(ExportError::Refused { .. })));
        assert!(matches!(classify(StatusCode::UNAUTHORIZED, None, b""), Err(ExportError::Permanent { .. })));
        assert_eq!(parse_retry_after(&HeaderValue::from_static("7")), Some(Duration::from_secs(7)));
    }
}
