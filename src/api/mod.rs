//! The HTTP API on port 8080: the read API under `/api/v1`, Prometheus metrics and health checks.

mod access;
mod admin;
mod alerts;
mod error;
mod orders;
mod traces;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post, MethodRouter};
use axum::Router;

pub use crate::query::QueryBackend;
pub use access::Caller;
pub use error::ApiError;
pub use orders::{OrderPage, DEFAULT_LIMIT, MAX_LIMIT};

use crate::auth::{AccessControl, Pseudonymizer, API_ROUTES};
use crate::pipeline::ExporterQueue;
use crate::telemetry::{Metrics, Readiness};

/// What the API handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub backend: Option<QueryBackend>,
    pub metrics: Arc<Metrics>,
    /// The exporters' queues (swapped by reloads), for `/metrics`.
    pub queues: Arc<std::sync::RwLock<Vec<Arc<ExporterQueue>>>>,
    /// What `/readyz` answers: components report into it.
    pub readiness: Arc<Readiness>,
    /// Authentication, authorization and the audit log.
    pub access: Arc<AccessControl>,
    /// The running configuration with secrets redacted, for `GET /api/v1/admin/config`.
    pub config_view: Arc<std::sync::RwLock<serde_json::Value>>,
    /// Masks personal data in read responses.
    pub pseudonyms: Arc<Pseudonymizer>,
    /// Reloads the configuration (`POST /api/v1/admin/reload`); none where a reload is not
    /// possible.
    pub reload: Option<Arc<dyn Reload>>,
}

/// The gateway's reload, as the API calls it: the summary of what changed, or why nothing did.
pub trait Reload: Send + Sync {
    fn reload(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<serde_json::Value, String>> + Send + '_>>;
}

/// The API router, built from the policy table: a route without a rule cannot be added.
pub fn router(state: ApiState) -> Router {
    let mut router = Router::new();
    for rule in API_ROUTES {
        router = router.route(rule.path, handler(rule.path));
    }
    router
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        // Every request, the fallback included, passes the door first.
        .layer(axum::middleware::from_fn_with_state(state.clone(), access::authorize))
        .with_state(state)
}

/// The handler of each rule's path.
fn handler(path: &str) -> MethodRouter<ApiState> {
    match path {
        "/healthz" => get(|| async { "ok\n" }),
        "/readyz" => get(readyz),
        "/metrics" => get(metrics),
        "/api/v1/traces/{trace_id}" => get(traces::get_trace),
        "/api/v1/orders" => get(orders::list_orders),
        "/api/v1/orders/{order_id}" => get(orders::get_order),
        "/api/v1/alerts" => get(alerts::list_alerts),
        "/api/v1/audit" => get(admin::read_audit),
        "/api/v1/admin/config" => get(admin::view_config),
        "/api/v1/admin/reload" => post(admin::reload),
        // The table and this match are edited together; the unit test below builds the router,
        // so a rule without a handler fails the suite rather than a start-up.
        other => unreachable!("API rule {other} has no handler"),
    }
}

/// 200 `{"status":"ready"}`, or 503 with every reason not to send traffic here.
async fn readyz(State(state): State<ApiState>) -> impl IntoResponse {
    match state.readiness.check() {
        Ok(()) => (StatusCode::OK, axum::Json(serde_json::json!({"status": "ready"}))),
        Err(reasons) => (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"status": "not ready", "reasons": reasons}))),
    }
}

async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    for q in state.queues.read().unwrap_or_else(|p| p.into_inner()).iter() {
        q.metrics.queue_size.set(q.len() as i64);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_rule_has_a_handler() {
        for rule in crate::auth::API_ROUTES {
            let _ = super::handler(rule.path);
        }
    }
}
