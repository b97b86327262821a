//! A demo run: send the planned orders, then wait until the read API (and Jaeger) shows them.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prost::Message;
use serde_json::Value;
use tokio::time::Instant;

use super::args::{DemoArgs, Endpoints};
use super::error::DemoError;
use super::http::{describe, encode, CallError, HttpClient, Reply};
use super::plan::{plan, PlannedOrder};
use super::report::{DemoOrder, DemoReport};
use crate::loadgen::{ExportClient, ExportReply, Protocol};

/// Between two polls of the read API or Jaeger, and between attempts to reach the gateway.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Sends `args.orders` orders and waits until each is readable; the report says how to look them up.
///
/// The gateway may still be starting: reaching it is retried until `args.timeout`. A refusal
/// (a 4xx or 5xx reply) is not retried, since it names something to fix.
pub async fn run(args: DemoArgs) -> Result<DemoReport, DemoError> {
    let endpoints = args.endpoints()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
    let planned = plan(args.orders as usize, now, now);
    let deadline = Instant::now() + args.timeout;
    let http = HttpClient::new();

    let (protocol, span_endpoint) = match &endpoints.otlp_grpc {
        Some(grpc) => (Protocol::Grpc, grpc.clone()),
        None => (Protocol::Http, endpoints.otlp_http.clone()),
    };
    let mut client = connect(protocol, &span_endpoint, deadline, args.timeout).await?;
    let mut spans = 0;
    for order in &planned {
        spans += order.order.request.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum::<usize>();
        export(&mut client, &span_endpoint, Bytes::from(order.order.request.encode_to_vec()), deadline, args.timeout).await?;
    }
    let events: Vec<&Value> = planned.iter().flat_map(|o| &o.events).collect();
    post_events(&http, &endpoints.otlp_http, &events).await?;
    let sent = Instant::now();

    // Each order's timeline waits for the exporter's batch, and for spans held in the
    // enrichment buffer (up to order_enrich.wait) if their trace's order was not yet known.
    let deadline = sent + args.timeout;
    let mut orders = Vec::with_capacity(planned.len());
    for order in &planned {
        orders.push(wait_readable(&http, &endpoints.api, order, deadline, args.timeout).await?);
    }
    let readable_after = sent.elapsed();
    let mut jaeger_after = None;
    if let Some(ui) = &endpoints.jaeger_ui {
        for order in &planned {
            wait_in_jaeger(&http, ui, order, deadline, args.timeout).await?;
        }
        jaeger_after = Some(sent.elapsed());
    }
    Ok(DemoReport {
        protocol,
        span_endpoint,
        endpoints: endpoints.clone(),
        spans,
        events: events.len(),
        orders,
        readable_after,
        jaeger_after,
    })
}

async fn connect(protocol: Protocol, endpoint: &str, deadline: Instant, waited: Duration) -> Result<ExportClient, DemoError> {
    loop {
        match ExportClient::connect(protocol, endpoint, &[]).await {
            Ok(client) => return Ok(client),
            Err(crate::loadgen::LoadgenError::Connect { source, .. }) if Instant::now() < deadline => {
                tracing::debug!(error = %crate::shared::error_chain(&source), endpoint, "gateway not reachable yet");
                tokio::time::sleep(POLL_INTERVAL).await;
            }
            Err(error) => {
                return Err(DemoError::GatewayUnreachable {
                    endpoint: endpoint.to_string(),
                    waited,
                    last_error: crate::shared::error_chain(&error),
                })
            }
        }
    }
}

async fn export(client: &mut ExportClient, endpoint: &str, body: Bytes, deadline: Instant, waited: Duration) -> Result<(), DemoError> {
    loop {
        match client.export(body.clone()).await {
            ExportReply::Accepted { rejected_spans: 0 } => return Ok(()),
            ExportReply::Accepted { rejected_spans } => {
                return Err(DemoError::Refused { what: "spans", reply: format!("{rejected_spans} spans rejected (partial success)") })
            }
            ExportReply::Refused(reply) => return Err(DemoError::Refused { what: "spans", reply }),
            ExportReply::Failed(error) if Instant::now() >= deadline => {
                return Err(DemoError::GatewayUnreachable { endpoint: endpoint.to_string(), waited, last_error: error })
            }
            ExportReply::Failed(error) => {
                tracing::debug!(%error, endpoint, "gateway not reachable yet");
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        }
    }
}

async fn post_events(http: &HttpClient, otlp_http: &str, events: &[&Value]) -> Result<(), DemoError> {
    let url = format!("{otlp_http}/v1/order-events");
    let body = Bytes::from(serde_json::to_vec(events).unwrap_or_default());
    let reply = http.post_json(&url, body).await;
    match &reply {
        Ok((200, body)) if serde_json::from_slice::<Value>(body).ok().and_then(|v| v["accepted"].as_u64()) == Some(events.len() as u64) => {
            Ok(())
        }
        _ => Err(DemoError::Refused { what: "order events", reply: describe(&reply) }),
    }
}

/// Polls `GET /api/v1/orders/{id}` until the order has its final status and every trace.
async fn wait_readable(
    http: &HttpClient,
    api: &str,
    order: &PlannedOrder,
    deadline: Instant,
    waited: Duration,
) -> Result<DemoOrder, DemoError> {
    let id = &order.order.order_id;
    let url = format!("{api}/api/v1/orders/{}", encode(id));
    loop {
        let reply = http.get(&url).await;
        match &reply {
            Ok((status @ (401 | 403), _)) => return Err(DemoError::NeedsToken { api: api.to_string(), status: *status }),
            Ok((200, body)) => {
                if let Ok(timeline) = serde_json::from_slice::<Value>(body) {
                    let traces: BTreeSet<&str> = timeline["trace_ids"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                    let complete = order.order.trace_ids.iter().all(|t| traces.contains(t.as_str()));
                    if complete && timeline["status"] == order.final_status {
                        return Ok(DemoOrder {
                            order_id: id.clone(),
                            status: order.final_status.to_string(),
                            services: timeline["services"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(Value::as_str)
                                .map(String::from)
                                .collect(),
                            traces: traces.len(),
                            timeline_events: timeline["events"].as_array().map_or(0, Vec::len),
                            shop_trace_id: order.order.trace_ids[0].clone(),
                        });
                    }
                }
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            return Err(DemoError::NotReadable { order_id: id.clone(), url, waited, last_reply: describe(&reply) });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The services whose traces a Jaeger search for the order returns between them: the shop's
/// two traces and the CRM's.
const JAEGER_SERVICES: [&str; 2] = ["shop-api", "crm-api"];

/// Polls Jaeger's query API (`/api/traces?service=...&tags={"order.id":...}`) until the search by
/// the order's tag finds every trace the demo sent for it.
async fn wait_in_jaeger(http: &HttpClient, ui: &str, order: &PlannedOrder, deadline: Instant, waited: Duration) -> Result<(), DemoError> {
    let id = &order.order.order_id;
    loop {
        let mut found = BTreeSet::new();
        let mut last: Reply = Err(CallError::NotAsked);
        for service in JAEGER_SERVICES {
            let url = jaeger_api_search(ui, service, id);
            last = http.get(&url).await;
            if let Ok((200, body)) = &last {
                let reply: Value = serde_json::from_slice(body).unwrap_or_default();
                found.extend(reply["data"].as_array().into_iter().flatten().filter_map(|t| t["traceID"].as_str()).map(String::from));
            }
        }
        if order.order.trace_ids.iter().all(|t| found.contains(t)) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let url = jaeger_api_search(ui, JAEGER_SERVICES[0], id);
            let last_reply = format!("{} of {} traces found; {}", found.len(), order.order.trace_ids.len(), describe(&last));
            return Err(DemoError::NotReadable { order_id: id.clone(), url, waited, last_reply });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// `{"order.id":"<id>"}`, URL-encoded: the tag search of Jaeger's API and UI.
pub(crate) fn order_tag(order_id: &str) -> String {
    encode(&serde_json::json!({"order.id": order_id}).to_string())
}

/// Jaeger's query API: the traces of `service` tagged with the order.
pub(crate) fn jaeger_api_search(ui: &str, service: &str, order_id: &str) -> String {
    format!("{ui}/api/traces?service={service}&tags={}", order_tag(order_id))
}

/// Jaeger UI's search page for the order.
pub(crate) fn jaeger_ui_search(ui: &str, service: &str, order_id: &str) -> String {
    format!("{ui}/search?service={service}&tags={}&lookback=1h", order_tag(order_id))
}

impl Endpoints {
    pub(crate) fn order_url(&self, order_id: &str) -> String {
        format!("{}/api/v1/orders/{}", self.api, encode(order_id))
    }

    /// The order's page in the support console.
    pub(crate) fn console_url(&self, order_id: &str) -> String {
        format!("{}/orders/{}", self.api, encode(order_id))
    }
}
