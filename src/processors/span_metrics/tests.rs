use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Status};

use super::*;
use crate::processors::span_metrics::Naming;

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }), ..Default::default() }
}

fn batch(service: &str, spans: Vec<Span>) -> Vec<ResourceSpans> {
    vec![ResourceSpans {
        resource: Some(Resource { attributes: vec![kv("service.name", service)], ..Default::default() }),
        scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
        ..Default::default()
    }]
}

fn span(name: &str, kind: SpanKind, ms: u64, attrs: &[(&str, &str)]) -> Span {
    Span {
        trace_id: vec![7; 16],
        span_id: vec![1; 8],
        name: name.into(),
        kind: kind as i32,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_000_000_000 + ms * 1_000_000,
        attributes: attrs.iter().map(|(k, v)| kv(k, v)).collect(),
        ..Default::default()
    }
}

#[test]
fn spans_pass_unchanged_and_their_metrics_render_in_both_formats() {
    let metrics = Metrics::new();
    let p = SpanMetrics::new(&SpanMetricsConfig::default(), &metrics);
    let mut failed =
        span("GET /orders/A-1", SpanKind::Server, 30, &[("order.id", "A-1"), ("order.status", "new"), ("order.stage", "created")]);
    failed.status = Some(Status { code: 2, ..Default::default() });
    let input = batch("shop-api", vec![failed, span("GET /orders/A-2", SpanKind::Server, 3, &[])]);
    let out = p.process(input.clone(), Instant::now());
    assert_eq!(out, input);
    let text = metrics.render();
    assert!(text.contains("tracegate_span_calls_total{service=\"shop-api\",span_name=\"GET /orders/{id}\",span_kind=\"server\",status_code=\"error\"} 1\n"), "{text}");
    assert!(text.contains("tracegate_span_calls_total{service=\"shop-api\",span_name=\"GET /orders/{id}\",span_kind=\"server\",status_code=\"unset\"} 1\n"), "{text}");
    assert!(text.contains("tracegate_order_steps_total{service=\"shop-api\",stage=\"created\"} 1\n"), "{text}");
    assert!(text.contains("tracegate_orders_in_status{status=\"new\"} 1\n"), "{text}");
    assert!(!text.contains("# EOF") && !text.contains("trace_id="), "{text}");
    let om = metrics.render_openmetrics();
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert_eq!(om.matches("# EOF").count(), 1);
    assert!(om.contains(&format!("# {{trace_id=\"{}\"}} 0.03 ", "07".repeat(16))), "{om}");
    assert!(om.contains("# TYPE tracegate_span_calls counter\n"), "{om}");
}

#[test]
fn the_spm_naming_is_what_jaegers_monitor_tab_queries() {
    let metrics = Metrics::new();
    let config = SpanMetricsConfig { naming: Naming::Spm, ..Default::default() };
    let p = SpanMetrics::new(&config, &metrics);
    p.process(batch("crm-api", vec![span("orders process", SpanKind::Consumer, 250, &[])]), Instant::now());
    let text = metrics.render();
    let labels = "service_name=\"crm-api\",span_name=\"orders process\",span_kind=\"SPAN_KIND_CONSUMER\",status_code=\"STATUS_CODE_UNSET\"";
    assert!(text.contains(&format!("traces_span_metrics_calls_total{{{labels}}} 1\n")), "{text}");
    assert!(text.contains(&format!("traces_span_metrics_duration_milliseconds_bucket{{{labels},le=\"400\"}} 1\n")), "{text}");
    assert!(text.contains(&format!("traces_span_metrics_duration_milliseconds_bucket{{{labels},le=\"200\"}} 0\n")), "{text}");
}

#[test]
fn a_second_pipeline_and_a_reload_with_the_same_configuration_share_the_counts() {
    let metrics = Metrics::new();
    let config = SpanMetricsConfig::default();
    let a = SpanMetrics::new(&config, &metrics);
    let b = SpanMetrics::new(&config, &metrics);
    assert!(Arc::ptr_eq(a.state(), b.state()));
    let other = SpanMetricsConfig { aggregation_cardinality_limit: 5, ..Default::default() };
    let c = SpanMetrics::new(&other, &metrics);
    assert!(!Arc::ptr_eq(a.state(), c.state()));
}

#[test]
fn ten_thousand_paths_and_order_ids_leave_the_series_bounded() {
    let metrics = Metrics::new();
    let config = SpanMetricsConfig { aggregation_cardinality_limit: 50, ..Default::default() };
    let p = SpanMetrics::new(&config, &metrics);
    let now = Instant::now();
    for i in 0..10_000 {
        let order = format!("A-{i}");
        let name = format!("GET /p{}x/{}", char::from(b'a' + (i % 26) as u8), "q".repeat(i % 40));
        p.process(batch("shop-api", vec![span(&name, SpanKind::Server, 1, &[("order.id", &order), ("order.status", "new")])]), now);
    }
    let state = p.state();
    assert!(state.series() <= 50 * state.families().len(), "{}", state.series());
    assert!(state.red.duration.overflowed() > 0);
}

#[test]
fn the_configuration_names_every_mistake_with_its_path() {
    let yaml = r#"
receivers: {otlp: {grpc: {endpoint: "127.0.0.1:0"}}}
processors:
  metrics_a: {type: span_metrics, histogram: {buckets: [1s, 500ms]}, aggregation_cardinality_limit: 0}
  metrics_b: {type: span_metrics, orders: {window: 0s}, naming: jaeger}
exporters: {debug: {}}
service: {pipelines: {traces: {receivers: [otlp], processors: [metrics_a, metrics_b], exporters: [debug]}}}
"#;
    let issues = crate::config::Config::from_yaml(yaml).unwrap_err().issues;
    let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
    assert!(paths.contains(&"processors.metrics_a.histogram.buckets"), "{issues:?}");
    assert!(paths.contains(&"processors.metrics_a.aggregation_cardinality_limit"), "{issues:?}");
    assert!(paths.iter().any(|p| p.starts_with("processors.metrics_b.naming")), "{issues:?}");

    let two = yaml
        .replace("histogram: {buckets: [1s, 500ms]}, aggregation_cardinality_limit: 0", "{}")
        .replace(", orders: {window: 0s}, naming: jaeger", "");
    let two = two.replace("{type: span_metrics, {}}", "{type: span_metrics}");
    let issues = crate::config::Config::from_yaml(&two).unwrap_err().issues;
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].path, "processors.metrics_b", "{issues:?}");
}
