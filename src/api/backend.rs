//! `QueryBackend`: where the read API gets its answers. Both backends build timelines with
//! `OrderTimeline::assemble` and return traces as received, so the JSON is the same.

use std::sync::Arc;

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

use super::ApiError;
use crate::exporters::ElasticsearchQuery;
use crate::store::{OrderQuery, OrderSummary, OrderTimeline, SpanStore, StoreError};

#[derive(Clone)]
pub enum QueryBackend {
    Embedded(Arc<SpanStore>),
    Elasticsearch(ElasticsearchQuery),
}

#[derive(Debug, thiserror::Error)]
#[error("Elasticsearch query failed: {0}")]
struct EsQueryError(String);

fn internal_es(e: String) -> ApiError {
    ApiError::Internal(Box::new(EsQueryError(e)))
}

impl QueryBackend {
    pub async fn order_timeline(&self, order_id: String) -> Result<Option<OrderTimeline>, ApiError> {
        match self {
            QueryBackend::Embedded(store) => blocking(store, move |s| s.order_timeline(&order_id)).await,
            QueryBackend::Elasticsearch(es) => es.order_timeline(&order_id).await.map_err(internal_es),
        }
    }

    pub async fn orders(&self, query: OrderQuery) -> Result<Vec<OrderSummary>, ApiError> {
        match self {
            QueryBackend::Embedded(store) => blocking(store, move |s| s.orders(&query)).await,
            QueryBackend::Elasticsearch(es) => es.orders(&query).await.map_err(internal_es),
        }
    }

    /// A trace's spans grouped by resource and scope, attributes in key order (OTLP attributes
    /// are maps; not every Elasticsearch-API server keeps a document's key order, and both
    /// backends must answer alike).
    pub async fn trace(&self, trace_id: Vec<u8>) -> Result<Option<Vec<ResourceSpans>>, ApiError> {
        let mut found = match self {
            QueryBackend::Embedded(store) => blocking(store, move |s| s.trace(&trace_id)).await,
            QueryBackend::Elasticsearch(es) => es.trace(&trace_id).await.map_err(internal_es),
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
) -> Result<T, ApiError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || read(&store))
        .await
        .map_err(|e| ApiError::Internal(Box::new(e)))?
        .map_err(|e| ApiError::Internal(Box::new(e)))
}
