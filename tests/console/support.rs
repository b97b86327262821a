//! What the console's tests share: a secured gateway with the embedded store, tokens for each
//! role, order events in, pages out.

use std::net::SocketAddr;

use serde_json::{json, Value};
pub use tracegate::shared::{format_rfc3339_nanos, now_unix_nanos as now_ns};
use tracegate::Gateway;

use crate::common::{eventually, send, start_gateway};
use crate::fixture::{mint, service_claims, spec, token, Idp};

pub struct Console {
    pub gateway: Gateway,
    pub api: SocketAddr,
    pub http: SocketAddr,
    /// The gateway's data directory (the embedded store, `audit.jsonl`).
    pub dir: tempfile::TempDir,
}

/// One second in nanoseconds.
pub const SEC: u64 = 1_000_000_000;

/// An order event as services post it to `/v1/order-events` (no `status` when `None`).
pub fn event(order: &str, service: &str, stage: &str, status: Option<&str>, at_ns: u64) -> Value {
    let mut e = json!({"order_id": order, "service": service, "stage": stage, "time": format_rfc3339_nanos(at_ns)});
    if let Some(s) = status {
        e["status"] = json!(s);
    }
    e
}

/// `text` as one URL path segment (an order id in `/orders/{id}`).
pub fn path_segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>().replace('+', "%20")
}

/// A page as the browser gets it.
pub struct Page {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

/// Starts the secured gateway of `fixture::secured_config`, with `extra` YAML appended (top-level
/// sections such as `monitors:`).
pub async fn start(extra: &str) -> Console {
    let yaml = format!("{}\n{extra}", crate::fixture::secured_config());
    let (gateway, dir) = start_gateway(&yaml).await;
    let api = gateway.addresses.api.expect("the API listens");
    let http = *gateway.addresses.http.values().next().expect("the OTLP/HTTP receiver listens");
    Console { gateway, api, http, dir }
}

pub fn support_token() -> String {
    token(Idp::Keycloak, "sam", &["support"])
}

pub fn admin_token() -> String {
    token(Idp::Keycloak, "ada", &["admin"])
}

/// A valid token without a reading role.
pub fn no_role_token() -> String {
    token(Idp::Keycloak, "nora", &[])
}

/// A token for the sending service `service` (role `service`).
pub fn service_token(service: &str) -> String {
    mint(&[spec(Idp::Keycloak, service_claims(Idp::Keycloak, service))]).remove(0)
}

impl Console {
    /// `GET path` on the API port with `token` (none: no `Authorization`).
    pub async fn get(&self, path: &str, token: Option<&str>) -> Page {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("authorization", b.as_str())).collect();
        let (status, headers, body) = send("GET", &format!("http://{}{path}", self.api), &headers, Vec::new()).await;
        Page { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
    }

    /// `POST path` with a form body (`application/x-www-form-urlencoded`).
    pub async fn post_form(&self, path: &str, token: Option<&str>, form: &[(&str, &str)]) -> Page {
        let body: String = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let bearer = token.map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/x-www-form-urlencoded")];
        if let Some(b) = &bearer {
            headers.push(("authorization", b.as_str()));
        }
        let (status, headers, body) = send("POST", &format!("http://{}{path}", self.api), &headers, body.into_bytes()).await;
        Page { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
    }

    /// Posts order events (one object or an array) as `service`, as MES does; panics unless
    /// accepted.
    pub async fn order_events(&self, service: &str, events: &Value) {
        let bearer = format!("Bearer {}", service_token(service));
        let (status, _, body) = send(
            "POST",
            &format!("http://{}/v1/order-events", self.http),
            &[("authorization", &bearer), ("content-type", "application/json")],
            serde_json::to_vec(events).unwrap(),
        )
        .await;
        assert!((200..300).contains(&status), "order events refused: {status} {}", String::from_utf8_lossy(&body));
    }

    /// Waits until the read API knows `order_id` with at least `steps` events.
    pub async fn wait_for_order(&self, order_id: &str, steps: usize) {
        self.wait_for_order_within(order_id, steps, std::time::Duration::from_secs(10)).await;
    }

    /// [`Console::wait_for_order`] with a limit of its own.
    pub async fn wait_for_order_within(&self, order_id: &str, steps: usize, within: std::time::Duration) {
        let token = support_token();
        let path = format!("/api/v1/orders/{}", path_segment(order_id));
        eventually(&format!("order {order_id} with {steps} steps in the read API"), within, || async {
            let page = self.get(&path, Some(&token)).await;
            let seen = serde_json::from_str::<Value>(&page.body).ok().and_then(|b| b["events"].as_array().map(Vec::len)).unwrap_or(0);
            if page.status == 200 && seen >= steps {
                Ok(())
            } else {
                Err(format!("{} with {seen} steps", page.status))
            }
        })
        .await
    }
}
