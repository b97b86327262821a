//! Read backends: where the read API (and, later, the monitors) get their answers, apart from the
//! exporters, which only write. Both backends build timelines with `OrderTimeline::assemble` and
//! return traces as received, so every answer is the same whichever store holds the spans.

mod elasticsearch;
mod search;

use std::sync::Arc;

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

pub use elasticsearch::ElasticsearchQuery;
pub use search::{service_of, value_text, DependencyLink, Masker, TraceQuery, MAX_SCANNED_SPANS};

use crate::orders::{OrderAlert, OrderQuery, OrderSummary, OrderTimeline};
use crate::store::{AlertQuery, SpanStore, StoreError};

#[derive(Clone)]
pub enum QueryBackend {
    Embedded(Arc<SpanStore>),
    Elasticsearch(ElasticsearchQuery),
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Names the store's file: a log line says which disk to look at.
    #[error("embedded store {} read failed", .0.display())]
    Store(std::path::PathBuf, #[source] StoreError),
    #[error("Elasticsearch query failed")]
    Elasticsearch(#[from] crate::exporters::EsError),
    /// A span document the Elasticsearch exporter wrote does not give its span back.
    #[error("a span document read from Elasticsearch is unreadable")]
    Document(#[from] crate::exporters::ElasticsearchDocumentError),
    #[error("the orders index is turned off (orders.index is empty)")]
    NoOrdersIndex,
    #[error("not supported by this backend: {0}")]
    Unsupported(&'static str),
    #[error("the read task failed")]
    Task(#[source] tokio::task::JoinError),
}

impl QueryBackend {
    pub async fn order_timeline(&self, order_id: String) -> Result<Option<OrderTimeline>, QueryError> {
        match self {
            QueryBackend::Embedded(store) => blocking(store, move |s| s.order_timeline(&order_id)).await,
            QueryBackend::Elasticsearch(es) => es.order_timeline(&order_id).await,
        }
    }

    pub async fn orders(&self, query: OrderQuery) -> Result<Vec<OrderSummary>, QueryError> {
        match self {
            QueryBackend::Embedded(store) => blocking(store, move |s| s.orders(&query)).await,
            QueryBackend::Elasticsearch(es) => es.orders(&query).await,
        }
    }

    /// The order alerts of one order, oldest first (monitors keep their state in the backend).
    pub async fn order_alerts(&self, order_id: String) -> Result<Vec<OrderAlert>, QueryError> {
        match self {
            QueryBackend::Embedded(store) => blocking(store, move |s| s.order_alerts(&order_id)).await,
            QueryBackend::Elasticsearch(es) => es.order_alerts(&order_id).await,
        }
    }

    /// Order alerts matching `query`, newest first.
    pub async fn alerts(&self, query: AlertQuery) -> Result<Vec<OrderAlert>, QueryError> {
        match self {
            QueryBackend::Embedded(store) => blocking(store, move |s| s.alerts(&query)).await,
            QueryBackend::Elasticsearch(es) => es.alerts(&query).await,
        }
    }

    /// A trace's spans grouped by resource and scope, attributes in key order (OTLP attributes
    /// are maps; not every Elasticsearch-API server keeps a document's key order, and both
    /// backends must answer alike).
    pub async fn trace(&self, trace_id: Vec<u8>) -> Result<Option<Vec<ResourceSpans>>, QueryError> {
        let mut found = match self {
            QueryBackend::Embedded(store) => blocking(store, move |s| s.trace(&trace_id)).await,
            QueryBackend::Elasticsearch(es) => es.trace(&trace_id).await,
        }?;
        if let Some(resource_spans) = &mut found {
            crate::store::sort_attributes(resource_spans);
        }
        Ok(found)
    }
}

/// Runs a store read on a blocking thread.
async fn blocking<T: Send + 'static>(
    store: &Arc<SpanStore>,
    read: impl FnOnce(&SpanStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, QueryError> {
    let file = store.file().to_path_buf();
    let store = store.clone();
    tokio::task::spawn_blocking(move || read(&store)).await.map_err(QueryError::Task)?.map_err(|e| QueryError::Store(file, e))
}
