//! OTLP over gRPC. Batches are sent as the bytes already encoded by `Payload`, so a span passing
//! through is never re-encoded per exporter.

use std::time::Duration;

use bytes::{BufMut, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

use super::config::{Compression, OtlpExporterConfig};
use crate::exporters::error::{Cause, ExportError, ExportOutcome, SetupError};

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

pub struct GrpcClient {
    channel: Channel,
    metadata: MetadataMap,
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
        Ok(GrpcClient { channel: endpoint.connect_lazy(), metadata, compression: config.compression })
    }

    pub async fn export(&self, body: Vec<Bytes>) -> Result<ExportOutcome, ExportError> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone()).accept_compressed(CompressionEncoding::Gzip);
        if self.compression == Compression::Gzip {
            grpc = grpc.send_compressed(CompressionEncoding::Gzip);
        }
        grpc.ready().await.map_err(|e| ExportError::retryable(format!("connection not ready: {e}")))?;
        let mut request = tonic::Request::new(body);
        *request.metadata_mut() = self.metadata.clone();
        let path = http::uri::PathAndQuery::from_static(EXPORT_PATH);
        match grpc.unary(request, path, RawCodec).await {
            Ok(response) => {
                let reply = response.into_inner();
                Ok(match reply.partial_success {
                    Some(p) if p.rejected_spans > 0 => ExportOutcome { rejected_spans: p.rejected_spans as u64, message: p.error_message },
                    _ => ExportOutcome::default(),
                })
            }
            Err(status) => Err(classify(&status)),
        }
    }
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

/// Sends pre-encoded request bodies and decodes the reply.
#[derive(Clone, Copy)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<Bytes>;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Vec<Bytes>;
    type Error = Status;
    fn encode(&mut self, item: Vec<Bytes>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // One allocation of the body's size: grown by doubling instead, a batch of a few MiB
        // held its old and new buffers at once and ended in one up to twice its size, per
        // consumer (issue 10's memory target).
        dst.reserve(item.iter().map(Bytes::len).sum());
        for part in item {
            dst.put_slice(&part);
        }
        Ok(())
    }
}

struct ResponseDecoder;

impl Decoder for ResponseDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<ExportTraceServiceResponse>, Status> {
        ExportTraceServiceResponse::decode(src).map(Some).map_err(|e| Status::internal(format!("invalid reply: {e}")))
    }
}
