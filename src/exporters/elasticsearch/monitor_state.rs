//! Order monitor state in Elasticsearch, for gateways whose read API's backend is an
//! `elasticsearch` exporter: one document per (monitor, rule, order) in the monitor index
//! (`monitors.index`, `tracegate-monitor-clocks` by default), id `{monitor}/{rule}/{order_id}`,
//! holding the clock, the alert once it fired, and the notices of that alert that no notifier
//! confirmed yet (the outbox).
//!
//! Several instances may watch the same orders. They coordinate on these documents only:
//! every write is conditional (`create` for a new document, `index` with `if_seq_no` /
//! `if_primary_term` otherwise), so of two instances deciding the same transition (a deadline
//! passing, an alert resolving) exactly one write succeeds; that instance records the notices in
//! the same document and sends them, the other reads the document again and finds the alert
//! already out. This module stores and finds documents; the monitors decide what they say.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use elasticsearch::http::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::config::ElasticsearchExporterConfig;
use super::error::EsError;
use super::multi_get::{multi_get, Found};
use super::retry::{classify, ItemOutcome, RequestOutcome};
use super::service::EsClient;
use crate::exporters::error::SetupError;
use crate::orders::{AlertState, OrderAlert};
use crate::store::{alert_from_value, alert_value, AlertQuery};

/// Documents one `_mget` or one search page asks for.
const PAGE: usize = 1000;

/// A notice recorded in its alert's document until its notifier confirms it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoticeEntry {
    /// `{notifier}/{kind}/{claimed_ns}`: unique within its document.
    pub id: String,
    pub notifier: String,
    /// `fired`, `resolved` or `repeat`.
    pub kind: String,
    /// The instance that sends it, and since when: a claim older than the monitors' lease is
    /// taken over (conditionally) by another instance.
    pub owner: String,
    pub claimed_ns: u64,
    /// The alert as the notice shows it.
    pub alert: Value,
}

/// One (monitor, rule, order) as stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StateDocument {
    pub key: String,
    pub monitor: String,
    pub rule: String,
    pub order_id: String,
    /// Event times (Unix nanoseconds, 0 = not seen) and the monitor's word for the phase.
    pub from_ns: u64,
    pub end_ns: u64,
    pub phase: String,
    pub updated_ns: u64,
    /// The alert's state, severity and firing time, for searches; `alert` holds it whole.
    pub state: Option<String>,
    pub severity: Option<String>,
    pub fired_ns: Option<u64>,
    pub alert: Option<Value>,
    pub outbox: Vec<NoticeEntry>,
    pub outbox_pending: bool,
    /// Per notifier, when a `repeat` notice of the firing alert was last claimed.
    pub repeated_ns: BTreeMap<String, u64>,
}

impl StateDocument {
    pub fn key(monitor: &str, rule: &str, order_id: &str) -> String {
        format!("{monitor}/{rule}/{order_id}")
    }

    pub fn alert(&self) -> Option<OrderAlert> {
        self.alert.as_ref().and_then(alert_from_value)
    }

    /// Sets the alert and the fields searched by.
    pub fn set_alert(&mut self, alert: Option<&OrderAlert>) {
        self.state = alert.map(|a| a.state.as_str().to_string());
        self.severity = alert.map(|a| a.severity.as_str().to_string());
        self.fired_ns = alert.map(|a| a.fired_at);
        self.alert = alert.map(alert_value);
    }

    pub fn set_outbox(&mut self, outbox: Vec<NoticeEntry>) {
        self.outbox_pending = !outbox.is_empty();
        self.outbox = outbox;
    }
}

/// A document with the version a conditional write must name.
#[derive(Debug, Clone)]
pub struct Versioned {
    pub doc: StateDocument,
    pub seq_no: u64,
    pub primary_term: u64,
}

/// What became of one conditional write.
#[derive(Debug, Clone, PartialEq)]
pub enum Written {
    Done,
    /// Another instance wrote first (409), or Elasticsearch asked to try again (429 / 5xx):
    /// read it again and decide again.
    Again,
    /// Refused for good (a 4xx other than 409 / 429).
    Refused(String),
}

#[derive(Clone)]
pub struct EsMonitorState {
    client: EsClient,
    index: String,
}

fn mappings() -> Value {
    let keyword = json!({"type": "keyword"});
    let long = json!({"type": "long"});
    let opaque = json!({"type": "object", "enabled": false});
    json!({
        "dynamic": false,
        "properties": {
            "key": keyword, "monitor": keyword, "rule": keyword, "order_id": keyword, "phase": keyword,
            "state": keyword, "severity": keyword,
            "from_ns": long, "end_ns": long, "updated_ns": long, "fired_ns": long,
            "outbox_pending": {"type": "boolean"},
            "alert": opaque, "outbox": opaque, "repeated_ns": opaque,
        }
    })
}

impl EsMonitorState {
    pub fn new(client: EsClient, index: String) -> EsMonitorState {
        EsMonitorState { client, index }
    }

    /// The monitor index of an `elasticsearch` exporter's configuration.
    pub fn from_config(config: &ElasticsearchExporterConfig) -> Result<EsMonitorState, SetupError> {
        Ok(EsMonitorState::new(EsClient::new(config)?, config.monitors.index.clone()))
    }

    pub fn index(&self) -> &str {
        &self.index
    }

    /// Creates the index with its mapping unless it exists; `Err` when Elasticsearch cannot
    /// be reached.
    pub async fn install(&self) -> Result<(), EsError> {
        let body = Bytes::from(json!({"mappings": mappings()}).to_string());
        let reply = self.client.request(Method::Put, &format!("/{}", self.index), Some(body), "application/json").await?;
        match reply.status {
            200..=299 => tracing::info!(index = %self.index, "order monitor index created"),
            400 => {} // resource_already_exists_exception
            401 | 403 => {
                tracing::warn!(index = %self.index, status = reply.status, "may not create the order monitor index; assuming it exists")
            }
            status => {
                return Err(EsError::status(format!("creating {}", self.index), status, &reply.body));
            }
        }
        Ok(())
    }

    /// Makes everything written so far visible to searches (start-up scans read after it).
    pub async fn refresh(&self) -> Result<(), EsError> {
        let reply = self.client.request(Method::Post, &format!("/{}/_refresh", self.index), None, "application/json").await?;
        match reply.status {
            200..=299 | 404 => Ok(()),
            status => Err(EsError::Status { what: format!("refreshing {}", self.index), status, body: String::new() }),
        }
    }

    /// The documents with these keys that exist, with their versions (real time: no refresh
    /// needed, so a write by another instance a moment ago is seen).
    pub async fn get(&self, keys: &[String]) -> Result<HashMap<String, Versioned>, EsError> {
        let mut out = HashMap::new();
        for chunk in keys.chunks(PAGE) {
            let found: Vec<Found<StateDocument>> = multi_get(&self.client, &self.index, chunk, "monitor state").await?;
            for doc in found {
                if let Some(error) = doc.error {
                    return Err(EsError::Document { what: "monitor state", id: doc.id, error });
                }
                if let (true, Some(source), Some(seq_no), Some(primary_term)) = (doc.found, doc.source, doc.seq_no, doc.primary_term) {
                    out.insert(doc.id, Versioned { doc: source, seq_no, primary_term });
                }
            }
        }
        Ok(out)
    }

    /// Writes documents conditionally in one bulk request: `create` where `version` is `None`
    /// (the caller found none), `index` with `if_seq_no` / `if_primary_term` otherwise. One
    /// outcome per document, in order.
    pub async fn put(&self, docs: &[(Option<(u64, u64)>, StateDocument)]) -> Result<Vec<Written>, EsError> {
        if docs.is_empty() {
            return Ok(Vec::new());
        }
        let mut lines = Vec::new();
        for (version, doc) in docs {
            let action = match version {
                None => json!({"create": {"_index": self.index, "_id": doc.key}}),
                Some((seq, term)) => json!({"index": {"_index": self.index, "_id": doc.key, "if_seq_no": seq, "if_primary_term": term}}),
            };
            lines.extend_from_slice(action.to_string().as_bytes());
            lines.push(b'\n');
            serde_json::to_writer(&mut lines, doc).map_err(|source| EsError::Encode { what: "monitor state", source })?;
            lines.push(b'\n');
        }
        let (reply, _) = self.client.bulk(&self.client.bulk_body(std::iter::once(&lines[..]))).await?;
        match classify(reply.status, reply.retry_after.as_deref(), &reply.body, docs.len()) {
            RequestOutcome::Items(items) => Ok(items
                .into_iter()
                .map(|item| match item {
                    ItemOutcome::Indexed => Written::Done,
                    ItemOutcome::AlreadyIndexed | ItemOutcome::Retry { .. } => Written::Again,
                    ItemOutcome::Reject { status, error } => Written::Refused(format!("HTTP {status}: {error}")),
                })
                .collect()),
            other => Err(EsError::Bulk { what: "writing monitor state", outcome: format!("{other:?}") }),
        }
    }

    /// Every document matching `query`, in key order, page by page.
    async fn scan(&self, query: Value) -> Result<Vec<StateDocument>, EsError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut body = json!({"size": PAGE, "query": query, "sort": [{"key": "asc"}]});
            if let Some(key) = &after {
                body["search_after"] = json!([key]);
            }
            let page = self.search(body).await?;
            let full = page.len() == PAGE;
            after = page.last().map(|d| d.key.clone());
            out.extend(page);
            if !full {
                return Ok(out);
            }
        }
    }

    async fn search(&self, body: Value) -> Result<Vec<StateDocument>, EsError> {
        let mut reply = self.client.search(&self.index, &body).await?;
        match reply.get_mut("hits").and_then(|h| h.get_mut("hits")).map(Value::take).unwrap_or_default() {
            Value::Array(hits) => hits
                .into_iter()
                .map(|mut h| {
                    serde_json::from_value(h.get_mut("_source").map(Value::take).unwrap_or_default())
                        .map_err(|source| EsError::Unreadable { what: "monitor state document".into(), source })
                })
                .collect(),
            _ => Ok(Vec::new()),
        }
    }

    /// The monitor's documents whose clock runs (pending or firing): what it holds in memory.
    pub async fn running(&self, monitor: &str) -> Result<Vec<StateDocument>, EsError> {
        self.scan(json!({"bool": {"filter": [{"term": {"monitor": monitor}}, {"terms": {"phase": ["pending", "firing"]}}]}})).await
    }

    /// The monitor's documents with notices not yet confirmed.
    pub async fn with_outbox(&self, monitor: &str) -> Result<Vec<StateDocument>, EsError> {
        self.scan(json!({"bool": {"filter": [{"term": {"monitor": monitor}}, {"term": {"outbox_pending": true}}]}})).await
    }

    /// The alerts of one order, oldest first.
    pub async fn order_alerts(&self, order_id: &str) -> Result<Vec<OrderAlert>, EsError> {
        let body = json!({
            "size": PAGE,
            "query": {"bool": {"filter": [{"term": {"order_id": order_id}}, {"exists": {"field": "state"}}]}},
            "sort": [{"fired_ns": "asc"}, {"key": "asc"}],
        });
        Ok(self.search(body).await?.iter().filter_map(StateDocument::alert).collect())
    }

    /// Alerts matching `query`, newest (last fired) first.
    pub async fn alerts(&self, query: &AlertQuery) -> Result<Vec<OrderAlert>, EsError> {
        let mut filter = vec![json!({"exists": {"field": "state"}})];
        if let Some(state) = query.state {
            filter.push(json!({"term": {"state": state.as_str()}}));
        }
        if let Some(rule) = &query.rule {
            filter.push(json!({"term": {"rule": rule}}));
        }
        if let Some(severity) = query.severity {
            filter.push(json!({"term": {"severity": severity.as_str()}}));
        }
        if let Some(since) = query.since_ns {
            filter.push(json!({"range": {"fired_ns": {"gte": since}}}));
        }
        if let Some(until) = query.until_ns {
            filter.push(json!({"range": {"fired_ns": {"lte": until}}}));
        }
        let body = json!({
            "size": query.limit,
            "query": {"bool": {"filter": filter}},
            "sort": [{"fired_ns": "desc"}, {"order_id": "asc"}, {"monitor": "asc"}, {"rule": "asc"}],
        });
        Ok(self.search(body).await?.iter().filter_map(StateDocument::alert).collect())
    }

    /// How many firing alerts each of these orders has (orders without one are left out).
    pub async fn firing_counts(&self, order_ids: &[String]) -> Result<std::collections::HashMap<String, u64>, EsError> {
        let mut counts = std::collections::HashMap::new();
        if order_ids.is_empty() {
            return Ok(counts);
        }
        let body = json!({
            "size": 10_000,
            "query": {"bool": {"filter": [{"terms": {"order_id": order_ids}}, {"term": {"state": "firing"}}]}},
            "_source": ["order_id", "key"],
        });
        for doc in self.search(body).await? {
            *counts.entry(doc.order_id).or_insert(0) += 1;
        }
        Ok(counts)
    }

    /// Orders with an alert in this state (at most 10 000).
    pub async fn orders_with_alert(&self, state: AlertState) -> Result<Vec<String>, EsError> {
        let body = json!({"size": 10_000, "query": {"term": {"state": state.as_str()}}, "_source": ["order_id", "key"]});
        let mut ids: Vec<String> = self.search(body).await?.into_iter().map(|d| d.order_id).collect();
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// Forgets finished clocks and resolved alerts with nothing left to send, not touched since
    /// `cutoff_ns`.
    pub async fn purge(&self, cutoff_ns: u64) -> Result<u64, EsError> {
        let body = json!({"query": {"bool": {
            "filter": [{"range": {"updated_ns": {"lt": cutoff_ns}}}],
            "must_not": [{"terms": {"phase": ["pending", "firing"]}}, {"term": {"outbox_pending": true}}],
        }}});
        let path = format!("/{}/_delete_by_query?conflicts=proceed", self.index);
        let reply = self.client.request(Method::Post, &path, Some(Bytes::from(body.to_string())), "application/json").await?;
        if !(200..300).contains(&reply.status) && reply.status != 404 {
            return Err(EsError::status(path, reply.status, &reply.body));
        }
        let v: Value = serde_json::from_slice(&reply.body).unwrap_or_default();
        Ok(v["deleted"].as_u64().unwrap_or(0))
    }
}
