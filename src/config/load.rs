//! Reading a configuration: YAML text -> environment substitution -> typed sections, each error
//! with its path -> one semantic validation pass that reports every problem at once.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};

use super::env;
use super::model::*;
use super::registry::{self, Family};
use crate::audit::AuditConfig;
use crate::auth::AuthConfig;
use crate::receivers::ReceiverAuth;
pub use crate::shared::{ConfigIssue, Issues};

/// The configuration shipped as the default (`config/tracegate.yaml`).
pub const DEFAULT_CONFIG: &str = include_str!("../../config/tracegate.yaml");

/// Every problem found in a configuration, each with its path in the file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub issues: Vec<ConfigIssue>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.issues.len();
        writeln!(f, "{n} configuration error{}:", if n == 1 { "" } else { "s" })?;
        for issue in &self.issues {
            writeln!(f, "  {issue}")?;
        }
        Ok(())
    }
}

/// The top level as written; component bodies stay untyped until their kind is known.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    receivers: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    processors: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    exporters: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    notifiers: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    monitors: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    api: Option<Value>,
    #[serde(default)]
    query: Option<Value>,
    #[serde(default)]
    service: Option<Value>,
    #[serde(default)]
    auth: Option<Value>,
    #[serde(default)]
    audit: Option<Value>,
}

impl Config {
    /// Reads a file; the error lists every problem.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            issues: vec![ConfigIssue { path: path.display().to_string(), message: format!("cannot read: {e}") }],
        })?;
        Config::from_yaml(&text)
    }

    /// The built-in default configuration, with the `TRACEGATE_*` environment variables it
    /// reads (an operator's `TRACEGATE_GRPC_ENDPOINT=vm:4317` is a configuration error like any
    /// other, reported with its path).
    pub fn default_config() -> Result<Config, ConfigError> {
        Config::from_yaml(DEFAULT_CONFIG)
    }

    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml_with_env(text, &|name| std::env::var(name).ok())
    }

    pub fn from_yaml_with_env(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut issues = Issues::default();
        if let Some(at) = flow_nesting_past(text, MAX_FLOW_NESTING) {
            let message = format!("invalid YAML: [ ] and {{ }} nested deeper than {MAX_FLOW_NESTING} levels");
            return Err(ConfigError { issues: vec![ConfigIssue { path: at, message }] });
        }
        let mut root: Value = match serde_yaml_ng::from_str(text) {
            Ok(Value::Null) => Value::Mapping(Mapping::new()),
            Ok(v) => v,
            Err(e) => {
                let at = e.location().map(|l| format!("line {} column {}", l.line(), l.column())).unwrap_or_else(|| ".".into());
                let message = yaml_problem(text, &e);
                return Err(ConfigError { issues: vec![ConfigIssue { path: at, message }] });
            }
        };
        for message in env::substitute(&mut root, "", lookup) {
            let (path, message) = message.split_once(": ").unwrap_or((".", &message));
            issues.push(path, message);
        }
        let mut redacted = serde_json::to_value(&root).unwrap_or(serde_json::Value::Null);
        redact(&mut redacted, false);
        let raw: RawConfig = match typed(root, "", &mut issues) {
            Some(raw) => raw,
            None => return Err(ConfigError { issues: issues.into_vec() }),
        };

        let receivers = components(raw.receivers, "receivers", &registry::RECEIVERS, &mut issues);
        let processors = components(raw.processors, "processors", &registry::PROCESSORS, &mut issues);
        let exporters = components(raw.exporters, "exporters", &registry::EXPORTERS, &mut issues);
        let notifiers = components(raw.notifiers, "notifiers", &registry::NOTIFIERS, &mut issues);
        let monitors = components(raw.monitors, "monitors", &registry::MONITORS, &mut issues);
        let api = section::<ApiConfig>(raw.api, "api", &mut issues);
        let query = section::<QueryConfig>(raw.query, "query", &mut issues);
        let auth = section::<AuthConfig>(raw.auth, "auth", &mut issues);
        let audit = section::<AuditConfig>(raw.audit, "audit", &mut issues);
        let service = match raw.service {
            Some(v) => typed::<ServiceConfig>(v, "service", &mut issues),
            None => {
                issues.push("service", "missing: a configuration needs service.pipelines");
                None
            }
        };

        let config = Config {
            receivers,
            processors,
            exporters,
            notifiers,
            monitors,
            api: api.unwrap_or_default(),
            query: query.unwrap_or_default(),
            service: service.unwrap_or_default(),
            auth: auth.unwrap_or_default(),
            audit: audit.unwrap_or_default(),
            redacted,
        };
        config.validate(&mut issues);
        if issues.found().is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { issues: issues.into_vec() })
        }
    }

    /// The semantic checks that span sections.
    fn validate(&self, issues: &mut Issues) {
        self.auth.validate(issues);
        self.audit.validate(issues);
        if let Some(mirror) = &self.audit.elasticsearch {
            match self.exporters.get(&mirror.exporter) {
                Some(ExporterConfig::Elasticsearch(_)) => {}
                Some(other) => issues.push(
                    "audit.elasticsearch.exporter",
                    format!("exporter {:?} is of type {}; the audit mirror needs an elasticsearch exporter", mirror.exporter, other.kind()),
                ),
                None => issues.push("audit.elasticsearch.exporter", format!("unknown exporter {:?}", mirror.exporter)),
            }
            if self.audit.path.is_none() {
                issues.push("audit.elasticsearch", "mirrors the audit file: set audit.path too");
            }
        }
        for (id, r) in &self.receivers {
            r.validate(&format!("receivers.{id}"), issues);
            if matches!(r, ReceiverConfig::Otlp(c) if c.auth == ReceiverAuth::Jwt) && !self.auth.enabled() {
                issues.push(format!("receivers.{id}.auth"), "auth: jwt needs auth.issuers");
            }
        }
        for (id, p) in &self.processors {
            p.validate(&format!("processors.{id}"), issues);
        }
        // One set of derived metrics per process: two span_metrics processors would write the
        // same metric names.
        let span_metrics: Vec<&String> =
            self.processors.iter().filter(|(_, p)| matches!(p, ProcessorConfig::SpanMetrics(_))).map(|(id, _)| id).collect();
        if let [_, second, ..] = span_metrics.as_slice() {
            issues.push(
                format!("processors.{second}"),
                "only one span_metrics processor per configuration (list the same one in several pipelines)",
            );
        }
        for (id, e) in &self.exporters {
            e.validate(&format!("exporters.{id}"), issues);
        }
        for (id, n) in &self.notifiers {
            n.validate(&format!("notifiers.{id}"), issues);
        }
        let notifier_ids: Vec<&str> = self.notifiers.keys().map(String::as_str).collect();
        for (id, m) in &self.monitors {
            m.validate(&format!("monitors.{id}"), &notifier_ids, issues);
        }
        if let Some(id) = self.monitors.keys().next() {
            // Monitor state lives in the read API's backend (docs/monitors.md).
            let backend = self.query_backend().and_then(|b| self.exporters.get(b));
            if !backend.is_some_and(|e| matches!(e, ExporterConfig::Embedded(_) | ExporterConfig::Elasticsearch(_))) {
                issues.push(
                    format!("monitors.{id}"),
                    "monitors keep their state in the read API's backend (query.backend): it must be an embedded or an elasticsearch exporter",
                );
            }
        }
        if let Some(proxy) = &self.api.jaeger_ui {
            proxy.validate("api.jaeger_ui", issues);
        }
        if let Some(url) = &self.api.jaeger_ui_url {
            let ok = url.parse::<http::Uri>().is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
            if !ok {
                issues.push("api.jaeger_ui_url", format!("{url:?} is not an http(s) URL (e.g. https://tracegate.shop.example/jaeger)"));
            }
        }
        if let Some(url) = &self.api.public_url {
            let ok = url.parse::<http::Uri>().is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
            if !ok {
                issues.push("api.public_url", format!("{url:?} is not an http(s) URL (e.g. https://tracegate.shop.example)"));
            }
        }
        if let Some(limiter) = &self.service.memory_limiter {
            limiter.validate("service.memory_limiter", issues);
        }
        if self.service.pipelines.is_empty() && issues.found().iter().all(|i| !i.path.starts_with("service")) {
            issues.push("service.pipelines", "no pipeline defined");
        }
        for (name, p) in &self.service.pipelines {
            let path = format!("service.pipelines.{name}");
            if p.receivers.is_empty() {
                issues.push(format!("{path}.receivers"), "a pipeline needs at least one receiver");
            }
            if p.exporters.is_empty() {
                issues.push(format!("{path}.exporters"), "a pipeline needs at least one exporter");
            }
            check_refs(&p.receivers, &self.receivers, "receiver", &format!("{path}.receivers"), issues);
            check_refs(&p.processors, &self.processors, "processor", &format!("{path}.processors"), issues);
            check_refs(&p.exporters, &self.exporters, "exporter", &format!("{path}.exporters"), issues);
        }
        // Every listener needs its own port.
        let mut seen: HashMap<u16, String> = HashMap::new();
        let mut claim = |endpoint: &str, path: String, issues: &mut Issues| {
            let Ok(addr) = endpoint.parse::<std::net::SocketAddr>() else {
                issues.push(path, listen_address_problem(endpoint));
                return;
            };
            if addr.port() == 0 {
                return;
            }
            match seen.get(&addr.port()) {
                Some(first) => issues.push(path, format!("port {} is already used by {first}", addr.port())),
                None => {
                    seen.insert(addr.port(), path);
                }
            }
        };
        for (id, r) in &self.receivers {
            match r {
                ReceiverConfig::Otlp(c) => {
                    if let Some(g) = &c.grpc {
                        claim(&g.endpoint, format!("receivers.{id}.grpc.endpoint"), issues);
                    }
                    if let Some(h) = &c.http {
                        claim(&h.endpoint, format!("receivers.{id}.http.endpoint"), issues);
                    }
                }
                // It connects out; it listens on nothing.
                ReceiverConfig::RabbitMq(_) => {}
            }
        }
        claim(&self.api.endpoint, "api.endpoint".into(), issues);

        match &self.query.backend {
            Some(id) => match self.exporters.get(id) {
                Some(ExporterConfig::Embedded(_)) => {}
                Some(ExporterConfig::Elasticsearch(c)) => {
                    if c.orders.index.is_empty() {
                        issues.push(
                            "query.backend",
                            format!("exporter {id:?} has no orders index (orders.index is empty); the order list needs it"),
                        );
                    }
                }
                Some(other) => issues.push(
                    "query.backend",
                    format!("exporter {id:?} is of type {}; the read API needs an embedded or elasticsearch exporter", other.kind()),
                ),
                None => issues.push("query.backend", format!("unknown exporter {id:?}")),
            },
            None => {
                let embedded = self.exporters.values().filter(|e| matches!(e, ExporterConfig::Embedded(_))).count();
                if embedded > 1 {
                    issues.push("query.backend", "several embedded exporters: name the one the read API uses");
                }
            }
        }
    }

    /// The exporter id that serves the read API, if any.
    pub fn query_backend(&self) -> Option<&str> {
        match &self.query.backend {
            Some(id) => Some(id.as_str()),
            None => self.exporters.iter().find(|(_, e)| matches!(e, ExporterConfig::Embedded(_))).map(|(id, _)| id.as_str()),
        }
    }

    /// A short human summary, printed by `tracegate validate`.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for (name, p) in &self.service.pipelines {
            let procs = if p.processors.is_empty() { "-".to_string() } else { p.processors.join(", ") };
            out.push_str(&format!(
                "pipeline {name}: receivers [{}] -> processors [{procs}] -> exporters [{}]\n",
                p.receivers.join(", "),
                p.exporters.iter().map(|id| format!("{id} ({})", self.exporters[id].kind())).collect::<Vec<_>>().join(", ")
            ));
        }
        for (id, r) in &self.receivers {
            if let ReceiverConfig::RabbitMq(c) = r {
                let endpoint = crate::shared::redact_url(&c.endpoint);
                out.push_str(&format!("receiver {id} (rabbitmq): queue {} on {endpoint}, as service {}\n", c.queue, c.service));
            }
        }
        out.push_str(&format!("api: {}\n", self.api.endpoint));
        if self.auth.enabled() {
            let issuers: Vec<&str> = self.auth.issuers.iter().map(|i| i.issuer.as_str()).collect();
            out.push_str(&format!("auth: JWT from {}\n", issuers.join(", ")));
        }
        for (id, m) in &self.monitors {
            let MonitorConfig::OrderSla(c) = m;
            let notify = if c.notify.is_empty() { "-".to_string() } else { c.notify.join(", ") };
            out.push_str(&format!("monitor {id} ({}): {} rules -> notify [{notify}]\n", m.kind(), c.rules.len()));
        }
        match self.query_backend() {
            Some(b) => out.push_str(&format!("read API backend: {b}\n")),
            None => out.push_str("read API backend: none (reads answer 503)\n"),
        }
        out
    }
}

fn check_refs<T>(ids: &[String], known: &BTreeMap<String, T>, what: &str, path: &str, issues: &mut Issues) {
    let mut seen = std::collections::HashSet::new();
    for (i, id) in ids.iter().enumerate() {
        // A component that is defined but failed to parse was reported already.
        if !known.contains_key(id) && !issues.reported_under(&format!("{what}s.{id}")) {
            let names: Vec<&str> = known.keys().map(String::as_str).collect();
            issues.push(
                format!("{path}[{i}]"),
                format!("unknown {what} {id:?} (defined: {})", if names.is_empty() { "none".into() } else { names.join(", ") }),
            );
        }
        if !seen.insert(id) {
            issues.push(format!("{path}[{i}]"), format!("{what} {id:?} listed twice"));
        }
    }
}

/// Reads each component of one section: the kind comes from `type`, or from the id
/// (`otlp` or `otlp/secondary` are both of type `otlp`).
fn components<T>(section: Option<BTreeMap<String, Value>>, name: &str, family: &Family<T>, issues: &mut Issues) -> BTreeMap<String, T> {
    let mut out = BTreeMap::new();
    for (id, body) in section.unwrap_or_default() {
        let path = format!("{name}.{id}");
        let mut body = match body {
            Value::Null => Value::Mapping(Mapping::new()),
            v @ Value::Mapping(_) => v,
            _ => {
                issues.push(path, "expected a mapping");
                continue;
            }
        };
        let declared = body.as_mapping_mut().and_then(|m| m.remove("type"));
        let kind = match declared {
            Some(Value::String(k)) => k,
            Some(_) => {
                issues.push(format!("{path}.type"), "expected a string");
                continue;
            }
            None => id.split('/').next().unwrap_or(&id).to_string(),
        };
        if let Some(component) = family.read(&kind, body, &path, issues) {
            out.insert(id, component);
        }
    }
    out
}

fn section<T: DeserializeOwned>(value: Option<Value>, path: &str, issues: &mut Issues) -> Option<T> {
    value.and_then(|v| if v.is_null() { None } else { typed(v, path, issues) })
}

/// The YAML parser takes time quadratic in the depth of flow collections before its own limit
/// (128 levels) refuses them: 30,000 levels of `{a: ` (150 KB) took 7 s (found by
/// tests/fuzz.rs). Text past this depth is refused before parsing.
const MAX_FLOW_NESTING: usize = 1000;

/// Where (`line L column C`) the brackets of `text` first nest deeper than `limit`. Brackets in
/// quoted scalars and comments count too: this is a guard against pathological input, and no
/// real configuration leaves hundreds of them open.
fn flow_nesting_past(text: &str, limit: usize) -> Option<String> {
    let mut depth = 0usize;
    for (number, line) in text.lines().enumerate() {
        for (column, c) in line.chars().enumerate() {
            match c {
                '[' | '{' => depth += 1,
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => continue,
            }
            if depth > limit {
                return Some(format!("line {} column {}", number + 1, column + 1));
            }
        }
    }
    None
}

/// Deserializes `value`, recording every error with its full path: after an error the offending
/// key is taken out and the rest is read again, so three typos in one section are reported at
/// once, not one per run.
pub(super) fn typed<T: DeserializeOwned>(value: Value, prefix: &str, issues: &mut Issues) -> Option<T> {
    let mut value = value;
    let mut reported: Vec<String> = Vec::new();
    // Each round removes one key; a section has far fewer keys than this.
    for _ in 0..64 {
        let error = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(v) if reported.is_empty() => return Some(v),
            Ok(_) => return None,
            Err(e) => e,
        };
        let segments: Vec<serde_path_to_error::Segment> = error.path().iter().cloned().collect();
        let inner = error.path().to_string();
        let path = match (prefix.is_empty(), inner.as_str()) {
            (true, ".") => ".".to_string(),
            (true, _) => inner,
            (false, ".") => prefix.to_string(),
            (false, _) => format!("{prefix}.{inner}"),
        };
        let message = error.into_inner().to_string();
        // A required key that was reported (and so removed) is not missing a second time.
        let consequence = message.starts_with("missing field") && reported.iter().any(|r| r.starts_with(&format!("{path}.")));
        if !consequence {
            issues.push(path.clone(), message);
        }
        reported.push(path);
        if !remove_at(&mut value, &segments) {
            return None;
        }
    }
    None
}

/// Removes the mapping entry `segments` names; false when it names no mapping entry (an
/// element of a list, or the value itself).
fn remove_at(value: &mut Value, segments: &[serde_path_to_error::Segment]) -> bool {
    use serde_path_to_error::Segment;
    let Some((last, parents)) = segments.split_last() else { return false };
    let mut current = value;
    for segment in parents {
        current = match (segment, current) {
            (Segment::Map { key }, Value::Mapping(map)) => match map.get_mut(key.as_str()) {
                Some(v) => v,
                None => return false,
            },
            (Segment::Seq { index }, Value::Sequence(items)) => match items.get_mut(*index) {
                Some(v) => v,
                None => return false,
            },
            (Segment::Enum { .. }, v) => v,
            _ => return false,
        };
    }
    match (last, current) {
        (Segment::Map { key }, Value::Mapping(map)) => map.remove(key.as_str()).is_some(),
        _ => false,
    }
}

/// A YAML syntax error in words that say what to fix: tabs and indentation are the usual causes.
fn yaml_problem(text: &str, error: &serde_yaml_ng::Error) -> String {
    let line_no = error.location().map(|l| l.line());
    let line = line_no.and_then(|n| text.lines().nth(n.saturating_sub(1))).unwrap_or("");
    let tab_indented = |l: &str| l.chars().take_while(|c| c.is_whitespace()).any(|c| c == '\t');
    if tab_indented(line) || (error.to_string().contains("cannot start any token") && line.contains('\t')) {
        return "a tab in the indentation: YAML indents with spaces only (replace the tab with spaces)".into();
    }
    if let Some(n) = text.lines().position(tab_indented).filter(|&i| line_no.is_none_or(|l| i < l)) {
        return format!("invalid YAML: {error} (line {} is indented with a tab: YAML indents with spaces only)", n + 1);
    }
    let message = error.to_string();
    let indentation = [
        "did not find expected key",
        "mapping values are not allowed",
        "did not find expected '-' indicator",
        "block sequence entries are not allowed",
    ];
    if indentation.iter().any(|m| message.contains(m)) {
        return format!(
            "invalid YAML: {message} (check the indentation of this line and the one above: a key nested under another goes two spaces deeper, keys of one section line up)"
        );
    }
    format!("invalid YAML: {message}")
}

/// Why `endpoint` is not a listen address, in words that say what to write instead.
fn listen_address_problem(endpoint: &str) -> String {
    let Some((host, port)) = endpoint.rsplit_once(':') else {
        return format!("{endpoint:?} has no port: write IP:port (e.g. 127.0.0.1:4317, or 0.0.0.0:4317 for every interface)");
    };
    match port.parse::<u64>() {
        Ok(p) if p > u64::from(u16::MAX) => return format!("{endpoint:?}: port {p} is out of range (0 to 65535)"),
        Ok(_) => {}
        Err(_) => return format!("{endpoint:?}: {port:?} is not a port number (0 to 65535)"),
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.parse::<std::net::IpAddr>().is_err() {
        return format!(
            "{endpoint:?}: {host:?} is not an IP address; listen addresses are IP:port, host names are not resolved (e.g. 127.0.0.1:4317, or 0.0.0.0:4317 for every interface)"
        );
    }
    format!("{endpoint:?} is not an IP:port address (e.g. 127.0.0.1:4317; IPv6 as [::1]:4317)")
}

/// Keys whose values are secrets wherever they appear, and any key ending in `secret`
/// (`auth.login.client_secret`); every value under `headers` is one too (exporter headers carry
/// API keys and Authorization values).
const SECRET_KEYS: [&str; 9] =
    ["secret", "checkpoint_key", "pseudonym_key", "password", "api_key", "token", "bearer_token", "private_key", "authorization"];

fn redact(value: &mut serde_json::Value, all: bool) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let k = key.to_ascii_lowercase();
                redact(v, all || k == "headers" || k.ends_with("secret") || SECRET_KEYS.contains(&k.as_str()));
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| redact(v, all)),
        other if all && !other.is_null() => *other = serde_json::Value::String("<redacted>".into()),
        // Any other value may still be a URL with a password or a token in it.
        serde_json::Value::String(text) => {
            if let std::borrow::Cow::Owned(clean) = crate::shared::redact_urls(text) {
                *text = clean;
            }
        }
        _ => {}
    }
}
