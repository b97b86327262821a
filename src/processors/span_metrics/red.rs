//! Calls and durations per service, span name, kind and status code (RED), like the Collector's
//! `spanmetrics` connector. Span names are route templates: a raw path's id-like segments are
//! replaced by `{id}` before the name becomes a label.

use std::borrow::Cow;
use std::sync::Arc;

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::Span;

use super::config::{Naming, SpanMetricsConfig};
use super::series::{Exemplar, Family, Kind};

pub struct Red {
    /// Calls are the duration histogram's counts, exposed as a counter of their own: one
    /// lookup per span feeds both.
    pub calls: String,
    pub duration: Family,
    naming: Naming,
    /// Seconds -> the exposed unit (1 or 1000).
    scale: f64,
    exemplars: bool,
}

impl Red {
    pub fn new(config: &SpanMetricsConfig) -> Red {
        let (prefix, labels, unit, scale) = match config.naming {
            Naming::Tracegate => ("tracegate_span", ["service", "span_name", "span_kind", "status_code"], "seconds", 1.0),
            Naming::Spm => ("traces_span_metrics", ["service_name", "span_name", "span_kind", "status_code"], "milliseconds", 1000.0),
        };
        let limit = config.aggregation_cardinality_limit;
        let bounds: Arc<[f64]> = config.histogram.buckets.iter().map(|d| d.as_secs_f64() * scale).collect();
        Red {
            calls: format!("{prefix}_calls"),
            duration: Family::new(
                format!("{prefix}_duration_{unit}"),
                "Span durations by service, span name, kind and status code",
                &labels,
                Kind::Histogram(bounds),
                limit,
            ),
            naming: config.naming,
            scale,
            exemplars: config.exemplars.enabled,
        }
    }

    pub fn encode(&self, out: &mut String, openmetrics: bool) {
        self.duration.encode_counts(out, &self.calls, "Spans by service, span name, kind and status code", openmetrics);
        self.duration.encode(out, openmetrics);
    }

    pub fn record(&self, service: &str, span: &Span, now_ms: u64) {
        let name = route_template(&span.name);
        let kind = kind_label(span.kind, self.naming);
        let status = status_label(span, self.naming);
        let labels = [service, name.as_ref(), kind, status];
        let seconds = span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano) as f64 / 1e9;
        let value = seconds * self.scale;
        let exemplar = self.exemplars.then(|| exemplar(span, value, now_ms)).flatten();
        self.duration.observe(&labels, value, exemplar);
    }
}

/// The span's trace as an exemplar (none for a malformed trace id).
pub fn exemplar(span: &Span, value: f64, now_ms: u64) -> Option<Exemplar> {
    let trace_id: [u8; 16] = span.trace_id.as_slice().try_into().ok()?;
    Some(Exemplar { trace_id, value, time_ms: now_ms })
}

pub fn kind_label(kind: i32, naming: Naming) -> &'static str {
    let kind = SpanKind::try_from(kind).unwrap_or(SpanKind::Unspecified);
    match (naming, kind) {
        (Naming::Tracegate, SpanKind::Server) => "server",
        (Naming::Tracegate, SpanKind::Client) => "client",
        (Naming::Tracegate, SpanKind::Producer) => "producer",
        (Naming::Tracegate, SpanKind::Consumer) => "consumer",
        (Naming::Tracegate, SpanKind::Internal) => "internal",
        (Naming::Tracegate, SpanKind::Unspecified) => "unspecified",
        (Naming::Spm, k) => k.as_str_name(),
    }
}

pub fn is_error(span: &Span) -> bool {
    span.status.as_ref().is_some_and(|s| s.code == StatusCode::Error as i32)
}

fn status_label(span: &Span, naming: Naming) -> &'static str {
    let code = span.status.as_ref().map(|s| s.code).and_then(|c| StatusCode::try_from(c).ok()).unwrap_or(StatusCode::Unset);
    match (naming, code) {
        (Naming::Tracegate, StatusCode::Unset) => "unset",
        (Naming::Tracegate, StatusCode::Ok) => "ok",
        (Naming::Tracegate, StatusCode::Error) => "error",
        (Naming::Spm, c) => c.as_str_name(),
    }
}

/// A span name with the id-like segments of its paths replaced by `{id}`:
/// `GET /orders/A-1001/items/7?x=1` -> `GET /orders/{id}/items/{id}`. Names without a `/` (or
/// already templated) are returned as they are, without allocating.
pub fn route_template(name: &str) -> Cow<'_, str> {
    if !name.contains('/') || !needs_templating(name) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len());
    for (i, word) in name.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if !word.contains('/') {
            out.push_str(word);
            continue;
        }
        let path = word.split(['?', '#']).next().unwrap_or(word);
        for (j, segment) in path.split('/').enumerate() {
            if j > 0 {
                out.push('/');
            }
            out.push_str(if id_like(segment) { "{id}" } else { segment });
        }
    }
    Cow::Owned(out)
}

fn needs_templating(name: &str) -> bool {
    name.split(' ').filter(|w| w.contains('/')).any(|w| w.contains(['?', '#']) || w.split('/').any(id_like))
}

/// A path segment that names one thing rather than a route: it holds a digit (except version
/// segments like `v2`), or is a long token (hashes, base64 ids).
fn id_like(segment: &str) -> bool {
    if segment.is_empty() || segment.starts_with('{') || segment.starts_with(':') {
        return false;
    }
    let version = segment.len() <= 3 && segment.starts_with('v') && segment[1..].bytes().all(|b| b.is_ascii_digit());
    if version {
        return false;
    }
    segment.bytes().any(|b| b.is_ascii_digit()) || segment.len() >= 24 || segment.contains('@')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_paths_become_route_templates() {
        assert_eq!(route_template("GET /orders/A-1001"), "GET /orders/{id}");
        assert_eq!(route_template("GET /api/v2/orders/123/items/9?full=1"), "GET /api/v2/orders/{id}/items/{id}");
        assert_eq!(route_template("GET /orders/{id}"), "GET /orders/{id}");
        assert_eq!(route_template("/files/3f2a9c1e-77aa-4c8e-9b1d-2a3b4c5d6e7f"), "/files/{id}");
        assert_eq!(route_template("/users/alice@example.com"), "/users/{id}");
        assert!(matches!(route_template("orders publish"), Cow::Borrowed(_)));
        assert!(matches!(route_template("POST /orders"), Cow::Borrowed(_)));
    }
}
