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
use crate::exporters::{DebugExporterConfig, ElasticsearchExporterConfig, EmbeddedExporterConfig, OtlpExporterConfig};
use crate::processors::{OrderEnrichConfig, OrderSamplingConfig};
use crate::receivers::OtlpReceiverConfig;

/// The configuration shipped as the default (`config/tracegate.yaml`).
pub const DEFAULT_CONFIG: &str = include_str!("../../config/tracegate.yaml");

/// Every problem found in a configuration, each with its path in the file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub issues: Vec<ConfigIssue>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
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

/// Collects issues while a configuration is read.
#[derive(Default)]
pub struct Issues(Vec<ConfigIssue>);

impl Issues {
    /// Records a problem. One mistake reads as one error: a value already reported (an
    /// unresolved `${env:...}`, say) is not reported again when it then fails to parse.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        if self.0.iter().any(|i| i.path == path) {
            return;
        }
        self.0.push(ConfigIssue { path, message: message.into() });
    }

    /// Whether anything at or below `path` was reported.
    fn reported_under(&self, path: &str) -> bool {
        self.0.iter().any(|i| i.path == path || i.path.strip_prefix(path).is_some_and(|rest| rest.starts_with('.')))
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
    api: Option<Value>,
    #[serde(default)]
    query: Option<Value>,
    #[serde(default)]
    service: Option<Value>,
}

impl Config {
    /// Reads a file; the error lists every problem.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            issues: vec![ConfigIssue { path: path.display().to_string(), message: format!("cannot read: {e}") }],
        })?;
        Config::from_yaml(&text)
    }

    /// The built-in default configuration.
    pub fn default_config() -> Config {
        // The shipped default is parsed by a unit test, so this cannot fail at run time.
        Config::from_yaml(DEFAULT_CONFIG).expect("the built-in configuration is valid")
    }

    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml_with_env(text, &|name| std::env::var(name).ok())
    }

    pub fn from_yaml_with_env(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut issues = Issues::default();
        let mut root: Value = match serde_yaml_ng::from_str(text) {
            Ok(Value::Null) => Value::Mapping(Mapping::new()),
            Ok(v) => v,
            Err(e) => {
                let at = e.location().map(|l| format!("line {} column {}", l.line(), l.column())).unwrap_or_else(|| ".".into());
                return Err(ConfigError { issues: vec![ConfigIssue { path: at, message: format!("invalid YAML: {e}") }] });
            }
        };
        for message in env::substitute(&mut root, "", lookup) {
            let (path, message) = message.split_once(": ").unwrap_or((".", &message));
            issues.push(path, message);
        }
        let raw: RawConfig = match typed(root, "", &mut issues) {
            Some(raw) => raw,
            None => return Err(ConfigError { issues: issues.0 }),
        };

        let receivers = components(raw.receivers, "receivers", &mut issues, |kind, body, path, issues| match kind {
            "otlp" => typed::<OtlpReceiverConfig>(body, path, issues).map(ReceiverConfig::Otlp),
            other => {
                issues.push(format!("{path}.type"), format!("unknown receiver type {other:?}; known: otlp"));
                None
            }
        });
        let processors = components(raw.processors, "processors", &mut issues, |kind, body, path, issues| match kind {
            "order_enrich" => typed::<OrderEnrichConfig>(body, path, issues).map(ProcessorConfig::OrderEnrich),
            "order_sampling" => typed::<OrderSamplingConfig>(body, path, issues).map(ProcessorConfig::OrderSampling),
            other => {
                issues.push(format!("{path}.type"), format!("unknown processor type {other:?}; known: order_enrich, order_sampling"));
                None
            }
        });
        let exporters = components(raw.exporters, "exporters", &mut issues, |kind, body, path, issues| match kind {
            "otlp" | "otlp_grpc" | "otlp_http" => typed::<OtlpExporterConfig>(body, path, issues).map(ExporterConfig::Otlp),
            "embedded" => typed::<EmbeddedExporterConfig>(body, path, issues).map(ExporterConfig::Embedded),
            "elasticsearch" => typed::<ElasticsearchExporterConfig>(body, path, issues).map(ExporterConfig::Elasticsearch),
            "debug" => typed::<DebugExporterConfig>(body, path, issues).map(ExporterConfig::Debug),
            other => {
                issues
                    .push(format!("{path}.type"), format!("unknown exporter type {other:?}; known: otlp, embedded, elasticsearch, debug"));
                None
            }
        });
        let api = section::<ApiConfig>(raw.api, "api", &mut issues);
        let query = section::<QueryConfig>(raw.query, "query", &mut issues);
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
            api: api.unwrap_or_default(),
            query: query.unwrap_or_default(),
            service: service.unwrap_or_default(),
        };
        config.validate(&mut issues);
        if issues.0.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { issues: issues.0 })
        }
    }

    /// The semantic checks that span sections.
    fn validate(&self, issues: &mut Issues) {
        for (id, r) in &self.receivers {
            match r {
                ReceiverConfig::Otlp(c) => c.validate(&format!("receivers.{id}"), issues),
            }
        }
        for (id, p) in &self.processors {
            let path = format!("processors.{id}");
            match p {
                ProcessorConfig::OrderEnrich(c) => c.validate(&path, issues),
                ProcessorConfig::OrderSampling(c) => c.validate(&path, issues),
            }
        }
        for (id, e) in &self.exporters {
            let path = format!("exporters.{id}");
            match e {
                ExporterConfig::Otlp(c) => c.validate(&path, issues),
                ExporterConfig::Embedded(c) => c.validate(&path, issues),
                ExporterConfig::Elasticsearch(c) => c.validate(&path, issues),
                ExporterConfig::Debug(_) => {}
            }
        }
        if self.service.pipelines.is_empty() && issues.0.iter().all(|i| !i.path.starts_with("service")) {
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
                issues.push(path, format!("{endpoint:?} is not a host:port address (e.g. 127.0.0.1:4317)"));
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
        out.push_str(&format!("api: {}\n", self.api.endpoint));
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
fn components<T>(
    section: Option<BTreeMap<String, Value>>,
    name: &str,
    issues: &mut Issues,
    build: impl Fn(&str, Value, &str, &mut Issues) -> Option<T>,
) -> BTreeMap<String, T> {
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
        if let Some(component) = build(&kind, body, &path, issues) {
            out.insert(id, component);
        }
    }
    out
}

fn section<T: DeserializeOwned>(value: Option<Value>, path: &str, issues: &mut Issues) -> Option<T> {
    value.and_then(|v| if v.is_null() { None } else { typed(v, path, issues) })
}

/// Deserializes `value`, recording the first error with its full path.
fn typed<T: DeserializeOwned>(value: Value, prefix: &str, issues: &mut Issues) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let path = match (prefix.is_empty(), inner.as_str()) {
                (true, ".") => ".".to_string(),
                (true, _) => inner,
                (false, ".") => prefix.to_string(),
                (false, _) => format!("{prefix}.{inner}"),
            };
            issues.push(path, e.into_inner().to_string());
            None
        }
    }
}
