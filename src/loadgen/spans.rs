//! Synthetic traffic of the shop: what the Java and .NET agents of Shop, CRM and MES would send.
//!
//! One *order flow* is two traces joined by a span link, the way asynchronous messaging leaves
//! them:
//!
//! ```text
//! shop-api  POST /orders (SERVER, order.id)          trace 1
//!             ├─ INSERT shop.orders (CLIENT, postgresql)
//!             └─ publish orders (PRODUCER, rabbitmq)  <───────────┐ span link
//! crm-api   process orders (CONSUMER)                  trace 2 ───┘
//!             └─ OrderService.ChangeStatus (INTERNAL, order.status=accepted)
//!                  ├─ UPDATE crm.orders (CLIENT, postgresql)
//!                  └─ POST (CLIENT, to MES)
//! mes-api                └─ POST /orders/{orderId}/production (SERVER, id only in url.path)
//! ```
//!
//! Between order flows come unrelated browsing traces (`GET /catalog` and a product query), so
//! that a gateway also sees spans that belong to no order.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span::{Link, SpanKind},
    status::StatusCode,
    ResourceSpans, ScopeSpans, Span, Status,
};

const MILLI: u64 = 1_000_000;

/// W3C trace flags: sampled.
const SAMPLED: u32 = 0x01;

/// The three services of the shop, in the order their resources appear in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    Shop,
    Crm,
    Mes,
}

impl Service {
    const ALL: [Service; 3] = [Service::Shop, Service::Crm, Service::Mes];

    fn name(self) -> &'static str {
        match self {
            Service::Shop => "shop-api",
            Service::Crm => "crm-api",
            Service::Mes => "mes-api",
        }
    }

    fn resource(self) -> Resource {
        let (language, sdk_version, runtime, version) = match self {
            Service::Shop => ("java", "1.44.1", "OpenJDK Runtime Environment", "3.14.2"),
            Service::Crm => ("dotnet", "1.10.0", ".NET", "2.7.0"),
            Service::Mes => ("java", "1.44.1", "OpenJDK Runtime Environment", "11.2.0"),
        };
        Resource {
            attributes: vec![
                text("service.name", self.name()),
                text("service.namespace", "shop"),
                text("service.version", version),
                text("service.instance.id", format!("{}-7d9f8b6c4-x2k9q", self.name())),
                text("deployment.environment.name", "production"),
                text("telemetry.sdk.name", "opentelemetry"),
                text("telemetry.sdk.language", language),
                text("telemetry.sdk.version", sdk_version),
                text("host.name", format!("{}-node-1", self.name())),
                text("process.runtime.name", runtime),
            ],
            ..Default::default()
        }
    }
}

/// The instrumentation library that produced a span (its `InstrumentationScope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scope {
    name: &'static str,
    version: &'static str,
}

const SPRING_WEBMVC: Scope = Scope { name: "io.opentelemetry.spring-webmvc-6.0", version: "2.10.0-alpha" };
const JDBC: Scope = Scope { name: "io.opentelemetry.jdbc", version: "2.10.0-alpha" };
const RABBITMQ_JAVA: Scope = Scope { name: "io.opentelemetry.rabbitmq-2.7", version: "2.10.0-alpha" };
const RABBITMQ_DOTNET: Scope = Scope { name: "RabbitMQ.Client.Subscriber", version: "7.0.0" };
const CRM_APP: Scope = Scope { name: "Crm.Orders", version: "2.7.0" };
const NPGSQL: Scope = Scope { name: "Npgsql", version: "8.0.5" };
const HTTP_CLIENT_DOTNET: Scope = Scope { name: "System.Net.Http", version: "8.0.0" };

/// A span on its way into a request, with the service and scope it is filed under.
struct Placed {
    service: Service,
    scope: Scope,
    span: Span,
}

/// One order's spans, ready to send, with what a reader looks it up by.
#[derive(Debug, Clone)]
pub struct GeneratedOrder {
    pub order_id: String,
    /// Hex trace ids in the order the spans were generated: the order's shop trace, the CRM's
    /// trace (joined by a span link), the constructor upload (joined by its file id).
    pub trace_ids: Vec<String>,
    pub request: ExportTraceServiceRequest,
}

/// Generates OTLP export requests full of realistic shop traffic.
///
/// Deterministic for a given seed and clock, so tests can pin what they check.
pub struct TrafficGenerator {
    rng: fastrand::Rng,
    next_order: u64,
    now_unix_nanos: u64,
    /// `None`: each order flow (two traces with an order) is followed by two browsing traces
    /// (no order). `Some(share)`: browsing traces make up this share of all traces.
    orderless_share: Option<f64>,
    mix: TrafficMix,
    /// Orders of [`TrafficGenerator::placed_orders`] so far.
    next_placed: u64,
}

/// What the requests generated so far hold: traces and spans, and how many of them belong to
/// traces that never name an order (catalogue browsing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficMix {
    pub traces: u64,
    pub orderless_traces: u64,
    pub spans: u64,
    pub orderless_spans: u64,
}

impl TrafficMix {
    /// The share of traces that never get an order (0 when nothing was generated).
    pub fn orderless_trace_share(&self) -> f64 {
        ratio(self.orderless_traces, self.traces)
    }

    /// The share of spans in traces that never get an order.
    pub fn orderless_span_share(&self) -> f64 {
        ratio(self.orderless_spans, self.spans)
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

impl TrafficGenerator {
    /// `now_unix_nanos` anchors the timestamps: every span ends before it, within seconds.
    pub fn new(seed: u64, now_unix_nanos: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let next_order = rng.u64(100_000..900_000);
        TrafficGenerator { rng, next_order, now_unix_nanos, orderless_share: None, mix: TrafficMix::default(), next_placed: 0 }
    }

    /// Makes browsing traces (which never get an order) this share of all traces, from 0.0 (only
    /// order flows) to 1.0 (no orders at all), instead of the default two browsing traces per
    /// order flow (a share of 0.5 of the traces, about 0.31 of the spans).
    pub fn with_orderless_share(mut self, share: f64) -> Self {
        self.orderless_share = Some(share.clamp(0.0, 1.0));
        self
    }

    /// The traces and spans of every request generated so far.
    pub fn mix(&self) -> TrafficMix {
        self.mix
    }

    /// One export request holding exactly `span_count` spans, grouped by service and scope.
    pub fn request(&mut self, span_count: usize) -> ExportTraceServiceRequest {
        let mut placed = Vec::with_capacity(span_count + 12);
        // Where each browsing trace starts in `placed`: its spans run to the next entry's start.
        let mut orderless = Vec::new();
        let mut browse = |generator: &mut Self, placed: &mut Vec<Placed>| {
            orderless.push(placed.len());
            generator.browsing(placed);
        };
        match self.orderless_share {
            None => {
                while placed.len() < span_count {
                    self.order_flow(&mut placed);
                    browse(self, &mut placed);
                    browse(self, &mut placed);
                }
            }
            Some(share) => {
                // Whichever kind is behind its share goes next; the counts carry over from one
                // request to the next, so the share holds over a run, not only on average.
                let (mut traces, mut without) = (self.mix.traces, self.mix.orderless_traces);
                while placed.len() < span_count {
                    if share >= 1.0 || (without as f64) < share * traces as f64 {
                        browse(self, &mut placed);
                        without += 1;
                        traces += 1;
                    } else {
                        self.order_flow(&mut placed);
                        traces += 2;
                    }
                }
            }
        }
        // Parents are generated before their children, so cutting the tail never orphans a span.
        placed.truncate(span_count);
        self.count(&placed, &orderless);
        group(placed)
    }

    /// Adds one request's spans to the mix; `orderless` holds where each browsing trace starts.
    fn count(&mut self, placed: &[Placed], orderless: &[usize]) {
        let mut traces: Vec<&[u8]> = placed.iter().map(|p| p.span.trace_id.as_slice()).collect();
        traces.sort_unstable();
        traces.dedup();
        let browsing: Vec<&[u8]> = orderless.iter().filter_map(|&start| placed.get(start)).map(|p| p.span.trace_id.as_slice()).collect();
        self.mix.traces += traces.len() as u64;
        self.mix.orderless_traces += browsing.len() as u64;
        self.mix.spans += placed.len() as u64;
        self.mix.orderless_spans += placed.iter().filter(|p| browsing.contains(&p.span.trace_id.as_slice())).count() as u64;
    }

    /// One order on its own, as `tracegate demo` sends it: the product constructor's file upload
    /// (a trace of its own, before the order exists, carrying only `constructor.file_id`), then
    /// the order flow, whose `POST /orders` span names the same file.
    pub fn order(&mut self) -> GeneratedOrder {
        let mut placed = Vec::with_capacity(10);
        self.order_flow(&mut placed);
        let order_id = placed.first().and_then(|p| crate::shared::attr_string(&p.span.attributes, "order.id")).unwrap_or_default();
        let created = placed.first().map_or(self.now_unix_nanos, |p| p.span.start_time_unix_nano);
        let file_id = format!("cf-{:016x}", self.rng.u64(..));
        if let Some(post) = placed.first_mut() {
            post.span.attributes.push(text("constructor.file_id", file_id.clone()));
        }
        self.constructor_upload(&mut placed, &file_id, created);
        let mut trace_ids: Vec<[u8; 16]> = Vec::new();
        for p in &placed {
            let id: [u8; 16] = p.span.trace_id.as_slice().try_into().unwrap_or_default();
            if !trace_ids.contains(&id) {
                trace_ids.push(id);
            }
        }
        GeneratedOrder { order_id, trace_ids: trace_ids.iter().map(hex::encode).collect(), request: group(placed) }
    }

    /// A customer saves a design in the product constructor minutes before ordering.
    fn constructor_upload(&mut self, out: &mut Vec<Placed>, file_id: &str, order_created: u64) {
        let trace = self.trace_id();
        let start = order_created.saturating_sub(self.rng.u64(120_000..600_000) * MILLI);
        let upload = self.span_id();
        let mut upload_span =
            new_span(trace, upload, None, "POST /constructor/files", SpanKind::Server, start, self.rng.u64(40..120) * MILLI);
        upload_span.attributes = vec![
            text("http.request.method", "POST"),
            text("url.path", "/constructor/files"),
            text("url.scheme", "https"),
            text("http.route", "/constructor/files"),
            int("http.response.status_code", 201),
            text("server.address", "shop.example.com"),
            int("server.port", 443),
            text("client.address", self.client_address()),
            text("user_agent.original", BROWSER),
            text("constructor.file_id", file_id),
        ];
        out.push(Placed { service: Service::Shop, scope: SPRING_WEBMVC, span: upload_span });
        let mut insert_span = new_span(
            trace,
            self.span_id(),
            Some(upload),
            "INSERT shop.constructor_files",
            SpanKind::Client,
            start + 5 * MILLI,
            self.rng.u64(3..9) * MILLI,
        );
        insert_span.attributes = postgres("INSERT", "shop", "constructor_files", INSERT_FILE, "pg-shop");
        out.push(Placed { service: Service::Shop, scope: JDBC, span: insert_span });
    }

    /// One export request of `span_count` orders that are placed and go no further, as a shop
    /// holds them between their statuses: a `POST /orders` span each (the status `new` by the
    /// enricher's rules), in a trace of its own, with the order ids `P-1`, `P-2`, ... (apart
    /// from the `A-` orders of [`TrafficGenerator::request`]).
    pub fn placed_orders(&mut self, span_count: usize) -> ExportTraceServiceRequest {
        let mut placed = Vec::with_capacity(span_count);
        for _ in 0..span_count {
            self.next_placed += 1;
            let order_id = format!("P-{}", self.next_placed);
            let (trace, span, start) = (self.trace_id(), self.span_id(), self.recent_start());
            placed.push(self.post_order(trace, span, start, order_id));
        }
        self.count(&placed, &[]);
        group(placed)
    }

    /// The shop's `POST /orders` span that creates `order_id`.
    fn post_order(&mut self, trace: [u8; 16], span: [u8; 8], start: u64, order_id: String) -> Placed {
        let customer = self.rng.u32(1_000..99_999);
        let duration = self.rng.u64(35..80) * MILLI;
        let mut post_span = new_span(trace, span, None, "POST /orders", SpanKind::Server, start, duration);
        post_span.attributes = vec![
            text("http.request.method", "POST"),
            text("url.path", "/orders"),
            text("url.scheme", "https"),
            text("http.route", "/orders"),
            int("http.response.status_code", 201),
            text("server.address", "shop.example.com"),
            int("server.port", 443),
            text("client.address", self.client_address()),
            text("user_agent.original", BROWSER),
            text("network.protocol.version", "1.1"),
            text("order.id", order_id),
            text("enduser.id", format!("customer-{customer}")),
        ];
        Placed { service: Service::Shop, scope: SPRING_WEBMVC, span: post_span }
    }

    fn order_flow(&mut self, out: &mut Vec<Placed>) {
        let order_id = format!("A-{}", self.next_order);
        self.next_order += 1;
        let message_id = format!("{:032x}", self.rng.u128(..));
        let body_size = self.rng.i64(600..2_400);

        // Trace 1: the shop creates the order and hands it to the bus.
        let shop_trace = self.trace_id();
        let t0 = self.recent_start();
        let post = self.span_id();
        let post_span = self.post_order(shop_trace, post, t0, order_id.clone());
        out.push(post_span);

        let insert = self.span_id();
        let mut insert_span =
            new_span(shop_trace, insert, Some(post), "INSERT shop.orders", SpanKind::Client, t0 + 3 * MILLI, self.rng.u64(2..8) * MILLI);
        insert_span.attributes = postgres("INSERT", "shop", "orders", INSERT_ORDER, "pg-shop");
        out.push(Placed { service: Service::Shop, scope: JDBC, span: insert_span });

        let publish = self.span_id();
        let publish_start = t0 + 15 * MILLI;
        let mut publish_span =
            new_span(shop_trace, publish, Some(post), "publish orders", SpanKind::Producer, publish_start, self.rng.u64(1..3) * MILLI);
        publish_span.attributes = rabbitmq("publish", "publish", &message_id, body_size);
        out.push(Placed { service: Service::Shop, scope: RABBITMQ_JAVA, span: publish_span });

        // Trace 2: the CRM consumes the message in a new trace, linked to the publish.
        let crm_trace = self.trace_id();
        let t1 = publish_start + self.rng.u64(120..400) * MILLI;
        let consume = self.span_id();
        let mut consume_span = new_span(crm_trace, consume, None, "process orders", SpanKind::Consumer, t1, 60 * MILLI);
        consume_span.attributes = rabbitmq("process", "consume", &message_id, body_size);
        consume_span.links = vec![Link { trace_id: shop_trace.to_vec(), span_id: publish.to_vec(), flags: SAMPLED, ..Default::default() }];
        out.push(Placed { service: Service::Crm, scope: RABBITMQ_DOTNET, span: consume_span });

        let change = self.span_id();
        let mut change_span =
            new_span(crm_trace, change, Some(consume), "OrderService.ChangeStatus", SpanKind::Internal, t1 + 2 * MILLI, 45 * MILLI);
        change_span.attributes = vec![
            text("order.status", "accepted"),
            text("order.previous_status", "new"),
            text("code.function.name", "Crm.Orders.OrderService.ChangeStatus"),
            text("crm.assignee", "auto"),
            int("thread.id", self.rng.i64(8..64)),
            text("thread.name", ".NET TP Worker"),
        ];
        out.push(Placed { service: Service::Crm, scope: CRM_APP, span: change_span });

        let update = self.span_id();
        let mut update_span =
            new_span(crm_trace, update, Some(change), "UPDATE crm.orders", SpanKind::Client, t1 + 5 * MILLI, self.rng.u64(2..6) * MILLI);
        update_span.attributes = postgres("UPDATE", "crm", "orders", UPDATE_STATUS, "pg-crm");
        out.push(Placed { service: Service::Crm, scope: NPGSQL, span: update_span });

        let call = self.span_id();
        let production_path = format!("/orders/{order_id}/production");
        let mut call_span = new_span(crm_trace, call, Some(change), "POST", SpanKind::Client, t1 + 12 * MILLI, 30 * MILLI);
        call_span.attributes = vec![
            text("http.request.method", "POST"),
            text("url.full", format!("http://mes-api:8080{production_path}")),
            text("server.address", "mes-api"),
            int("server.port", 8080),
            int("http.response.status_code", 202),
            text("network.protocol.version", "1.1"),
            text("network.peer.address", "10.20.3.17"),
        ];
        out.push(Placed { service: Service::Crm, scope: HTTP_CLIENT_DOTNET, span: call_span });

        // MES knows the order only from the URL.
        let mut mes_span = new_span(
            crm_trace,
            self.span_id(),
            Some(call),
            "POST /orders/{orderId}/production",
            SpanKind::Server,
            t1 + 14 * MILLI,
            24 * MILLI,
        );
        mes_span.attributes = vec![
            text("http.request.method", "POST"),
            text("url.path", production_path),
            text("url.scheme", "http"),
            text("http.route", "/orders/{orderId}/production"),
            int("http.response.status_code", 202),
            text("server.address", "mes-api"),
            int("server.port", 8080),
            text("client.address", "10.20.1.9"),
            text("user_agent.original", ".NET HttpClient"),
            text("network.protocol.version", "1.1"),
        ];
        out.push(Placed { service: Service::Mes, scope: SPRING_WEBMVC, span: mes_span });
    }

    /// A customer browsing the catalogue: no order involved.
    fn browsing(&mut self, out: &mut Vec<Placed>) {
        let trace = self.trace_id();
        let start = self.recent_start();
        let page = self.span_id();
        let sku = self.rng.u32(10_000..20_000);
        let (path, route, query) = if self.rng.bool() {
            ("/catalog".to_string(), "/catalog", format!("page={}&category=chairs", self.rng.u8(1..9)))
        } else {
            (format!("/catalog/SKU-{sku}"), "/catalog/{sku}", "ref=search".to_string())
        };
        // One page in fifty fails, as real traffic does.
        let failed = self.rng.u8(0..50) == 0;
        let mut page_span = new_span(trace, page, None, &format!("GET {route}"), SpanKind::Server, start, self.rng.u64(4..25) * MILLI);
        page_span.attributes = vec![
            text("http.request.method", "GET"),
            text("url.path", path),
            text("url.query", query),
            text("url.scheme", "https"),
            text("http.route", route),
            int("http.response.status_code", if failed { 500 } else { 200 }),
            text("server.address", "shop.example.com"),
            int("server.port", 443),
            text("client.address", self.client_address()),
            text("user_agent.original", BROWSER),
            text("network.protocol.version", "2"),
        ];
        if failed {
            page_span.status = Some(Status { code: StatusCode::Error as i32, message: String::new() });
        }
        out.push(Placed { service: Service::Shop, scope: SPRING_WEBMVC, span: page_span });

        let mut select_span = new_span(
            trace,
            self.span_id(),
            Some(page),
            "SELECT shop.products",
            SpanKind::Client,
            start + MILLI,
            self.rng.u64(1..5) * MILLI,
        );
        select_span.attributes = postgres("SELECT", "shop", "products", SELECT_PRODUCTS, "pg-shop");
        out.push(Placed { service: Service::Shop, scope: JDBC, span: select_span });
    }

    fn trace_id(&mut self) -> [u8; 16] {
        self.rng.u128(1..).to_be_bytes()
    }

    fn span_id(&mut self) -> [u8; 8] {
        self.rng.u64(1..).to_be_bytes()
    }

    /// A start time a few seconds before now, leaving room for the whole flow to end before now.
    fn recent_start(&mut self) -> u64 {
        self.now_unix_nanos.saturating_sub(self.rng.u64(2_000..6_000) * MILLI)
    }

    fn client_address(&mut self) -> String {
        format!("203.0.113.{}", self.rng.u8(1..255))
    }
}

const BROWSER: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36";
const INSERT_ORDER: &str = "INSERT INTO orders (id, customer_id, status, total) VALUES (?, ?, ?, ?)";
const UPDATE_STATUS: &str = "UPDATE orders SET status = $1, updated_at = now() WHERE id = $2";
const INSERT_FILE: &str = "INSERT INTO constructor_files (id, customer_id, content_type, size) VALUES (?, ?, ?, ?)";
const SELECT_PRODUCTS: &str = "SELECT id, name, price FROM products WHERE category = ? LIMIT ?";

fn new_span(trace_id: [u8; 16], span_id: [u8; 8], parent: Option<[u8; 8]>, name: &str, kind: SpanKind, start: u64, duration: u64) -> Span {
    Span {
        trace_id: trace_id.to_vec(),
        span_id: span_id.to_vec(),
        parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
        flags: SAMPLED,
        name: name.to_string(),
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + duration,
        ..Default::default()
    }
}

fn postgres(operation: &str, namespace: &str, table: &str, query: &str, host: &str) -> Vec<KeyValue> {
    vec![
        text("db.system.name", "postgresql"),
        text("db.operation.name", operation),
        text("db.collection.name", table),
        text("db.namespace", namespace),
        text("db.query.text", query),
        text("server.address", host),
        int("server.port", 5432),
        text("network.peer.address", "10.20.5.4"),
    ]
}

fn rabbitmq(operation_type: &str, operation_name: &str, message_id: &str, body_size: i64) -> Vec<KeyValue> {
    vec![
        text("messaging.system", "rabbitmq"),
        text("messaging.operation.type", operation_type),
        text("messaging.operation.name", operation_name),
        text("messaging.destination.name", "orders"),
        text("messaging.rabbitmq.destination.routing_key", "order.created"),
        text("messaging.message.id", message_id),
        int("messaging.message.body.size", body_size),
        text("server.address", "rabbitmq"),
        int("server.port", 5672),
        text("network.protocol.name", "amqp"),
    ]
}

/// A string attribute.
pub fn text(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(any_value::Value::IntValue(value)) }), ..Default::default() }
}

/// The spans of one scope, in the order they were generated.
type ScopeGroup = (Scope, Vec<Span>);

/// Files the spans under one `ResourceSpans` per service and one `ScopeSpans` per scope,
/// keeping their order within each scope.
fn group(placed: Vec<Placed>) -> ExportTraceServiceRequest {
    let mut by_service: [Vec<ScopeGroup>; 3] = Default::default();
    for Placed { service, scope, span } in placed {
        let scopes = &mut by_service[service as usize];
        match scopes.iter_mut().find(|(s, _)| *s == scope) {
            Some((_, spans)) => spans.push(span),
            None => scopes.push((scope, vec![span])),
        }
    }
    let resource_spans = Service::ALL
        .into_iter()
        .zip(by_service)
        .filter(|(_, scopes)| !scopes.is_empty())
        .map(|(service, scopes)| ResourceSpans {
            resource: Some(service.resource()),
            scope_spans: scopes
                .into_iter()
                .map(|(scope, spans)| ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: scope.name.to_string(),
                        version: scope.version.to_string(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    const NOW: u64 = 1_763_700_000_000_000_000;

    fn spans(request: &ExportTraceServiceRequest) -> Vec<(&str, &Span)> {
        request
            .resource_spans
            .iter()
            .flat_map(|rs| {
                let service = attr(&rs.resource.as_ref().unwrap().attributes, "service.name").unwrap();
                rs.scope_spans.iter().flat_map(move |ss| ss.spans.iter().map(move |s| (service, s)))
            })
            .collect()
    }

    fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
        attributes.iter().find(|kv| kv.key == key).and_then(|kv| match &kv.value.as_ref()?.value {
            Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
            _ => None,
        })
    }

    #[test]
    fn request_holds_exactly_the_requested_number_of_spans() {
        let mut generator = TrafficGenerator::new(7, NOW);
        for count in [1, 2, 3, 11, 12, 13, 100, 1000] {
            assert_eq!(spans(&generator.request(count)).len(), count, "span count {count}");
        }
    }

    #[test]
    fn every_span_has_valid_ids_parents_and_times() {
        let request = TrafficGenerator::new(1, NOW).request(500);
        let all = spans(&request);
        let ids: HashSet<(&[u8], &[u8])> = all.iter().map(|(_, s)| (s.trace_id.as_slice(), s.span_id.as_slice())).collect();
        assert_eq!(ids.len(), all.len(), "span ids are unique");
        for (_, span) in &all {
            assert_eq!(span.trace_id.len(), 16, "{}", span.name);
            assert_eq!(span.span_id.len(), 8, "{}", span.name);
            assert!(span.trace_id.iter().any(|&b| b != 0) && span.span_id.iter().any(|&b| b != 0));
            if !span.parent_span_id.is_empty() {
                assert!(
                    ids.contains(&(span.trace_id.as_slice(), span.parent_span_id.as_slice())),
                    "parent of {} is in the same trace and request",
                    span.name
                );
            }
            assert!(span.start_time_unix_nano < span.end_time_unix_nano, "{}", span.name);
            assert!(span.end_time_unix_nano < NOW, "{} ends before now", span.name);
            assert!(span.start_time_unix_nano > NOW - 10_000 * MILLI, "{} starts within 10 s", span.name);
            assert!(span.kind != SpanKind::Unspecified as i32);
        }
    }

    #[test]
    fn all_three_services_appear_with_their_sdk_language() {
        let request = TrafficGenerator::new(2, NOW).request(100);
        let languages: HashMap<&str, &str> = request
            .resource_spans
            .iter()
            .map(|rs| {
                let attributes = &rs.resource.as_ref().unwrap().attributes;
                (attr(attributes, "service.name").unwrap(), attr(attributes, "telemetry.sdk.language").unwrap())
            })
            .collect();
        assert_eq!(languages, HashMap::from([("shop-api", "java"), ("crm-api", "dotnet"), ("mes-api", "java")]));
    }

    #[test]
    fn consume_span_links_to_the_publish_span_of_the_shop_trace() {
        let request = TrafficGenerator::new(3, NOW).request(100);
        let all = spans(&request);
        let consumers: Vec<&Span> = all.iter().filter(|(_, s)| s.kind == SpanKind::Consumer as i32).map(|(_, s)| *s).collect();
        assert_eq!(consumers.len(), 9, "100 spans hold nine order flows, the ninth cut after its consume span");
        for consumer in consumers {
            assert_eq!(consumer.links.len(), 1);
            let link = &consumer.links[0];
            let (service, target) =
                all.iter().find(|(_, s)| s.trace_id == link.trace_id && s.span_id == link.span_id).expect("link target is in the request");
            assert_eq!(*service, "shop-api");
            assert_eq!(target.kind, SpanKind::Producer as i32);
            assert_eq!(attr(&target.attributes, "messaging.operation.type"), Some("publish"));
            assert_eq!(attr(&target.attributes, "messaging.destination.name"), Some("orders"));
            assert_ne!(consumer.trace_id, link.trace_id, "the consumer starts a new trace");
        }
    }

    #[test]
    fn order_id_is_on_the_shop_span_and_only_in_the_url_at_mes() {
        let request = TrafficGenerator::new(4, NOW).request(12);
        let all = spans(&request);
        let (_, post) = all.iter().find(|(_, s)| s.name == "POST /orders").unwrap();
        let order_id = attr(&post.attributes, "order.id").unwrap();
        assert!(order_id.starts_with("A-"));
        let (service, mes) = all.iter().find(|(_, s)| s.kind == SpanKind::Server as i32 && s.name.contains("production")).unwrap();
        assert_eq!(*service, "mes-api");
        assert_eq!(attr(&mes.attributes, "url.path"), Some(format!("/orders/{order_id}/production").as_str()));
        assert_eq!(attr(&mes.attributes, "order.id"), None);
        let status: Vec<&str> = all.iter().filter_map(|(_, s)| attr(&s.attributes, "order.status")).collect();
        assert_eq!(status, ["accepted"]);
        let db: Vec<(&str, &str)> = all
            .iter()
            .filter(|(_, s)| attr(&s.attributes, "db.system.name") == Some("postgresql"))
            .map(|(svc, s)| (*svc, attr(&s.attributes, "db.operation.name").unwrap()))
            .collect();
        assert_eq!(db, [("shop-api", "INSERT"), ("shop-api", "SELECT"), ("shop-api", "SELECT"), ("crm-api", "UPDATE")]);
    }

    #[test]
    fn spans_carry_eight_to_twelve_attributes_on_average() {
        let request = TrafficGenerator::new(5, NOW).request(1200);
        let all = spans(&request);
        let total: usize = all.iter().map(|(_, s)| s.attributes.len()).sum();
        let average = total as f64 / all.len() as f64;
        assert!((8.0..=12.0).contains(&average), "average {average}");
    }

    #[test]
    fn order_ids_and_trace_ids_differ_between_requests() {
        let mut generator = TrafficGenerator::new(6, NOW);
        let first = generator.request(100);
        let second = generator.request(100);
        let traces = |r: &ExportTraceServiceRequest| -> HashSet<Vec<u8>> { spans(r).iter().map(|(_, s)| s.trace_id.clone()).collect() };
        assert!(traces(&first).is_disjoint(&traces(&second)));
        let orders = |r: &ExportTraceServiceRequest| -> HashSet<String> {
            spans(r).iter().filter_map(|(_, s)| attr(&s.attributes, "order.id").map(str::to_string)).collect()
        };
        assert_eq!(orders(&first).len(), 9);
        assert!(orders(&first).is_disjoint(&orders(&second)));
    }

    /// Trace ids that carry an order somewhere in the request, directly or through a link or
    /// the MES path, and all trace ids.
    fn traces_with_and_without_orders(request: &ExportTraceServiceRequest) -> (HashSet<Vec<u8>>, HashSet<Vec<u8>>) {
        let all = spans(request);
        let with: HashSet<Vec<u8>> = all
            .iter()
            .filter(|(_, s)| {
                attr(&s.attributes, "order.id").is_some()
                    || attr(&s.attributes, "order.status").is_some()
                    || !s.links.is_empty()
                    || attr(&s.attributes, "url.path").is_some_and(|p| p.starts_with("/orders/"))
            })
            .map(|(_, s)| s.trace_id.clone())
            .collect();
        let every: HashSet<Vec<u8>> = all.iter().map(|(_, s)| s.trace_id.clone()).collect();
        (with, every)
    }

    #[test]
    fn the_default_mix_is_half_the_traces_and_a_third_of_the_spans_without_an_order() {
        let mut generator = TrafficGenerator::new(7, NOW);
        for _ in 0..20 {
            generator.request(100);
        }
        let mix = generator.mix();
        assert_eq!(mix.spans, 2000);
        assert!((0.45..=0.55).contains(&mix.orderless_trace_share()), "{mix:?}");
        assert!((0.28..=0.34).contains(&mix.orderless_span_share()), "{mix:?}");
    }

    #[test]
    fn an_orderless_share_of_0_3_makes_three_traces_in_ten_orderless() {
        let mut generator = TrafficGenerator::new(8, NOW).with_orderless_share(0.3);
        let (mut with, mut every) = (HashSet::new(), HashSet::new());
        for _ in 0..50 {
            let (w, e) = traces_with_and_without_orders(&generator.request(100));
            with.extend(w);
            every.extend(e);
        }
        let mix = generator.mix();
        assert_eq!(mix.spans, 5000);
        assert_eq!(mix.traces, every.len() as u64);
        assert_eq!(mix.orderless_traces, (every.len() - with.len()) as u64, "the mix counts exactly the traces without an order");
        let share = mix.orderless_trace_share();
        assert!((0.29..=0.31).contains(&share), "share {share}, {mix:?}");
        assert!(mix.orderless_span_share() < share, "browsing traces are shorter than order flows");
    }

    #[test]
    fn orderless_shares_of_0_and_1_make_only_orders_or_no_orders() {
        let mut orders_only = TrafficGenerator::new(9, NOW).with_orderless_share(0.0);
        let (with, every) = traces_with_and_without_orders(&orders_only.request(500));
        assert_eq!(with, every);
        assert_eq!(orders_only.mix().orderless_spans, 0);
        let mut no_orders = TrafficGenerator::new(9, NOW).with_orderless_share(1.0);
        let (with, every) = traces_with_and_without_orders(&no_orders.request(500));
        assert!(with.is_empty());
        assert_eq!(no_orders.mix().orderless_traces, every.len() as u64);
        assert_eq!(no_orders.mix().orderless_spans, 500);
    }
}
