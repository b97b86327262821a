//! The HTTP API on port 8080: the read API under `/api/v1`, Prometheus metrics and health checks.

mod backend;
mod error;
mod orders;
mod traces;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

pub use backend::QueryBackend;
pub use error::ApiError;
pub use orders::{OrderPage, DEFAULT_LIMIT, MAX_LIMIT};

use crate::pipeline::ExporterQueue;
use crate::telemetry::Metrics;

/// What the API handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub backend: Option<QueryBackend>,
    pub metrics: Arc<Metrics>,
    pub queues: Vec<Arc<ExporterQueue>>,
    pub ready: Arc<AtomicBool>,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/traces/{trace_id}", get(traces::get_trace))
        .route("/api/v1/orders", get(orders::list_orders))
        .route("/api/v1/orders/{order_id}", get(orders::get_order))
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .with_state(state)
}

async fn readyz(State(state): State<ApiState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    for q in &state.queues {
        q.metrics.queue_size.set(q.len() as i64);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}
