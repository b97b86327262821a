//! `tracegate bench-elasticsearch`: how many span documents the exporter encodes and sends per
//! CPU-second of this process, with the load generator's shop traffic (about 9 attributes per
//! span). Encoding is measured alone (bulk NDJSON, then gzip); sending goes through the real
//! exporter (`export` calls of `--batch` spans) to `--endpoint` (noida-db, a cluster, or
//! anything that answers `_bulk`).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::config::{ElasticsearchExporterConfig, OrdersConfig, TargetConfig, TargetMode};
use super::encoder::SpanEncoder;
use super::ElasticsearchExporter;
use crate::loadgen::TrafficGenerator;
use crate::pipeline::Payload;

pub struct BenchFigures {
    pub spans: usize,
    pub encode_docs_per_cpu_second: f64,
    pub encode_bytes_per_doc: f64,
    pub gzip_docs_per_cpu_second: f64,
    pub gzip_ratio: f64,
    /// (docs per wall second, docs per CPU-second) through the exporter, if an endpoint was given.
    pub send: Option<(f64, f64)>,
    pub send_orders: Option<(f64, f64)>,
}

/// Why a benchmark run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("gzip failed")]
    Gzip(#[source] std::io::Error),
    #[error("the benchmark's exporter configuration")]
    Config(#[source] serde_yaml_ng::Error),
    #[error(transparent)]
    Setup(#[from] crate::exporters::error::SetupError),
    #[error("export failed")]
    Export(#[source] crate::exporters::error::ExportError),
    #[error("a sending task failed")]
    Task(#[source] tokio::task::JoinError),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the endpoint failed")]
    Serve(#[source] std::io::Error),
}

fn payloads(spans: usize, per_request: usize) -> Vec<Arc<Payload>> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
    let mut generator = TrafficGenerator::new(7, now);
    (0..spans.div_ceil(per_request)).map(|_| Arc::new(Payload::new(generator.request(per_request).resource_spans))).collect()
}

pub async fn run(endpoint: Option<String>, spans: usize, batch: usize) -> Result<BenchFigures, BenchError> {
    let encoder = SpanEncoder::new(TargetConfig { mode: TargetMode::Index, ..Default::default() }, vec!["constructor.file_id".into()]);
    let input = payloads(spans, 100);
    let count: usize = input.iter().map(|p| p.span_count()).sum();

    let cpu = crate::shared::process_cpu_time();
    let started = Instant::now();
    let mut batches = Vec::new();
    for chunk in input.chunks(batch / 100) {
        let mut items = Vec::new();
        for p in chunk {
            encoder.encode(&p.resource_spans(), &mut items);
        }
        batches.push(items);
    }
    let encode_cpu = (crate::shared::process_cpu_time() - cpu).max(started.elapsed().min(Duration::from_millis(10)));
    let bytes: usize = batches.iter().flatten().map(|i| i.lines.len()).sum();

    // The exporter's own gzip step: items compressed as the body is assembled.
    let cpu = crate::shared::process_cpu_time();
    let mut compressed = 0;
    for items in &batches {
        let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(bytes / batches.len() / 6), flate2::Compression::fast());
        for item in items {
            std::io::Write::write_all(&mut encoder, &item.lines).map_err(BenchError::Gzip)?;
        }
        compressed += encoder.finish().map_err(BenchError::Gzip)?.len();
    }
    let gzip_cpu = (crate::shared::process_cpu_time() - cpu).max(Duration::from_millis(10));

    let mut figures = BenchFigures {
        spans: count,
        encode_docs_per_cpu_second: count as f64 / encode_cpu.as_secs_f64(),
        encode_bytes_per_doc: bytes as f64 / count as f64,
        gzip_docs_per_cpu_second: count as f64 / gzip_cpu.as_secs_f64(),
        gzip_ratio: bytes as f64 / compressed.max(1) as f64,
        send: None,
        send_orders: None,
    };
    if let Some(endpoint) = endpoint {
        figures.send = Some(send(&endpoint, &input, batch, false).await?);
        figures.send_orders = Some(send(&endpoint, &payloads(spans / 5, 100), batch, true).await?);
    }
    Ok(figures)
}

/// Exports every payload (batches of `batch` spans, two in flight as two queue consumers would).
async fn send(endpoint: &str, input: &[Arc<Payload>], batch: usize, orders: bool) -> Result<(f64, f64), BenchError> {
    let run = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    let yaml = format!("endpoints: [\"{endpoint}\"]\nmapping: {{mode: index, index: \"bench-{run}\"}}\ndead_letter_path: /tmp/tracegate-bench-dead-letter.jsonl\n");
    let mut config: ElasticsearchExporterConfig = serde_yaml_ng::from_str(&yaml).map_err(BenchError::Config)?;
    config.orders = if orders {
        OrdersConfig { index: format!("bench-orders-{run}"), ..Default::default() }
    } else {
        OrdersConfig { index: String::new(), ..Default::default() }
    };
    let metrics = crate::telemetry::Metrics::new();
    let exporter = Arc::new(ElasticsearchExporter::new("bench", &config, &["constructor.file_id".into()], metrics.elasticsearch("bench"))?);
    let count: usize = input.iter().map(|p| p.span_count()).sum();
    let mut batches: Vec<Vec<Arc<Payload>>> = input.chunks((batch / 100).max(1)).map(|c| c.to_vec()).collect();
    batches.reverse();
    let work = Arc::new(tokio::sync::Mutex::new(batches));
    let cpu = crate::shared::process_cpu_time();
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..2 {
        let (exporter, work) = (exporter.clone(), work.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let Some(b) = work.lock().await.pop() else { break };
                exporter.export(b).await.map_err(BenchError::Export)?;
            }
            Ok::<(), BenchError>(())
        }));
    }
    for w in workers {
        w.await.map_err(BenchError::Task)??;
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = (crate::shared::process_cpu_time() - cpu).as_secs_f64().max(0.01);
    Ok((count as f64 / wall, count as f64 / cpu))
}

/// An endpoint that answers `_bulk` like a healthy cluster that stores every document (one
/// `201 created` item per action, the size of Elasticsearch's own), and `{}` to anything else:
/// what sending costs the exporter when the far end costs nothing. Runs until the process is
/// stopped; counts documents on stderr every 10 s.
pub async fn serve_null(addr: &str) -> Result<(), BenchError> {
    use axum::body::Bytes;
    use axum::http::{header, HeaderMap, StatusCode};
    use std::sync::atomic::{AtomicU64, Ordering};

    static DOCS: AtomicU64 = AtomicU64::new(0);
    const ITEM: &str = r#"{"create":{"_index":"tracegate-spans-2026.11.21","_id":"0123456789abcdef0123456789abcdef0123456789abcdef","_version":1,"result":"created","_shards":{"total":2,"successful":1,"failed":0},"_seq_no":0,"_primary_term":1,"status":201}}"#;

    fn plain(headers: &HeaderMap, body: &Bytes) -> Option<Vec<u8>> {
        if headers.get(header::CONTENT_ENCODING).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip")) {
            let mut out = Vec::with_capacity(body.len() * 8);
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut out).ok()?;
            Some(out)
        } else {
            Some(body.to_vec())
        }
    }

    /// Every document asked for is missing (nothing is ever stored).
    async fn mget(headers: HeaderMap, body: Bytes) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
        let json = [(header::CONTENT_TYPE, "application/json")];
        let Some(Ok(request)) = plain(&headers, &body).map(|b| serde_json::from_slice::<serde_json::Value>(&b)) else {
            return (StatusCode::BAD_REQUEST, json, r#"{"error":"unreadable body"}"#.into());
        };
        let docs: Vec<serde_json::Value> = request["docs"]
            .as_array()
            .map(|d| d.iter().map(|d| serde_json::json!({"_index": d["_index"], "_id": d["_id"], "found": false})).collect())
            .unwrap_or_default();
        (StatusCode::OK, json, serde_json::json!({ "docs": docs }).to_string())
    }

    async fn bulk(headers: HeaderMap, body: Bytes) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
        let Some(text) = plain(&headers, &body) else {
            return (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "application/json")], r#"{"error":"bad gzip"}"#.into());
        };
        let items = text.iter().filter(|b| **b == b'\n').count() / 2;
        DOCS.fetch_add(items as u64, Ordering::Relaxed);
        let mut reply = String::with_capacity(40 + items * (ITEM.len() + 1));
        reply.push_str(r#"{"took":3,"errors":false,"items":["#);
        for i in 0..items {
            if i > 0 {
                reply.push(',');
            }
            reply.push_str(ITEM);
        }
        reply.push_str("]}");
        (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], reply)
    }

    let app = axum::Router::new()
        .route("/_bulk", axum::routing::post(bulk))
        .route("/_mget", axum::routing::post(mget))
        .fallback(|| async { ([(axum::http::header::CONTENT_TYPE, "application/json")], "{}") });
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| BenchError::Listen { addr: addr.to_string(), source })?;
    eprintln!("null Elasticsearch endpoint on http://{}", listener.local_addr().map_err(BenchError::Serve)?);
    tokio::spawn(async {
        let mut last = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let now = DOCS.load(Ordering::Relaxed);
            eprintln!("documents: {now} (+{} in 10 s)", now - last);
            last = now;
        }
    });
    axum::serve(listener, app).await.map_err(BenchError::Serve)
}
