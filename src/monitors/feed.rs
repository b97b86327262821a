//! `MonitorFeed`: the monitors' side of the request path. It picks the order facts out of each
//! processed batch (one pass over each span's attributes; spans whose status and stage no rule
//! names cost that pass and nothing more) and hands them to the monitor task in one message per
//! batch, without waiting: when the bounded channel is full, the facts are dropped and counted
//! (`tracegate_order_monitor_dropped_facts_total`) rather than holding up the client.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use super::Fact;
use crate::pipeline::SpanObserver;
use crate::shared::{attr_string, kv_text};

pub struct MonitorFeed {
    tx: mpsc::Sender<Vec<Fact>>,
    /// Statuses and stages some monitor's rules or terminal lists name.
    statuses: HashSet<String>,
    stages: HashSet<String>,
    dropped: Counter,
    /// When a drop was last logged: at most one line per [`DROP_LOG_EVERY`].
    drop_logged: Mutex<Option<Instant>>,
}

const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

impl MonitorFeed {
    pub(super) fn new(tx: mpsc::Sender<Vec<Fact>>, statuses: HashSet<String>, stages: HashSet<String>, dropped: Counter) -> MonitorFeed {
        MonitorFeed { tx, statuses, stages, dropped, drop_logged: Mutex::new(None) }
    }

    /// The facts of one batch that some monitor wants.
    pub fn facts(&self, batch: &[ResourceSpans]) -> Vec<Fact> {
        let mut facts = Vec::new();
        for rs in batch {
            let mut service: Option<Option<String>> = None;
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    let (mut order, mut status, mut stage) = (None, None, None);
                    for kv in &span.attributes {
                        match kv.key.as_str() {
                            "order.id" => order = kv_text(kv),
                            "order.status" => status = kv_text(kv),
                            "order.stage" => stage = kv_text(kv),
                            _ => {}
                        }
                    }
                    let status = status.filter(|s| self.statuses.contains(s.as_ref()));
                    let stage_wanted = stage.as_deref().is_some_and(|s| self.stages.contains(s));
                    let Some(order) = order.filter(|o| !o.is_empty()) else { continue };
                    if status.is_none() && !stage_wanted {
                        continue;
                    }
                    let service = service
                        .get_or_insert_with(|| {
                            let resource = rs.resource.as_ref()?;
                            attr_string(&resource.attributes, "service.name")
                        })
                        .clone();
                    facts.push(Fact {
                        order_id: order.into_owned(),
                        status: status.map(Cow::into_owned),
                        stage: stage.map(Cow::into_owned),
                        service,
                        time_ns: span.start_time_unix_nano,
                    });
                }
            }
        }
        facts
    }
}

impl SpanObserver for MonitorFeed {
    fn observe(&self, batch: &[ResourceSpans]) {
        let facts = self.facts(batch);
        if facts.is_empty() {
            return;
        }
        match self.tx.try_send(facts) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(facts)) => {
                self.dropped.inc_by(facts.len() as u64);
                let mut logged = self.drop_logged.lock().unwrap_or_else(|p| p.into_inner());
                if logged.is_none_or(|t| t.elapsed() >= DROP_LOG_EVERY) {
                    *logged = Some(Instant::now());
                    tracing::warn!(
                        facts = facts.len(),
                        "the order monitors fall behind; facts dropped (tracegate_order_monitor_dropped_facts_total counts them)"
                    );
                }
            }
            // The monitors stopped (shutdown): nothing watches any more.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}
