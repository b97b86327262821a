//! The derived metrics against a real Prometheus (Debian's `prometheus`, installed by
//! scripts/test.sh): the shipped scrape configuration and alert rules, scraping a gateway every
//! second. A workload with known durations goes through the gateway with the OpenTelemetry SDK
//! (orders whose transition times follow a chosen spread, services with known latencies and
//! error rates, a bus hop joined by a span link); Prometheus's HTTP API then returns the exact
//! counts, quantiles within one bucket, the graph edges with the bus hop, and exemplars whose
//! trace ids are in the gateway's store. Every PromQL expression of the shipped dashboards
//! returns data; `promtool` accepts the exposition, the rules and their unit tests; 100 000
//! order ids and 10 000 URL paths leave the series bounded.

mod common;
#[path = "common/jaeger.rs"]
mod jaeger;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{get_json, send, start_gateway};
use opentelemetry::trace::{Link, Span as _, SpanKind, Status, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use serde_json::Value;

/// Orders of the workload.
const ORDERS: usize = 120;
/// Order-lookup spans of shop-api: durations 1..=100 ms, twice; every tenth fails.
const LOOKUPS: usize = 200;
/// shop-api -> crm-api calls; every tenth fails on the server.
const CALLS: usize = 30;
/// The processor's series limit in this test.
const LIMIT: usize = 300;
/// Orders the order metrics remember in this test.
const MAX_ORDERS: usize = 5000;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn gateway_yaml() -> String {
    gateway_yaml_named("tracegate")
}

fn gateway_yaml_named(naming: &str) -> String {
    format!(
        r#"
receivers:
  otlp: {{grpc: {{endpoint: "127.0.0.1:0"}}, http: {{endpoint: "127.0.0.1:0"}}}}
processors:
  order_enrich: {{wait: 1s}}
  span_metrics:
    naming: {naming}
    aggregation_cardinality_limit: {LIMIT}
    orders: {{max_orders: {MAX_ORDERS}, window: 1h}}
    service_graph: {{store: {{ttl: 30s}}}}
exporters:
  local: {{type: embedded, path: "{{data}}", batch: {{max_wait: 10ms}}}}
api: {{endpoint: "127.0.0.1:0"}}
monitors:
  order_sla:
    lifecycle: [new, accepted, in_production]
    grace: 1s
    rules:
      - {{name: crm_accepts, from: new, to: accepted, within: 15m}}
    notify: []
service:
  memory_limiter: {{limit_mib: 8192, spike_limit_mib: 512, check_interval: 1s}}
  pipelines:
    traces: {{receivers: [otlp], processors: [order_enrich, span_metrics], exporters: [local]}}
"#
    )
}

/// A Prometheus of its own: the shipped scrape configuration and rules, a free port, a temporary
/// storage directory, scrape and evaluation every second, exemplar storage on. Killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(target: SocketAddr) -> Prometheus {
        let binary = which("prometheus");
        let shipped = std::fs::read_to_string(repo().join("deploy/prometheus/prometheus.yml")).unwrap();
        let mut config = shipped.clone();
        let rules = repo().join("deploy/prometheus/rules/tracegate.rules.yml");
        for (from, to) in [
            ("scrape_interval: 15s", "scrape_interval: 1s".to_string()),
            ("evaluation_interval: 15s", "evaluation_interval: 1s".to_string()),
            ("tracegate:8080", target.to_string()),
            ("rules/tracegate.rules.yml", rules.display().to_string()),
        ] {
            assert!(config.contains(from), "deploy/prometheus/prometheus.yml no longer holds {from:?}");
            config = config.replace(from, &to);
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let port = common::ports::free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--enable-feature=exemplar-storage")
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("prometheus starts");
        let prometheus = Prometheus { child, addr, _dir: dir };
        common::eventually(&format!("prometheus ready on {addr}"), Duration::from_secs(40), || async {
            // A starting Prometheus may accept and then reset a connection: a failed probe is
            // only "not yet".
            let probe = http::Request::get(format!("http://{addr}/-/ready")).body(http_body_util::Full::new(bytes::Bytes::new())).unwrap();
            match tokio::time::timeout(Duration::from_secs(2), common::http_client().request(probe)).await {
                Ok(Ok(resp)) if resp.status() == 200 => Ok(()),
                Ok(Ok(resp)) => Err(resp.status().to_string()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("no answer within 2 s".to_string()),
            }
        })
        .await;
        prometheus
    }

    async fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let query: String = params.iter().map(|(k, v)| format!("{k}={}", jaeger::url_encode(v))).collect::<Vec<_>>().join("&");
        let (status, body) = get_json(&format!("http://{}{path}?{query}", self.addr)).await;
        assert_eq!(status, 200, "{path} {params:?}: {body}");
        assert_eq!(body["status"], "success", "{body}");
        body["data"].clone()
    }

    /// An instant query's result vector.
    async fn query(&self, expr: &str) -> Vec<Value> {
        self.api("/api/v1/query", &[("query", expr)]).await["result"].as_array().cloned().unwrap_or_default()
    }

    /// The one value of a query that sums to a scalar-like vector (0 when empty).
    async fn value(&self, expr: &str) -> f64 {
        let result = self.query(expr).await;
        assert!(result.len() <= 1, "{expr}: {result:?}");
        result.first().map(|r| r["value"][1].as_str().unwrap().parse().unwrap()).unwrap_or(0.0)
    }

    /// Waits until `expr` equals `want` (scrapes are a second apart), then returns it.
    async fn wait_for_value(&self, expr: &str, want: f64) {
        common::eventually(&format!("{expr} = {want}"), Duration::from_secs(30), || async {
            common::when(self.value(expr).await, |&v| v == want)
        })
        .await;
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(binary: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(binary)).find(|p| p.is_file()))
        .or_else(|| [Path::new("/usr/bin").join(binary)].into_iter().find(|p| p.is_file()));
    found.unwrap_or_else(|| panic!("{binary} not found: scripts/test.sh installs Debian's prometheus package (with promtool)"))
}

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(which("promtool"))
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn provider(endpoint: &str, service: &'static str) -> SdkTracerProvider {
    let exporter = SpanExporter::builder().with_tonic().with_endpoint(endpoint).build().expect("exporter builds");
    SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build()
}

/// The workload's known figures.
struct Workload {
    /// new -> accepted and accepted -> in_production, seconds, per order.
    accept: Vec<f64>,
    produce: Vec<f64>,
    /// Bus wait per order, seconds.
    bus: Vec<f64>,
    /// Lookup durations, seconds.
    lookups: Vec<f64>,
}

/// Emits the workload through the OpenTelemetry SDK (gRPC), with explicit event times.
fn emit(endpoint: String) -> Workload {
    let shop = provider(&endpoint, "shop-api");
    let crm = provider(&endpoint, "crm-api");
    let mes = provider(&endpoint, "mes-api");
    let (shop_t, crm_t, mes_t) = (shop.tracer("shop"), crm.tracer("crm"), mes.tracer("mes"));
    let base = SystemTime::now() - Duration::from_secs(6 * 3600);
    let ms = |n: u64| Duration::from_millis(n);
    let mut w = Workload { accept: vec![], produce: vec![], bus: vec![], lookups: vec![] };
    for i in 0..ORDERS {
        let order = format!("P-{i}");
        // new -> accepted: 5 s to 124 s, spread evenly; accepted -> in_production: 60 s to 659 s.
        let accept_ms = 5_000 + (i as u64 * 7919 % 120) * 1000;
        let produce_ms = 60_000 + (i as u64 * 31 % 600) * 1000;
        let t0 = base + Duration::from_secs(i as u64 * 60);
        let mut created = shop_t
            .span_builder("POST /orders")
            .with_kind(SpanKind::Server)
            .with_start_time(t0)
            .with_attributes(vec![KeyValue::new("order.id", order.clone()), KeyValue::new("order.status", "new")])
            .start(&shop_t);
        let cx = opentelemetry::Context::current().with_remote_span_context(created.span_context().clone());
        let mut publish = shop_t
            .span_builder("orders publish")
            .with_kind(SpanKind::Producer)
            .with_start_time(t0 + ms(20))
            .with_attributes(vec![
                KeyValue::new("order.id", order.clone()),
                KeyValue::new("messaging.system", "rabbitmq"),
                KeyValue::new("messaging.operation", "publish"),
                KeyValue::new("messaging.destination.name", "orders"),
            ])
            .start_with_context(&shop_t, &cx);
        let publish_cx = publish.span_context().clone();
        publish.end_with_timestamp(t0 + ms(22));
        created.end_with_timestamp(t0 + ms(30));
        // CRM takes the order from the bus in a new trace, linked to the publish.
        let consumed_at = t0 + ms(accept_ms);
        let mut consume = crm_t
            .span_builder("orders process")
            .with_kind(SpanKind::Consumer)
            .with_start_time(consumed_at)
            .with_links(vec![Link::with_context(publish_cx)])
            .with_attributes(vec![
                KeyValue::new("order.id", order.clone()),
                KeyValue::new("order.status", "accepted"),
                KeyValue::new("messaging.system", "rabbitmq"),
                KeyValue::new("messaging.operation", "process"),
                KeyValue::new("messaging.destination.name", "orders"),
            ])
            .start(&crm_t);
        consume.end_with_timestamp(consumed_at + ms(5));
        let produced_at = consumed_at + ms(produce_ms);
        let mut production = mes_t
            .span_builder("POST /production")
            .with_kind(SpanKind::Server)
            .with_start_time(produced_at)
            .with_attributes(vec![KeyValue::new("order.id", order), KeyValue::new("order.status", "in_production")])
            .start(&mes_t);
        production.end_with_timestamp(produced_at + ms(8));
        w.accept.push(accept_ms as f64 / 1000.0);
        w.produce.push(produce_ms as f64 / 1000.0);
        w.bus.push((accept_ms - 20) as f64 / 1000.0);
    }
    // One order nobody accepts: the monitor fires (the dashboards' alert panels have data).
    let stuck_at = SystemTime::now() - Duration::from_secs(3600);
    let mut stuck = shop_t
        .span_builder("POST /orders")
        .with_kind(SpanKind::Server)
        .with_start_time(stuck_at)
        .with_attributes(vec![KeyValue::new("order.id", "P-stuck"), KeyValue::new("order.status", "new")])
        .start(&shop_t);
    stuck.end_with_timestamp(stuck_at + ms(10));
    // Order lookups with raw paths: 1..=100 ms, twice; every tenth fails.
    let now = SystemTime::now();
    for i in 0..LOOKUPS {
        let duration = (i % 100) as u64 + 1;
        let mut span = shop_t
            .span_builder(format!("GET /orders/P-{i}"))
            .with_kind(SpanKind::Server)
            .with_start_time(now)
            .with_attributes(vec![KeyValue::new("url.path", format!("/orders/P-{i}"))])
            .start(&shop_t);
        if i % 10 == 0 {
            span.set_status(Status::error("lookup failed"));
        }
        span.end_with_timestamp(now + ms(duration));
        w.lookups.push(duration as f64 / 1000.0);
    }
    // shop-api calls crm-api; every tenth call fails on the server.
    for i in 0..CALLS {
        let mut client = shop_t.span_builder("GET").with_kind(SpanKind::Client).with_start_time(now).start(&shop_t);
        let cx = opentelemetry::Context::current().with_remote_span_context(client.span_context().clone());
        let mut server = crm_t
            .span_builder("GET /customers/{id}")
            .with_kind(SpanKind::Server)
            .with_start_time(now + ms(1))
            .start_with_context(&crm_t, &cx);
        if i % 10 == 0 {
            server.set_status(Status::error("no such customer"));
        }
        server.end_with_timestamp(now + ms(9));
        client.end_with_timestamp(now + ms(10));
    }
    for p in [shop, crm, mes] {
        p.shutdown().unwrap();
    }
    w
}

/// The index of the bucket (upper bounds `bounds`, then +Inf) that holds `v`.
fn bucket_of(bounds: &[f64], v: f64) -> usize {
    bounds.iter().position(|b| v <= *b).unwrap_or(bounds.len())
}

fn true_quantile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Asserts that Prometheus's `histogram_quantile` lands within one bucket of the true quantile.
async fn assert_quantile(prom: &Prometheus, metric: &str, selector: &str, bounds: &[f64], values: &[f64], q: f64) {
    let expr = format!("histogram_quantile({q}, sum by (le) ({metric}_bucket{{{selector}}}))");
    let estimate = prom.value(&expr).await;
    let truth = true_quantile(values, q);
    let (a, b) = (bucket_of(bounds, estimate), bucket_of(bounds, truth));
    assert!(a.abs_diff(b) <= 1, "{expr} = {estimate}, true quantile {truth} (buckets {a} and {b})");
}

const SPAN_BOUNDS: [f64; 16] = [0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.4, 2.0, 5.0, 10.0, 15.0];
const ORDER_BOUNDS: [f64; 17] =
    [1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 43200.0, 86400.0, 172800.0];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn derived_metrics_dashboards_and_rules_hold_against_a_real_prometheus() {
    let (gateway, _dir) = start_gateway(&gateway_yaml()).await;
    let api = gateway.api_addr().unwrap();
    let prom = Prometheus::start(api).await;
    let grpc = format!("http://{}", gateway.grpc_addr().unwrap());

    // The exposition: Prometheus text for curl (promtool accepts it), OpenMetrics when asked.
    let (status, headers, body) = send("GET", &format!("http://{api}/metrics"), &[], vec![]).await;
    assert_eq!(status, 200);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let (ok, out) = promtool(&["check", "metrics"], Some(&String::from_utf8(body).unwrap()));
    assert!(ok, "promtool check metrics: {out}");

    let handle = tokio::runtime::Handle::current();
    let endpoint = grpc.clone();
    let workload = tokio::task::spawn_blocking(move || {
        let _guard = handle.enter();
        emit(endpoint)
    })
    .await
    .unwrap();
    // A malformed request: the refusals panel has a series.
    let http = gateway.http_addr().unwrap();
    let (status, _, _) =
        send("POST", &format!("http://{http}/v1/traces"), &[("content-type", "application/x-protobuf")], vec![0xff, 0xff, 0xff]).await;
    assert_eq!(status, 400);

    // Exact counts.
    let n = ORDERS as f64;
    prom.wait_for_value(r#"sum(tracegate_order_transition_seconds_count{from="new",to="accepted"})"#, n).await;
    prom.wait_for_value(r#"sum(tracegate_order_transition_seconds_count{from="accepted",to="in_production"})"#, n).await;
    prom.wait_for_value(r#"sum(tracegate_orders_in_status{status="in_production"})"#, n).await;
    prom.wait_for_value(r#"sum(tracegate_orders_in_status{status="new"})"#, 1.0).await;
    prom.wait_for_value(r#"sum(tracegate_order_steps_total{service="crm-api",stage="bus_consume"})"#, n).await;
    prom.wait_for_value(r#"sum(tracegate_order_steps_total{service="shop-api",stage="bus_publish"})"#, n).await;
    prom.wait_for_value(r#"sum(tracegate_order_bus_wait_seconds_count{destination="orders"})"#, n).await;
    let lookups = r#"service="shop-api",span_name="GET /orders/{id}",span_kind="server""#;
    prom.wait_for_value(&format!("sum(tracegate_span_calls_total{{{lookups}}})"), LOOKUPS as f64).await;
    prom.wait_for_value(&format!(r#"sum(tracegate_span_calls_total{{{lookups},status_code="error"}})"#), (LOOKUPS / 10) as f64).await;
    assert!(prom.query(r#"tracegate_span_calls_total{span_name=~".*P-[0-9].*"}"#).await.is_empty(), "a raw path became a label");
    // The service graph: the HTTP edge and the bus edge (joined by the span link).
    prom.wait_for_value(
        r#"sum(tracegate_service_graph_request_total{client="shop-api",server="crm-api",connection_type=""})"#,
        CALLS as f64,
    )
    .await;
    prom.wait_for_value(
        r#"sum(tracegate_service_graph_request_failed_total{client="shop-api",server="crm-api",connection_type=""})"#,
        (CALLS / 10) as f64,
    )
    .await;
    prom.wait_for_value(
        r#"sum(tracegate_service_graph_request_total{client="shop-api",server="crm-api",connection_type="messaging_system"})"#,
        n,
    )
    .await;

    // Quantiles within one bucket of the true ones.
    for q in [0.5, 0.9, 0.99] {
        assert_quantile(&prom, "tracegate_span_duration_seconds", lookups, &SPAN_BOUNDS, &workload.lookups, q).await;
        assert_quantile(&prom, "tracegate_order_transition_seconds", r#"from="new",to="accepted""#, &ORDER_BOUNDS, &workload.accept, q)
            .await;
        assert_quantile(
            &prom,
            "tracegate_order_transition_seconds",
            r#"from="accepted",to="in_production""#,
            &ORDER_BOUNDS,
            &workload.produce,
            q,
        )
        .await;
        assert_quantile(&prom, "tracegate_order_bus_wait_seconds", r#"destination="orders""#, &ORDER_BOUNDS, &workload.bus, q).await;
    }

    // Exemplars: trace ids that the gateway's store holds.
    let end = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 60;
    let (start, end) = ((end - 600).to_string(), end.to_string());
    let data =
        prom.api("/api/v1/query_exemplars", &[("query", "tracegate_span_duration_seconds_bucket"), ("start", &start), ("end", &end)]).await;
    let trace_ids: Vec<String> = data
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|series| series["exemplars"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["labels"]["trace_id"].as_str().map(str::to_string))
        .collect();
    assert!(trace_ids.len() >= 5, "exemplars: {data}");
    for id in trace_ids.iter().take(10) {
        assert_eq!(id.len(), 32, "{id}");
        let mut found = false;
        for _ in 0..50 {
            let (status, body) = get_json(&format!("http://{api}/api/v1/traces/{id}")).await;
            if status == 200 && body["resourceSpans"].as_array().is_some_and(|r| !r.is_empty()) {
                found = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(found, "the exemplar's trace {id} is not in the store");
    }

    // The order monitor fired for the stuck order (its panels have data).
    prom.wait_for_value("sum(tracegate_order_alerts_firing)", 1.0).await;

    // Every PromQL expression of the shipped dashboards returns data.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut checked = 0;
    for name in ["orders", "gateway"] {
        let path = repo().join(format!("deploy/grafana/dashboards/{name}.json"));
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(dashboard["templating"]["list"][0]["type"], "datasource", "{name}: a Prometheus data-source variable");
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().cloned().unwrap_or_default() {
                let expr = target["expr"].as_str().unwrap().replace("$__rate_interval", "1m").replace("$__range", "1h");
                let result = prom.query(&expr).await;
                assert!(!result.is_empty(), "{name}.json panel {:?}: {expr} returns no data", panel["title"]);
                checked += 1;
            }
        }
    }
    assert!(checked >= 25, "{checked} expressions");

    // The shipped rules and their unit tests.
    let (ok, out) = promtool(&["check", "rules", "deploy/prometheus/rules/tracegate.rules.yml"], None);
    assert!(ok, "{out}");
    let (ok, out) = promtool(&["test", "rules", "deploy/prometheus/tests/tracegate.test.yml"], None);
    assert!(ok, "{out}");
    let (ok, out) = promtool(&["check", "config", "deploy/prometheus/prometheus.yml"], None);
    assert!(ok, "{out}");

    // 100 000 order ids and 10 000 URL paths: the series stay bounded.
    let before = prom.value(r#"count({__name__=~"tracegate_.*"})"#).await;
    flood(&grpc).await;
    prom.wait_for_value(
        r#"sum(tracegate_span_calls_total{service="flood-api"}) + sum(tracegate_span_calls_total{otel_metric_overflow="true"})"#,
        100_000.0,
    )
    .await;
    let calls_series = prom.value("count(tracegate_span_calls_total)").await;
    assert!(calls_series <= (LIMIT + 1) as f64, "{calls_series} series of tracegate_span_calls_total");
    assert!(prom.value(r#"sum(tracegate_span_metrics_overflow_total{metric="tracegate_span_calls"})"#).await > 0.0);
    let orders = prom.value("tracegate_order_metrics_orders").await;
    assert!(orders <= MAX_ORDERS as f64, "{orders} orders remembered");
    assert!(prom.value("tracegate_order_metrics_evicted_orders_total").await >= (100_000 - MAX_ORDERS) as f64);
    let after = prom.value(r#"count({__name__=~"tracegate_.*"})"#).await;
    // Each family holds at most LIMIT label sets and one overflow set, whatever came in: the
    // flood adds to the calls (1 series per set) and the duration histogram (16 buckets, +Inf,
    // sum and count per set), and one order-steps series; without the limit it would be 10 000
    // label sets, 200 000 series.
    let buckets = prom.value("count(tracegate_span_duration_seconds_bucket)").await;
    assert!(buckets <= ((LIMIT + 1) * 17) as f64, "{buckets} bucket series");
    assert!(after - before <= ((LIMIT + 1) * 20 + 10) as f64, "series went from {before} to {after}");

    // OpenMetrics, as Prometheus asks for it, carries the exemplars.
    let (_, headers, body) =
        send("GET", &format!("http://{api}/metrics"), &[("accept", "application/openmetrics-text;version=1.0.0")], vec![]).await;
    assert!(headers["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = String::from_utf8(body).unwrap();
    assert!(text.ends_with("# EOF\n") && text.contains(" # {trace_id=\""), "{}", &text[..text.len().min(2000)]);
    let (_, _, body) = send("GET", &format!("http://{api}/metrics"), &[], vec![]).await;
    let (ok, out) = promtool(&["check", "metrics"], Some(&String::from_utf8(body).unwrap()));
    assert!(ok, "promtool check metrics after the workload: {out}");

    drop(prom);
    gateway.shutdown().await;
}

/// 100 000 spans of distinct orders over 10 000 distinct URL paths (no digits, so no template
/// helps: the series limit has to), in requests of 1000 spans over OTLP/gRPC.
async fn flood(grpc: &str) {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue as Kv};
    use opentelemetry_proto::tonic::resource::v1::Resource as OtlpResource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let kv = |k: &str, v: String| Kv {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v)) }),
        ..Default::default()
    };
    let word = |mut i: usize| {
        let mut w = String::new();
        for _ in 0..4 {
            w.push((b'a' + (i % 26) as u8) as char);
            i /= 26;
        }
        w
    };
    let mut client = TraceServiceClient::connect(grpc.to_string()).await.unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    for chunk in 0..100usize {
        let spans: Vec<Span> = (0..1000usize)
            .map(|j| {
                let i = chunk * 1000 + j;
                let mut trace_id = [0u8; 16];
                trace_id[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
                trace_id[8] = 0xf1;
                Span {
                    trace_id: trace_id.to_vec(),
                    span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                    name: format!("GET /search/{}", word(i % 10_000)),
                    kind: 2,
                    start_time_unix_nano: now,
                    end_time_unix_nano: now + 1_000_000,
                    attributes: vec![kv("order.id", format!("F-{i}")), kv("order.status", "new".into())],
                    ..Default::default()
                }
            })
            .collect();
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(OtlpResource { attributes: vec![kv("service.name", "flood-api".into())], ..Default::default() }),
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            }],
        };
        // A full queue answers UNAVAILABLE: the SDKs retry, so does this client.
        let mut tries = 0;
        while let Err(status) = client.export(request.clone()).await {
            tries += 1;
            assert!(tries < 100 && status.code() == tonic::Code::Unavailable, "{status}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Jaeger v2's configuration with its Monitor tab reading Prometheus (Jaeger v1.76.0's
/// cmd/jaeger/config-spm.yaml, on free ports, with memory storage).
fn jaeger_spm_config(prometheus: SocketAddr, ports: &jaeger::JaegerPorts) -> String {
    format!(
        r#"
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [jaeger_storage_exporter]}}
  telemetry: {{metrics: {{level: none}}, logs: {{level: info}}}}
extensions:
  jaeger_query:
    storage: {{traces: memory_store, metrics: tracegate_metrics}}
    enable_tracing: false
    http: {{endpoint: "{ui}"}}
    grpc: {{endpoint: "{grpc}"}}
  jaeger_storage:
    backends:
      memory_store: {{memory: {{max_traces: 1000}}}}
    metric_backends:
      tracegate_metrics:
        prometheus:
          endpoint: http://{prometheus}
          normalize_calls: true
          normalize_duration: true
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "{otlp_grpc}"}}
      http: {{endpoint: "{otlp_http}"}}
processors:
  batch:
exporters:
  jaeger_storage_exporter: {{trace_storage: memory_store}}
"#,
        ui = ports.ui,
        grpc = ports.query_grpc,
        otlp_grpc = ports.otlp_grpc,
        otlp_http = ports.otlp_http,
    )
}

/// With `naming: spm`, a real Jaeger's Monitor tab (its `/api/metrics/*` API, which runs the
/// PromQL of the Collector's spanmetrics names) shows shop-api's call rate, error rate and
/// latency from the same Prometheus.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jaegers_monitor_tab_reads_the_spm_naming() {
    let Some(bin) = jaeger::jaeger_bin("jaegers_monitor_tab_reads_the_spm_naming") else { return };
    let (gateway, _dir) = start_gateway(&gateway_yaml_named("spm")).await;
    let prom = Prometheus::start(gateway.api_addr().unwrap()).await;
    let grpc = format!("http://{}", gateway.grpc_addr().unwrap());
    // A rate needs the series before the increase: a failed and a good span first, scraped,
    // then the rest.
    let emit = |range: std::ops::Range<u64>| {
        let grpc = grpc.clone();
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let _guard = handle.enter();
            let shop = provider(&grpc, "shop-api");
            let tracer = shop.tracer("shop");
            let now = SystemTime::now();
            for i in range {
                let mut span = tracer.span_builder("GET /orders/{id}").with_kind(SpanKind::Server).with_start_time(now).start(&tracer);
                if i % 5 == 0 {
                    span.set_status(Status::error("failed"));
                }
                span.end_with_timestamp(now + Duration::from_millis(10 + i));
            }
            shop.shutdown().unwrap();
        })
    };
    emit(0..2).await.unwrap();
    prom.wait_for_value(r#"sum(traces_span_metrics_calls_total{service_name="shop-api"})"#, 2.0).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    emit(2..50).await.unwrap();
    emit(50..51).await.unwrap();
    let selector = r#"service_name="shop-api",span_name="GET /orders/{id}",span_kind="SPAN_KIND_SERVER""#;
    prom.wait_for_value(&format!("sum(traces_span_metrics_calls_total{{{selector}}})"), 51.0).await;
    prom.wait_for_value(&format!(r#"sum(traces_span_metrics_calls_total{{{selector},status_code="STATUS_CODE_ERROR"}})"#), 11.0).await;
    prom.wait_for_value(&format!("sum(traces_span_metrics_duration_milliseconds_count{{{selector}}})"), 51.0).await;
    // Two more scrapes: a rate needs two samples.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let dir = tempfile::tempdir().unwrap();
    let ports = jaeger::JaegerPorts::free();
    let config = dir.path().join("jaeger-spm.yaml");
    std::fs::write(&config, jaeger_spm_config(prom.addr, &ports)).unwrap();
    let log = dir.path().join("jaeger.log");
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("jaeger.stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let logs = || {
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        format!("{}{}", read(log.clone()), read(dir.path().join("jaeger.stderr.log")))
    };
    let mut listening = false;
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(ports.ui).await.is_ok_and(|s| s.local_addr().ok() != s.peer_addr().ok()) {
            listening = true;
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "Jaeger exited:\n{}", logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(listening, "Jaeger does not listen on {}:\n{}", ports.ui, logs());

    let end_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis();
    let window = format!("endTs={end_ms}&lookback=300000&step=5000&ratePer=60000&spanKind=server");
    let points = |body: &Value| -> Vec<f64> {
        body["metrics"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|m| m["metricPoints"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p["gaugeValue"]["doubleValue"].as_f64())
            .collect()
    };
    for (what, extra) in [("calls", ""), ("errors", ""), ("latencies", "&quantile=0.95")] {
        let url = format!("{}/api/metrics/{what}?service=shop-api&{window}{extra}", ports.ui_url());
        let (status, body) = get_json(&url).await;
        assert_eq!(status, 200, "{url}: {body}\n{}", logs());
        let values = points(&body);
        assert!(values.iter().any(|v| *v > 0.0), "{url}: no positive point in {body}");
        if what == "latencies" {
            // p95 of 10..60 ms lies in the (50, 100] ms bucket.
            assert!(values.iter().any(|v| *v > 50.0 && *v <= 100.0), "{url}: {body}");
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    drop(prom);
    gateway.shutdown().await;
}
