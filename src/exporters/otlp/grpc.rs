//! OTLP over gRPC. Batches are sent as the bytes already encoded by `Payload`, so a span passing
//! through is never re-encoded per exporter, nor copied into a message buffer.

use std::time::Duration;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::codec::{DecodeBuf, Decoder};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

use tower::{Service, ServiceExt};

use super::body::Parts;
use super::config::{Compression, OtlpExporterConfig};
use crate::exporters::error::{Cause, ExportError, ExportOutcome, SetupError};

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

pub struct GrpcClient {
    channel: Channel,
    /// The configured headers (checked as gRPC metadata), without those gRPC reserves.
    headers: http::HeaderMap,
    compression: Compression,
}

impl GrpcClient {
    pub fn new(config: &OtlpExporterConfig) -> Result<GrpcClient, SetupError> {
        let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
            .map_err(|e| SetupError::Endpoint { endpoint: config.endpoint.clone(), source: e.into() })?
            .connect_timeout(config.timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30));
        if config.endpoint.starts_with("https://") {
            let mut tls = ClientTlsConfig::new();
            tls = match &config.tls.ca_file {
                Some(path) => {
                    let pem = std::fs::read(path).map_err(|source| SetupError::ReadCaFile { path: path.clone(), source })?;
                    tls.ca_certificate(Certificate::from_pem(pem))
                }
                None => tls.with_webpki_roots(),
            };
            endpoint = endpoint.tls_config(tls).map_err(|e| SetupError::TlsSetup(e.into()))?;
        }
        let mut metadata = MetadataMap::new();
        for (name, value) in &config.headers {
            let header = |source: Cause| SetupError::Header { name: name.clone(), source };
            let key = MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes()).map_err(|e| header(e.into()))?;
            let value = MetadataValue::try_from(value.as_str()).map_err(|e| header(e.into()))?;
            metadata.insert(key, value);
        }
        let headers = metadata
            .into_headers()
            .into_iter()
            .filter_map(|(name, value)| name.filter(|n| !RESERVED_HEADERS.contains(&n.as_str())).map(|n| (n, value)))
            .collect();
        Ok(GrpcClient { channel: endpoint.connect_lazy(), headers, compression: config.compression })
    }

    /// Sends the batch as one unary `Export` call. The request is made here rather than by
    /// tonic's client so that the batch's parts go out as they are: tonic encodes a message into
    /// a buffer of its own, a copy of the whole batch (a few MiB) per call in flight (issue 10's
    /// memory target). The reply goes through tonic's decoder and status rules as before.
    pub async fn export(&self, body: Vec<Bytes>) -> Result<ExportOutcome, ExportError> {
        let gzip = self.compression == Compression::Gzip;
        let message = if gzip { vec![super::body::gzip(&body)] } else { body };
        let len = message.iter().map(Bytes::len).sum::<usize>();
        let len = u32::try_from(len).map_err(|_| ExportError::permanent(format!("a batch of {len} bytes is over gRPC's 4 GiB")))?;
        // The gRPC message prefix: compressed or not, and the length.
        let mut prefix = Vec::with_capacity(5);
        prefix.push(u8::from(gzip));
        prefix.extend_from_slice(&len.to_be_bytes());
        let mut frames = Vec::with_capacity(message.len() + 1);
        frames.push(Bytes::from(prefix));
        frames.extend(message);

        let mut request = http::Request::new(tonic::body::Body::new(Parts::new(frames)));
        // Only the path: the channel adds the endpoint's scheme and authority.
        *request.uri_mut() = http::Uri::from_static(EXPORT_PATH);
        *request.method_mut() = http::Method::POST;
        *request.version_mut() = http::Version::HTTP_2;
        *request.headers_mut() = self.headers.clone();
        let headers = request.headers_mut();
        headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
        headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
        if gzip {
            headers.insert("grpc-encoding", http::HeaderValue::from_static("gzip"));
        }
        // A server may compress its reply with the request's encoding whatever the client
        // accepts (grpc-go does): gzip is read either way.
        headers.insert("grpc-accept-encoding", http::HeaderValue::from_static("gzip"));

        let mut channel = self.channel.clone();
        ServiceExt::<http::Request<tonic::body::Body>>::ready(&mut channel)
            .await
            .map_err(|e| ExportError::retryable(format!("connection not ready: {e}")))?;
        let response = channel.call(request).await.map_err(|e| classify(&Status::from_error(e.into())))?;
        let reply = read_reply(response).await.map_err(|status| classify(&status))?;
        Ok(match reply.partial_success {
            Some(p) if p.rejected_spans > 0 => ExportOutcome { rejected_spans: p.rejected_spans as u64, message: p.error_message },
            _ => ExportOutcome::default(),
        })
    }
}

/// Headers that a configured header may not replace (tonic leaves them out of a call's metadata;
/// a configured `user-agent` goes before the channel's own, as with tonic's client).
const RESERVED_HEADERS: [&str; 5] = ["te", "content-type", "grpc-message", "grpc-message-type", "grpc-status"];

/// The reply of a unary call, read as tonic's client reads it: a `grpc-status` in the headers
/// (a trailers-only reply) ends it; otherwise one message, then the status in the trailers (or
/// from the HTTP status when there is none).
async fn read_reply(response: http::Response<tonic::body::Body>) -> Result<ExportTraceServiceResponse, Status> {
    if let Some(status) = Status::from_header_map(response.headers()) {
        return Err(if status.code() == Code::Ok { Status::internal("Missing response message.") } else { status });
    }
    let encoding = match response.headers().get("grpc-encoding").map(http::HeaderValue::as_bytes) {
        None | Some(b"identity") => None,
        Some(b"gzip") => Some(tonic::codec::CompressionEncoding::Gzip),
        Some(other) => {
            return Err(Status::unimplemented(format!(
                "the reply is compressed with {}, which is not supported",
                String::from_utf8_lossy(other)
            )))
        }
    };
    let status_code = response.status();
    let mut stream = tonic::codec::Streaming::new_response(ResponseDecoder, response.into_body(), status_code, encoding, None);
    let reply = stream.message().await?.ok_or_else(|| Status::internal("Missing response message."))?;
    stream.trailers().await?;
    Ok(reply)
}

/// The OTLP spec's retry rules for gRPC status codes.
pub fn classify(status: &Status) -> ExportError {
    use tonic_types::StatusExt;
    let retry_after = status.get_details_retry_info().and_then(|r| r.retry_delay);
    let message = format!("gRPC {:?}: {}", status.code(), status.message());
    match status.code() {
        Code::Unavailable | Code::Cancelled | Code::DeadlineExceeded | Code::Aborted | Code::OutOfRange | Code::DataLoss => {
            ExportError::Retryable { message, retry_after }
        }
        // Throttling is retryable only when the server says when to come back.
        Code::ResourceExhausted if retry_after.is_some() => ExportError::Retryable { message, retry_after },
        // The content, not the connection or the credentials: a few spans may be to blame.
        Code::InvalidArgument => ExportError::Refused { message },
        _ => ExportError::Permanent { message },
    }
}

/// Decodes the reply of `Export`.
struct ResponseDecoder;

impl Decoder for ResponseDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<ExportTraceServiceResponse>, Status> {
        ExportTraceServiceResponse::decode(src).map(Some).map_err(|e| Status::internal(format!("invalid reply: {e}")))
    }
}
