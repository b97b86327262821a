//! One export request over OTLP/gRPC or OTLP/HTTP, and what its reply means.

use bytes::{BufMut, Bytes};
use http::header::CONTENT_TYPE;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};

use super::args::{Protocol, RequestHeader};
use super::error::LoadgenError;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const HTTP_TRACES_PATH: &str = "/v1/traces";
const PROTOBUF: &str = "application/x-protobuf";

/// How the gateway answered one export request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// OK / 2xx; `rejected_spans` from `partial_success`.
    Accepted { rejected_spans: u64 },
    /// The gateway answered with a non-OK status (e.g. UNAVAILABLE / 503 when its queue is full).
    Refused(String),
    /// No answer from the gateway: connection failed, reset, or the reply was unreadable.
    Failed(String),
}

/// A client for one endpoint; cheap to clone, and clones share connections.
#[derive(Clone)]
pub(crate) enum ExportClient {
    // Boxed because the two differ much in size; each worker holds one.
    Grpc(Box<GrpcExport>),
    Http(Box<HttpExport>),
}

#[derive(Clone)]
pub(crate) struct GrpcExport {
    grpc: tonic::client::Grpc<Channel>,
    metadata: MetadataMap,
}

#[derive(Clone)]
pub(crate) struct HttpExport {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: Uri,
    headers: HeaderMap,
}

impl ExportClient {
    /// One client per worker. Each worker stands for one SDK instance, which exports one
    /// request at a time over its own connection: gRPC gets a connection per client (so a
    /// stall on one connection does not hold up every worker), HTTP/1.1 opens one per request
    /// in flight anyway from the shared pool.
    pub(crate) async fn connect_many(
        protocol: Protocol,
        endpoint: &str,
        headers: &[RequestHeader],
        count: usize,
    ) -> Result<Vec<Self>, LoadgenError> {
        let first = Self::connect(protocol, endpoint, headers).await?;
        let mut clients = Vec::with_capacity(count);
        for _ in 1..count {
            clients.push(match protocol {
                Protocol::Grpc => Self::connect(protocol, endpoint, headers).await?,
                Protocol::Http => first.clone(),
            });
        }
        clients.push(first);
        Ok(clients)
    }

    /// For gRPC this opens the connection, so a gateway that is not listening fails here.
    pub(crate) async fn connect(protocol: Protocol, endpoint: &str, headers: &[RequestHeader]) -> Result<Self, LoadgenError> {
        let uri: Uri = endpoint.parse().map_err(|source| LoadgenError::InvalidEndpoint { endpoint: endpoint.to_string(), source })?;
        if uri.scheme_str() != Some("http") {
            return Err(LoadgenError::UnsupportedScheme { endpoint: endpoint.to_string() });
        }
        let mut header_map = HeaderMap::new();
        for header in headers {
            header_map.append(header.name.clone(), header.value.clone());
        }
        match protocol {
            Protocol::Grpc => {
                let channel = Endpoint::from(uri)
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .map_err(|source| LoadgenError::Connect { endpoint: endpoint.to_string(), source })?;
                Ok(ExportClient::Grpc(Box::new(GrpcExport {
                    grpc: tonic::client::Grpc::new(channel),
                    metadata: MetadataMap::from_headers(header_map),
                })))
            }
            Protocol::Http => {
                let uri =
                    traces_uri(endpoint).map_err(|source| LoadgenError::InvalidEndpoint { endpoint: endpoint.to_string(), source })?;
                header_map.insert(CONTENT_TYPE, HeaderValue::from_static(PROTOBUF));
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                let client = Client::builder(TokioExecutor::new()).build(connector);
                Ok(ExportClient::Http(Box::new(HttpExport { client, uri, headers: header_map })))
            }
        }
    }

    /// Sends one encoded `ExportTraceServiceRequest`.
    pub(crate) async fn export(&mut self, body: Bytes) -> Reply {
        match self {
            ExportClient::Grpc(grpc) => export_grpc(&mut grpc.grpc, &grpc.metadata, body).await,
            ExportClient::Http(http) => http.export(body).await,
        }
    }
}

/// `{endpoint}/v1/traces`, unless the endpoint already names the path.
fn traces_uri(endpoint: &str) -> Result<Uri, http::uri::InvalidUri> {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with(HTTP_TRACES_PATH) {
        base.parse()
    } else {
        format!("{base}{HTTP_TRACES_PATH}").parse()
    }
}

async fn export_grpc(grpc: &mut tonic::client::Grpc<Channel>, metadata: &MetadataMap, body: Bytes) -> Reply {
    if let Err(error) = grpc.ready().await {
        return Reply::Failed(format!("gRPC channel not ready: {error}"));
    }
    let mut request = tonic::Request::new(body);
    *request.metadata_mut() = metadata.clone();
    let path = PathAndQuery::from_static(EXPORT_PATH);
    match grpc.unary(request, path, PreEncoded).await {
        Ok(response) => Reply::Accepted { rejected_spans: rejected(&response.into_inner()) },
        // A status the server sent has no source; one made up by the client from a transport
        // error (refused connection, reset stream) carries that error as its source.
        Err(status) if std::error::Error::source(&status).is_none() => {
            Reply::Refused(format!("gRPC {:?}: {}", status.code(), status.message()))
        }
        Err(status) => Reply::Failed(format!("gRPC {:?}: {}", status.code(), status.message())),
    }
}

impl HttpExport {
    async fn export(&self, body: Bytes) -> Reply {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        export_http(&self.client, request).await
    }
}

async fn export_http(client: &Client<HttpConnector, Full<Bytes>>, request: Request<Full<Bytes>>) -> Reply {
    let response = match client.request(request).await {
        Ok(response) => response,
        Err(error) => return Reply::Failed(format!("HTTP request failed: {error}")),
    };
    let status = response.status();
    // Read the whole body so the connection can carry the next request.
    let body = match response.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => return Reply::Failed(format!("reading HTTP {status} reply failed: {error}")),
    };
    if status.is_success() {
        // An unreadable 2xx body still means accepted; only partial_success is lost.
        let rejected_spans = ExportTraceServiceResponse::decode(body).map(|r| rejected(&r)).unwrap_or(0);
        Reply::Accepted { rejected_spans }
    } else {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        Reply::Refused(format!("HTTP {status}: {text}"))
    }
}

fn rejected(response: &ExportTraceServiceResponse) -> u64 {
    response.partial_success.as_ref().map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0))
}

/// A gRPC codec whose requests are already-encoded protobuf, so a run spends nothing on
/// encoding; replies are decoded as `ExportTraceServiceResponse`.
#[derive(Debug, Clone, Copy, Default)]
struct PreEncoded;

impl Codec for PreEncoded {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = PreEncoded;
    type Decoder = PreEncoded;

    fn encoder(&mut self) -> Self::Encoder {
        PreEncoded
    }

    fn decoder(&mut self) -> Self::Decoder {
        PreEncoded
    }
}

impl Encoder for PreEncoded {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for PreEncoded {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|error| tonic::Status::internal(format!("undecodable export response: {error}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_path_is_appended_once() {
        assert_eq!(traces_uri("http://127.0.0.1:4318").unwrap(), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(traces_uri("http://127.0.0.1:4318/").unwrap(), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(traces_uri("http://gw:4318/v1/traces").unwrap(), "http://gw:4318/v1/traces");
    }

    #[tokio::test]
    async fn https_and_garbage_endpoints_are_refused_up_front() {
        let https = ExportClient::connect(Protocol::Http, "https://127.0.0.1:4318", &[]).await;
        assert!(matches!(https, Err(LoadgenError::UnsupportedScheme { .. })));
        let garbage = ExportClient::connect(Protocol::Grpc, "http://exa mple:1", &[]).await;
        assert!(matches!(garbage, Err(LoadgenError::InvalidEndpoint { .. })));
    }

    #[tokio::test]
    async fn grpc_to_a_closed_port_fails_to_connect() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let result = ExportClient::connect(Protocol::Grpc, &format!("http://127.0.0.1:{port}"), &[]).await;
        assert!(matches!(result, Err(LoadgenError::Connect { .. })));
    }
}
