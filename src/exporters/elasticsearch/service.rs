//! Talking to Elasticsearch: the `elasticsearch` crate's transport (node pool, auth, TLS) and the
//! few requests the exporter makes with it (bulk, search, templates).

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::headers::{HeaderMap, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE};
use elasticsearch::http::transport::{MultiNodeConnectionPool, Transport, TransportBuilder};
use elasticsearch::http::Method;
use elasticsearch::http::Url;

use super::config::{Auth, ElasticsearchExporterConfig};
use super::error::EsError;
use crate::exporters::error::SetupError;
use crate::shared::{on_blocking_pool, RuntimeShutdown};

/// A reply as far as the exporter reads it.
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Bytes,
}

impl Reply {
    /// `Retry-After`, read (seconds or an HTTP date, at most 5 minutes).
    pub fn retry_hint(&self) -> Option<Duration> {
        self.retry_after.as_deref().and_then(super::retry::parse_retry_after)
    }
}

#[derive(Clone)]
pub struct EsClient {
    transport: Transport,
    compression: bool,
    timeout: Duration,
}

impl EsClient {
    pub fn new(config: &ElasticsearchExporterConfig) -> Result<EsClient, SetupError> {
        let urls: Vec<Url> = config
            .endpoints
            .iter()
            .map(|e| Url::parse(e).map_err(|err| SetupError::Endpoint { endpoint: e.clone(), source: err.into() }))
            .collect::<Result<_, _>>()?;
        let pool = MultiNodeConnectionPool::round_robin(urls, None);
        let mut builder = TransportBuilder::new(pool).timeout(config.timeout).enable_meta_header(false);
        builder = match config.auth.resolve() {
            Auth::None => builder,
            Auth::Basic(user, password) => builder.auth(Credentials::Basic(user, password)),
            Auth::ApiKey(key) => builder.auth(Credentials::EncodedApiKey(key)),
            Auth::Bearer(token) => builder.auth(Credentials::Bearer(token)),
        };
        if config.tls.insecure_skip_verify {
            builder = builder.cert_validation(CertificateValidation::None);
        } else if let Some(ca) = &config.tls.ca_file {
            let pem = std::fs::read(ca).map_err(|source| SetupError::ReadCaFile { path: ca.clone(), source })?;
            let cert = Certificate::from_pem(&pem).map_err(|e| SetupError::CaFile { path: ca.clone(), source: e.into() })?;
            builder = builder.cert_validation(CertificateValidation::Full(cert));
        }
        let transport = builder.build().map_err(|e| SetupError::Client(e.into()))?;
        Ok(EsClient { transport, compression: config.compression, timeout: config.timeout })
    }

    /// Each request's timeout (the exporter's `timeout`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends a request; `Err` when no HTTP reply came back (connection refused, timeout).
    pub async fn request(&self, method: Method, path: &str, body: Option<Bytes>, content_type: &'static str) -> Result<Reply, EsError> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        let body = match body {
            Some(b) if self.compression => {
                headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                Some(gzip(std::iter::once(&b[..])))
            }
            other => other,
        };
        let response = self.transport.send(method, path, headers, None::<&()>, body, Some(self.timeout)).await?;
        let status = response.status_code().as_u16();
        let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(String::from);
        let body = response.bytes().await?;
        Ok(Reply { status, retry_after, body })
    }

    /// The body of a bulk request made of these NDJSON parts: gzip-compressed as it is
    /// assembled (no uncompressed copy), or concatenated.
    pub fn bulk_body<'a>(&self, parts: impl Iterator<Item = &'a [u8]> + Clone) -> BulkBody {
        if self.compression {
            return BulkBody(gzip(parts));
        }
        let mut body = Vec::with_capacity(parts.clone().map(<[u8]>::len).sum());
        parts.for_each(|p| body.extend_from_slice(p));
        BulkBody(Bytes::from(body))
    }

    /// [`EsClient::bulk_body`] of these parts, gzip-compressed on the blocking pool (milliseconds
    /// of CPU for a batch, which must not hold an executor thread); concatenated right here when
    /// the client does not compress.
    pub async fn bulk_body_off_thread(&self, parts: Vec<Bytes>) -> Result<BulkBody, RuntimeShutdown> {
        if !self.compression {
            return Ok(self.bulk_body(parts.iter().map(|p| &p[..])));
        }
        on_blocking_pool(move || BulkBody(gzip(parts.iter().map(|p| &p[..])))).await
    }

    /// `POST /_bulk`; returns the reply and the bytes put on the wire.
    pub async fn bulk(&self, body: &BulkBody) -> Result<(Reply, usize), EsError> {
        let body = body.0.clone();
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
        if self.compression {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        let sent = body.len();
        let response = self.transport.send(Method::Post, "/_bulk", headers, None::<&()>, Some(body), Some(self.timeout)).await?;
        let status = response.status_code().as_u16();
        let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(String::from);
        let body = response.bytes().await?;
        Ok((Reply { status, retry_after, body }, sent))
    }

    /// `POST {index}/_search` with a JSON query; the reply body when it is 2xx (no index yet:
    /// no hits).
    pub async fn search_bytes(&self, index: &str, query: &serde_json::Value) -> Result<Bytes, EsError> {
        let path = format!("/{index}/_search");
        let reply = self.request(Method::Post, &path, Some(Bytes::from(query.to_string())), "application/json").await?;
        if reply.status == 404 {
            return Ok(Bytes::from_static(br#"{"hits": {"total": {"value": 0}, "hits": []}}"#));
        }
        if !(200..300).contains(&reply.status) {
            return Err(EsError::Status {
                what: format!("search {path}"),
                status: reply.status,
                body: String::from_utf8_lossy(&reply.body).into_owned(),
            });
        }
        Ok(reply.body)
    }

    /// `POST {index}/_search`, the reply as JSON.
    pub async fn search(&self, index: &str, query: &serde_json::Value) -> Result<serde_json::Value, EsError> {
        let body = self.search_bytes(index, query).await?;
        serde_json::from_slice(&body).map_err(|source| EsError::Unreadable { what: format!("search /{index}/_search"), source })
    }
}

/// A bulk request body as `EsClient::bulk_body` made it (compressed when the client compresses).
#[derive(Clone)]
pub struct BulkBody(Bytes);

/// Fast gzip of the parts one after another: bulk bodies are cheap to compress and the exporter
/// must keep up with ingest.
fn gzip<'a>(parts: impl Iterator<Item = &'a [u8]> + Clone) -> Bytes {
    let size: usize = parts.clone().map(<[u8]>::len).sum();
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(size / 6), flate2::Compression::fast());
    for part in parts {
        // Writing into a Vec cannot fail.
        let _ = encoder.write_all(part);
    }
    Bytes::from(encoder.finish().unwrap_or_default())
}
