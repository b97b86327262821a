//! The HTTP API on port 8080: the read API under `/api/v1`, the Jaeger-compatible query API, the
//! support console's pages, browser sign-in, Prometheus metrics and health checks.

mod access;
mod admin;
mod alerts;
mod console;
mod error;
mod jaeger;
mod jaeger_proxy;
mod login;
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
pub use error::{ApiError, ParamError, ParamProblem};
pub use jaeger_proxy::{JaegerProxy, JaegerUiConfig, ProxySetupError};
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
    /// Jaeger UI and its API served from a real Jaeger under `api.jaeger_ui.path`; none
    /// without `api.jaeger_ui`.
    pub jaeger_proxy: Option<Arc<JaegerProxy>>,
    /// Where the order timeline's events link to Jaeger UI (`{url}/trace/{trace_id}`).
    pub jaeger_ui_url: Option<String>,
    /// Browser sign-in (`auth.login`); none when it is not configured.
    pub signin: Option<Arc<crate::auth::SignIn>>,
    /// The `order_sla` monitors' rules and terminal statuses (the console's order page shows
    /// an order's transitions against them); empty without monitors.
    pub order_rules: Arc<crate::monitors::OrderThresholds>,
}

/// The gateway's reload, as the API calls it: the summary of what changed, or why nothing did.
pub trait Reload: Send + Sync {
    fn reload(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<serde_json::Value, ReloadRefusal>> + Send + '_>>;
}

/// Why a reload was refused (the gateway's `ReloadError`, which the API cannot name: it sits
/// below the gateway), with its causes; shown to the admin whole.
pub type ReloadRefusal = Box<dyn std::error::Error + Send + Sync>;

/// The API router, built from the policy table: a route without a rule cannot be added.
pub fn router(state: ApiState) -> Router {
    let mut router = Router::new();
    for rule in API_ROUTES {
        router = router.route(rule.path, handler(rule.path));
    }
    let mut router = router
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        // Console handlers' error pages under the console's base path (inside the door).
        .layer(axum::middleware::from_fn_with_state(state.clone(), console::error_pages))
        // Every request, the fallback included, passes the door first.
        .layer(axum::middleware::from_fn_with_state(state.clone(), access::authorize));
    // The Jaeger proxy's routes are merged after the door: they pass a door of their own (their
    // paths are configured, so they cannot be rules of the static table).
    if let Some(proxy) = &state.jaeger_proxy {
        router = router.merge(proxy.routes());
    }
    router.with_state(state)
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
        "/api/services" => get(jaeger::services),
        "/api/services/{service}/operations" => get(jaeger::service_operations),
        "/api/operations" => get(jaeger::operations),
        "/api/traces" => get(jaeger::search),
        "/api/traces/{trace_id}" => get(jaeger::trace),
        "/api/dependencies" => get(jaeger::dependencies),
        "/api/v3/services" => get(jaeger::v3::services),
        "/api/v3/operations" => get(jaeger::v3::operations),
        "/api/v3/traces" => get(jaeger::v3::find_traces),
        "/api/v3/traces/{trace_id}" => get(jaeger::v3::trace),
        "/api/v1/audit" => get(admin::read_audit),
        "/api/v1/admin/config" => get(admin::view_config),
        "/api/v1/admin/reload" => post(admin::reload),
        "/login" => get(login::login),
        "/auth/callback" => get(login::callback),
        "/logout" => post(login::logout),
        "/auth/session" => get(login::session),
        "/static/{file}" => get(console::assets::serve),
        "/" => get(console::orders::page),
        "/orders/{order_id}" => get(console::order::page),
        "/traces/{trace_id}" => get(console::trace::page),
        "/traces/{trace_id}/unmask" => post(console::trace::unmask),
        "/alerts" => get(console::alerts::page),
        "/admin" => get(console::admin::page),
        "/admin/reload" => post(console::admin::reload),
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

/// Prometheus text 0.0.4, or OpenMetrics 1.0 (with exemplars) when the `Accept` header asks for
/// it, as Prometheus does.
async fn metrics(State(state): State<ApiState>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    for q in state.queues.read().unwrap_or_else(|p| p.into_inner()).iter() {
        q.metrics.queue_size.set(q.len() as i64);
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    if crate::telemetry::wants_openmetrics(accept) {
        ([(header::CONTENT_TYPE, crate::telemetry::OPENMETRICS_CONTENT_TYPE)], state.metrics.render_openmetrics())
    } else {
        ([(header::CONTENT_TYPE, crate::telemetry::TEXT_CONTENT_TYPE)], state.metrics.render())
    }
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
