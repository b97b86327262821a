//! The Elasticsearch read backend: it reads the indices the `elasticsearch` exporter writes. Answers are built by the same code as the embedded
//! store's: a timeline is `OrderTimeline::assemble` over the order's spans (found by `order.id`,
//! plus spans joined through a correlation value), a trace is the spans exactly as received
//! (rebuilt from each document, `document.rs`), grouped by resource and scope in the store's order.

use std::collections::HashMap;
use std::sync::Arc;

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message;
use serde_json::{json, Value};

use crate::exporters::elasticsearch_monitor_state::EsMonitorState;
use crate::exporters::elasticsearch_read::{
    document_order_span as order_span, field, kind_number, SearchReply, SpanDocument, StoredSpan, TargetConfig,
};
use crate::exporters::{ElasticsearchExporterConfig, EsClient, EsError, SetupError};
use crate::orders::{AlertState, OrderAlert, OrderQuery, OrderSort, OrderSpan, OrderSummary, OrderTimeline};
use crate::shared::format_rfc3339_nanos;
use crate::store::sort_attributes;
use crate::store::AlertQuery;
use crate::store::{FoundSpan, SpanFilter};

use super::QueryError;

/// Hits one search returns; an order or trace with more spans is cut there.
const MAX_HITS: usize = 10_000;

/// Services, or operations of one service, one aggregation lists at most.
const MAX_BUCKETS: usize = 10_000;

/// The buckets of a terms aggregation.
fn buckets(aggregation: &Value) -> impl Iterator<Item = &Value> {
    aggregation["buckets"].as_array().into_iter().flatten()
}

/// The spans listed under a Jaeger service name.
fn service_query(service: &str) -> Value {
    match service {
        "missing-service-name" => json!({"bool": {"must_not": [{"exists": {"field": "service.name"}}]}}),
        "empty-service-name" => json!({"term": {"service.name": ""}}),
        name => json!({"term": {"service.name": name}}),
    }
}

#[derive(Clone)]
pub struct ElasticsearchQuery {
    client: EsClient,
    spans: String,
    orders: String,
    /// Where the order monitors keep their clocks and alerts.
    monitors: EsMonitorState,
}

impl ElasticsearchQuery {
    pub fn new(client: EsClient, target: TargetConfig, orders_index: String, monitor_index: String) -> ElasticsearchQuery {
        let monitors = EsMonitorState::new(client.clone(), monitor_index);
        ElasticsearchQuery { client, spans: target.pattern(), orders: orders_index, monitors }
    }

    /// A backend over the indices an `elasticsearch` exporter writes.
    pub fn from_config(config: &ElasticsearchExporterConfig) -> Result<ElasticsearchQuery, SetupError> {
        Ok(ElasticsearchQuery::new(
            EsClient::new(config)?,
            config.mapping.clone(),
            config.orders.index.clone(),
            config.monitors.index.clone(),
        ))
    }

    /// The alerts of one order, oldest first, from the monitor index.
    pub async fn order_alerts(&self, order_id: &str) -> Result<Vec<OrderAlert>, QueryError> {
        Ok(self.monitors.order_alerts(order_id).await?)
    }

    /// Alerts matching `query`, newest first, from the monitor index.
    pub async fn alerts(&self, query: &AlertQuery) -> Result<Vec<OrderAlert>, QueryError> {
        Ok(self.monitors.alerts(query).await?)
    }

    async fn hits(&self, index: &str, query: Value) -> Result<Vec<Value>, QueryError> {
        let mut reply = self.client.search(index, &query).await?;
        match reply.get_mut("hits").and_then(|h| h.get_mut("hits")).map(serde_json::Value::take).unwrap_or_default() {
            Value::Array(hits) => {
                if hits.len() >= MAX_HITS {
                    tracing::warn!(index, query = %query["query"], "more than {MAX_HITS} matching spans; the answer holds the first {MAX_HITS}");
                }
                Ok(hits.into_iter().map(|mut h| h.get_mut("_source").map(serde_json::Value::take).unwrap_or_default()).collect())
            }
            _ => Ok(Vec::new()),
        }
    }

    /// The timeline of an order, or `None` if no indexed span belongs to it.
    pub async fn order_timeline(&self, order_id: &str) -> Result<Option<OrderTimeline>, QueryError> {
        let own = self.hits(&self.spans, json!({"size": MAX_HITS, "query": {"term": {"order.id": order_id}}})).await?;
        let mut spans: Vec<OrderSpan> = own.iter().filter_map(|s| order_span(s, false)).collect();
        let mut values: Vec<&str> = own.iter().filter_map(|s| field(s, "order.correlation")).collect();
        values.sort_unstable();
        values.dedup();
        if !values.is_empty() {
            let query = json!({"size": MAX_HITS, "query": {"bool": {
                "filter": [{"terms": {"order.correlation": values}}],
                "must_not": [{"exists": {"field": "order.id"}}]
            }}});
            let linked = self.hits(&self.spans, query).await?;
            spans.extend(linked.iter().filter_map(|s| order_span(s, true)));
        }
        // A span stored twice (it cannot be, with deterministic ids, but indices may overlap).
        spans.sort_by(|a, b| (&a.trace_id, &a.span_id).cmp(&(&b.trace_id, &b.span_id)));
        spans.dedup_by(|a, b| a.trace_id == b.trace_id && a.span_id == b.span_id);
        Ok(OrderTimeline::assemble(order_id, spans))
    }

    /// A page of order summaries from the orders index, in the query's order (`query.sort`).
    pub async fn orders(&self, query: &OrderQuery) -> Result<Vec<OrderSummary>, QueryError> {
        if self.orders.is_empty() {
            return Err(QueryError::NoOrdersIndex);
        }
        let mut filter = Vec::new();
        let mut must_not = Vec::new();
        if let Some(order_id) = &query.order_id {
            filter.push(json!({"term": {"order_id": order_id}}));
        }
        if let Some(prefix) = &query.id_prefix {
            // A prefix query on the keyword: literal text, case-sensitive.
            filter.push(json!({"prefix": {"order_id": {"value": prefix}}}));
        }
        if let Some(status) = &query.status {
            filter.push(json!({"term": {"status": status}}));
        }
        if !query.exclude_statuses.is_empty() {
            // Orders without a status have no `status` field: must_not keeps them.
            must_not.push(json!({"terms": {"status": query.exclude_statuses}}));
        }
        if let Some(service) = &query.service {
            filter.push(json!({"term": {"services": service}}));
        }
        if let Some(since) = query.since_ns {
            filter.push(json!({"range": {"last_seen_ns": {"gte": since}}}));
        }
        if let Some(until) = query.until_ns {
            filter.push(json!({"range": {"first_seen_ns": {"lte": until}}}));
        }
        if let Some(state) = query.alert {
            // Orders with such an alert, from the monitor index.
            let ids = self.monitors.orders_with_alert(state).await?;
            filter.push(json!({"terms": {"order_id": ids}}));
        }
        if query.no_alerts {
            let mut ids = self.monitors.orders_with_alert(AlertState::Firing).await?;
            ids.extend(self.monitors.orders_with_alert(AlertState::Resolved).await?);
            if !ids.is_empty() {
                must_not.push(json!({"terms": {"order_id": ids}}));
            }
        }
        let direction = match query.sort {
            OrderSort::NewestFirst => "desc",
            OrderSort::LongestWaiting => "asc",
        };
        let mut body = json!({
            "size": query.limit,
            "query": {"bool": {"filter": filter, "must_not": must_not}},
            "sort": [{"last_seen_ns": direction}, {"order_id": "asc"}],
        });
        if let Some((last_seen, order_id)) = &query.after {
            body["search_after"] = json!([last_seen, order_id]);
        }
        let docs = self.hits(&self.orders, body).await?;
        let ids: Vec<String> = docs.iter().filter_map(|d| d["order_id"].as_str().map(String::from)).collect();
        let firing = self.monitors.firing_counts(&ids).await?;
        let mut out = Vec::with_capacity(docs.len());
        for doc in docs {
            let Some(order_id) = doc["order_id"].as_str() else { continue };
            let values: Vec<&str> =
                doc["correlations"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            let count = self.span_count(order_id, &values).await?;
            out.push(OrderSummary {
                order_id: order_id.to_string(),
                status: doc["status"].as_str().map(String::from),
                first_seen: doc["first_seen_ns"].as_u64().unwrap_or(0),
                last_seen: doc["last_seen_ns"].as_u64().unwrap_or(0),
                services: doc["services"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
                    .unwrap_or_default(),
                span_count: count,
                current_service: doc["current_service"].as_str().map(String::from),
                current_stage: doc["current_stage"].as_str().map(String::from),
                firing_alerts: firing.get(order_id).copied().unwrap_or(0),
            });
        }
        Ok(out)
    }

    /// The order's own spans plus those joined through its correlation values.
    async fn span_count(&self, order_id: &str, values: &[&str]) -> Result<u64, QueryError> {
        let query = if values.is_empty() {
            json!({"term": {"order.id": order_id}})
        } else {
            json!({"bool": {"should": [
                {"term": {"order.id": order_id}},
                {"bool": {"filter": [{"terms": {"order.correlation": values}}], "must_not": [{"exists": {"field": "order.id"}}]}}
            ], "minimum_should_match": 1}})
        };
        let reply = self.client.search(&self.spans, &json!({"size": 0, "track_total_hits": true, "query": query})).await?;
        Ok(reply["hits"]["total"]["value"].as_u64().or_else(|| reply["hits"]["total"].as_u64()).unwrap_or(0))
    }

    /// Every service with indexed spans, in name order (a terms aggregation on `service.name`).
    pub async fn services(&self) -> Result<Vec<String>, QueryError> {
        let body = json!({"size": 0, "aggs": {"services": {"terms": {"field": "service.name", "size": MAX_BUCKETS}}}});
        let reply = self.client.search(&self.spans, &body).await?;
        let mut services: Vec<String> =
            buckets(&reply["aggregations"]["services"]).filter_map(|b| b["key"].as_str().map(String::from)).collect();
        // Spans without a service name (the exporter writes no `service.name` then).
        let missing = json!({"size": 0, "track_total_hits": true, "query": service_query("missing-service-name")});
        let reply = self.client.search(&self.spans, &missing).await?;
        if reply["hits"]["total"]["value"].as_u64().or_else(|| reply["hits"]["total"].as_u64()).unwrap_or(0) > 0 {
            services.push("missing-service-name".into());
        }
        services.sort();
        services.dedup();
        Ok(services)
    }

    /// A service's (span name, OTLP span kind) pairs, in name then kind order.
    pub async fn operations(&self, service: &str) -> Result<Vec<(String, i32)>, QueryError> {
        let body = json!({
            "size": 0,
            "query": service_query(service),
            "aggs": {"names": {"terms": {"field": "name", "size": MAX_BUCKETS}, "aggs": {"kinds": {"terms": {"field": "kind", "size": 8}}}}}
        });
        let reply = self.client.search(&self.spans, &body).await?;
        let mut out = Vec::new();
        for name in buckets(&reply["aggregations"]["names"]) {
            let Some(text) = name["key"].as_str() else { continue };
            for kind in buckets(&name["kinds"]) {
                out.push((text.to_string(), kind_number(kind["key"].as_str().unwrap_or(""))));
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The spans `filter` selects, newest start first, at most [`MAX_HITS`].
    pub async fn scan_spans(&self, filter: &SpanFilter) -> Result<Vec<FoundSpan>, QueryError> {
        let mut must = vec![json!({"range": {"@timestamp": {
            "gte": format_rfc3339_nanos(filter.start_min_ns),
            "lte": format_rfc3339_nanos(filter.start_max_ns)
        }}})];
        if let Some(service) = &filter.service {
            must.push(service_query(service));
        }
        if let Some(operation) = &filter.operation {
            must.push(json!({"term": {"name": operation}}));
        }
        if let Some(order_id) = &filter.order_id {
            must.push(json!({"term": {"order.id": order_id}}));
        }
        if filter.duration_min_ns.is_some() || filter.duration_max_ns.is_some() {
            let mut range = serde_json::Map::new();
            if let Some(min) = filter.duration_min_ns {
                range.insert("gte".into(), json!(min));
            }
            if let Some(max) = filter.duration_max_ns {
                range.insert("lte".into(), json!(max));
            }
            must.push(json!({"range": {"duration": range}}));
        }
        let query = json!({
            "size": MAX_HITS,
            "query": {"bool": {"filter": must}},
            "sort": [{"@timestamp": "desc"}, {"trace_id": "asc"}, {"span_id": "asc"}],
        });
        let body = self.client.search_bytes(&self.spans, &query).await?;
        let reply: SearchReply<SpanDocument> = serde_json::from_slice(&body)
            .map_err(|source| EsError::Unreadable { what: format!("search {}: span documents", self.spans), source })?;
        if reply.hits.hits.len() >= MAX_HITS {
            tracing::warn!("a trace search matched more than {MAX_HITS} spans; it looked at the newest {MAX_HITS}");
        }
        let mut out = Vec::with_capacity(reply.hits.hits.len());
        for hit in reply.hits.hits {
            let StoredSpan { resource, scope, span } = hit.source.into_span()?;
            out.push(FoundSpan {
                resource: Arc::new(resource.resource.unwrap_or_default()),
                scope: Arc::new(scope.scope.unwrap_or_default()),
                span,
            });
        }
        Ok(out)
    }

    /// Every indexed span of a trace, grouped by resource and scope, oldest first.
    pub async fn trace(&self, trace_id: &[u8]) -> Result<Option<Vec<ResourceSpans>>, QueryError> {
        let query = json!({"size": MAX_HITS, "query": {"term": {"trace_id": hex::encode(trace_id)}}});
        let body = self.client.search_bytes(&self.spans, &query).await?;
        let reply: SearchReply<SpanDocument> = serde_json::from_slice(&body)
            .map_err(|source| EsError::Unreadable { what: format!("search {}: span documents", self.spans), source })?;
        if reply.hits.hits.len() >= MAX_HITS {
            tracing::warn!(trace_id = %hex::encode(trace_id), "trace has more than {MAX_HITS} spans; the answer holds the first {MAX_HITS}");
        }
        let mut rows: Vec<StoredSpan> = reply.hits.hits.into_iter().map(|h| h.source.into_span()).collect::<Result<_, _>>()?;
        rows.sort_by(|a, b| {
            (a.span.start_time_unix_nano.min(i64::MAX as u64), &a.span.span_id)
                .cmp(&(b.span.start_time_unix_nano.min(i64::MAX as u64), &b.span.span_id))
        });
        rows.dedup_by(|a, b| a.span.span_id == b.span.span_id && a.span.trace_id == b.span.trace_id);
        // Grouped by resource and scope as the store groups them; the keys are the protobuf of each
        // resource and scope with attributes in key order (servers may reorder a source's keys).
        let mut out: Vec<ResourceSpans> = Vec::new();
        let mut resources: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut scopes: HashMap<(usize, Vec<u8>), usize> = HashMap::new();
        for StoredSpan { mut resource, scope, span } in rows {
            resource.scope_spans.push(scope);
            sort_attributes(std::slice::from_mut(&mut resource));
            let scope = resource.scope_spans.pop().unwrap_or_default();
            let ri = *resources.entry(resource.encode_to_vec()).or_insert_with(|| {
                out.push(resource);
                out.len() - 1
            });
            let si = *scopes.entry((ri, scope.encode_to_vec())).or_insert_with(|| {
                out[ri].scope_spans.push(scope);
                out[ri].scope_spans.len() - 1
            });
            out[ri].scope_spans[si].spans.push(span);
        }
        Ok(if out.is_empty() { None } else { Some(out) })
    }
}
