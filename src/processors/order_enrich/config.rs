//! Configuration of the `order_enrich` processor. Every list has the defaults of DESIGN.md §2.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::shared::{ByteSize, Issues};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrderEnrichConfig {
    /// Attribute keys that hold an order id, looked up on the span, then on its resource.
    pub order_id_keys: Vec<String>,
    /// Regexes with a named group `order_id`, tried on the values of their attributes.
    pub order_id_patterns: Vec<PatternConfig>,
    /// Attribute keys that hold an order status.
    pub status_keys: Vec<String>,
    /// Attribute keys whose values join spans to an order (constructor files).
    pub correlation_keys: Vec<String>,
    /// Attribute keys that name the user who triggered the processing.
    pub enduser_keys: Vec<String>,
    /// How long spans of a trace whose order is unknown wait for it; `0s` never waits.
    #[serde(with = "humantime_serde")]
    pub wait: Duration,
    /// At most this many spans wait at once; beyond it spans go on untagged (counted).
    pub max_buffered_spans: usize,
    /// Either setting may be given alone; the other keeps its default.
    #[serde(deserialize_with = "trace_cache")]
    pub trace_cache: CacheConfig,
    #[serde(deserialize_with = "correlation_cache")]
    pub correlation_cache: CacheConfig,
    /// Spans that carry a correlation value and no order, kept on disk until an order claims
    /// the value. Absent: such spans go on untagged after `wait`, like any other.
    pub correlation_hold: Option<CorrelationHoldConfig>,
    /// Stage rules, tried in order; the first match names the stage (a `status_change` rule yields
    /// to a later match). The status comes from `status_keys` whatever the stage. Absent: the
    /// default rules.
    pub rules: Option<Vec<RuleConfig>>,
}

/// The correlation hold: one SQLite file per pipeline in `directory`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CorrelationHoldConfig {
    pub directory: std::path::PathBuf,
    /// How long a span waits for an order to claim its value; then it is dropped (counted).
    #[serde(with = "humantime_serde", default = "CorrelationHoldConfig::default_ttl")]
    pub ttl: Duration,
    /// The most the held spans may take on disk; beyond it spans go on untagged (counted).
    #[serde(default = "CorrelationHoldConfig::default_max_bytes")]
    pub max_bytes: ByteSize,
}

impl CorrelationHoldConfig {
    fn default_ttl() -> Duration {
        Duration::from_secs(24 * 3600)
    }

    fn default_max_bytes() -> ByteSize {
        ByteSize::mib(256)
    }

    /// The file of one pipeline's hold.
    pub fn file(&self, pipeline: &str) -> std::path::PathBuf {
        let safe: String = pipeline.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
        self.directory.join(format!("correlation-hold-{safe}.sqlite"))
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PatternConfig {
    pub attributes: Vec<String>,
    pub regex: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    pub max_entries: usize,
}

/// A cache's settings as written: each one may be left out.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheSettings {
    #[serde(default, with = "humantime_serde")]
    ttl: Option<Duration>,
    max_entries: Option<usize>,
}

impl CacheSettings {
    fn or(self, default: CacheConfig) -> CacheConfig {
        CacheConfig { ttl: self.ttl.unwrap_or(default.ttl), max_entries: self.max_entries.unwrap_or(default.max_entries) }
    }
}

fn trace_cache<'de, D: serde::Deserializer<'de>>(d: D) -> Result<CacheConfig, D::Error> {
    Ok(CacheSettings::deserialize(d)?.or(OrderEnrichConfig::default().trace_cache))
}

fn correlation_cache<'de, D: serde::Deserializer<'de>>(d: D) -> Result<CacheConfig, D::Error> {
    Ok(CacheSettings::deserialize(d)?.or(OrderEnrichConfig::default().correlation_cache))
}

/// One rule: when every condition in `match` holds, `set` the stage (and status).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    #[serde(rename = "match", default)]
    pub when: MatchConfig,
    pub set: SetConfig,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatchConfig {
    /// Regex on the span name.
    pub span_name: Option<String>,
    /// Any of: server, client, producer, consumer, internal.
    pub kind: Vec<SpanKindName>,
    /// Regex on the resource's `service.name`.
    pub service: Option<String>,
    /// Every condition must hold.
    pub attributes: Vec<AttributeCondition>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SpanKindName {
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl SpanKindName {
    pub fn otlp(self) -> i32 {
        match self {
            SpanKindName::Internal => 1,
            SpanKindName::Server => 2,
            SpanKindName::Client => 3,
            SpanKindName::Producer => 4,
            SpanKindName::Consumer => 5,
        }
    }
}

/// A test on the first of `keys` present on the span (then its resource). With no test, the
/// key must exist.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttributeCondition {
    pub key: Option<String>,
    pub keys: Vec<String>,
    pub equals: Option<String>,
    pub regex: Option<String>,
    /// `false` requires every key to be absent.
    pub exists: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SetConfig {
    pub stage: String,
    #[serde(default)]
    pub status: Option<StatusConfig>,
}

/// The status: the first of `from_attributes` present, else `value`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatusConfig {
    pub from_attributes: Vec<String>,
    pub value: Option<String>,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

impl Default for OrderEnrichConfig {
    fn default() -> Self {
        OrderEnrichConfig {
            order_id_keys: strings(&["order.id", "order_id", "orderId", "app.order.id"]),
            order_id_patterns: vec![PatternConfig {
                attributes: strings(&["url.path", "http.target", "http.route", "url.full", "http.url"]),
                regex: r"/orders/(?<order_id>[A-Za-z0-9][A-Za-z0-9._~-]*)".into(),
            }],
            status_keys: strings(&["order.status", "order.new_status"]),
            correlation_keys: strings(&["constructor.file_id", "file.id"]),
            enduser_keys: strings(&["enduser.id"]),
            wait: Duration::from_secs(5),
            max_buffered_spans: 100_000,
            trace_cache: CacheConfig { ttl: Duration::from_secs(3600), max_entries: 500_000 },
            correlation_cache: CacheConfig { ttl: Duration::from_secs(24 * 3600), max_entries: 200_000 },
            correlation_hold: None,
            rules: None,
        }
    }
}

fn cond(keys: &[&str]) -> AttributeCondition {
    AttributeCondition { keys: strings(keys), ..Default::default() }
}

fn cond_regex(keys: &[&str], regex: &str) -> AttributeCondition {
    AttributeCondition { keys: strings(keys), regex: Some(regex.into()), ..Default::default() }
}

fn rule(name: &str, when: MatchConfig, stage: &str, status: Option<StatusConfig>) -> RuleConfig {
    RuleConfig { name: name.into(), when, set: SetConfig { stage: stage.into(), status } }
}

/// A database operation or statement that writes.
pub const DB_WRITE: &str = r"(?is)^\s*(?:(?:/\*.*?\*/|--[^\n]*)\s*)*(?:(?:insert|update|upsert|delete|merge|replace|save|create|put|set|bulk)|with\s.*?\b(?:insert|update|delete|merge)\b)";

/// The rules that implement DESIGN.md §2, in order. `status-change` comes last: a span that
/// records a status and a step of its own (a consume span that sets the new status) is that step.
pub fn default_rules(status_keys: &[String]) -> Vec<RuleConfig> {
    let from_status =
        |fallback: Option<&str>| Some(StatusConfig { from_attributes: status_keys.to_vec(), value: fallback.map(str::to_string) });
    let messaging = ["messaging.system"];
    vec![
        rule(
            "order-created",
            MatchConfig {
                kind: vec![SpanKindName::Server],
                attributes: vec![
                    cond_regex(&["http.request.method", "http.method"], "^POST$"),
                    // The concrete path first: some servers put their context path in `http.route`
                    // (the JDK server's `/orders/` for `/orders/{id}/status`).
                    cond_regex(&["url.path", "http.target", "http.route"], r"^/(api/)?(v\d+/)?orders/?(\?.*)?$"),
                ],
                ..Default::default()
            },
            "created",
            from_status(Some("new")),
        ),
        rule(
            "bus-publish",
            MatchConfig { kind: vec![SpanKindName::Producer], attributes: vec![cond(&messaging)], ..Default::default() },
            "bus_publish",
            None,
        ),
        rule(
            "bus-publish-operation",
            MatchConfig {
                attributes: vec![
                    cond(&messaging),
                    cond_regex(&["messaging.operation.type", "messaging.operation"], "^(publish|send|create)$"),
                ],
                ..Default::default()
            },
            "bus_publish",
            None,
        ),
        rule(
            "bus-consume",
            MatchConfig { kind: vec![SpanKindName::Consumer], attributes: vec![cond(&messaging)], ..Default::default() },
            "bus_consume",
            None,
        ),
        rule(
            "bus-consume-operation",
            MatchConfig {
                attributes: vec![
                    cond(&messaging),
                    cond_regex(&["messaging.operation.type", "messaging.operation"], "^(process|receive|deliver)$"),
                ],
                ..Default::default()
            },
            "bus_consume",
            None,
        ),
        rule(
            "db-save",
            MatchConfig {
                attributes: vec![
                    cond(&["db.system", "db.system.name"]),
                    // The statement first (it says the most), then the operation; SQL may open
                    // with comments, and a `WITH ...` may end in a write.
                    cond_regex(&["db.query.text", "db.statement", "db.operation.name", "db.operation"], DB_WRITE),
                ],
                ..Default::default()
            },
            "db_save",
            None,
        ),
        rule(
            "file-link",
            MatchConfig { attributes: vec![cond(&["constructor.file_id", "file.id"])], ..Default::default() },
            "file_link",
            None,
        ),
        rule(
            "status-change",
            MatchConfig { attributes: vec![cond(&status_keys.iter().map(String::as_str).collect::<Vec<_>>())], ..Default::default() },
            "status_change",
            from_status(None),
        ),
    ]
}

/// The longest `wait`, and the longest time-to-live of a cache or of the correlation hold: far
/// beyond any use, and far from where a time that far ahead stops being representable.
const MAX_WAIT: Duration = Duration::from_secs(3600);
const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

impl OrderEnrichConfig {
    pub fn validate(&self, path: &str, issues: &mut Issues) {
        if self.order_id_keys.is_empty() && self.order_id_patterns.is_empty() {
            issues.push(format!("{path}.order_id_keys"), "no way to find an order id: give order_id_keys or order_id_patterns");
        }
        for (i, p) in self.order_id_patterns.iter().enumerate() {
            match regex::Regex::new(&p.regex) {
                Ok(re) if re.capture_names().flatten().any(|n| n == "order_id") => {}
                Ok(_) => issues.push(format!("{path}.order_id_patterns[{i}].regex"), "needs a named group (?<order_id>...)"),
                Err(e) => issues.push(format!("{path}.order_id_patterns[{i}].regex"), format!("invalid regex: {e}")),
            }
            if p.attributes.is_empty() {
                issues.push(format!("{path}.order_id_patterns[{i}].attributes"), "name at least one attribute");
            }
        }
        if self.max_buffered_spans == 0 && !self.wait.is_zero() {
            issues.push(format!("{path}.max_buffered_spans"), "must be at least 1 when wait is set");
        }
        if self.wait > MAX_WAIT {
            issues.push(
                format!("{path}.wait"),
                "must be at most 1h (spans wait in memory; an order found later is tagged by the query side)",
            );
        }
        for (name, c) in [("trace_cache", &self.trace_cache), ("correlation_cache", &self.correlation_cache)] {
            if c.max_entries == 0 {
                issues.push(format!("{path}.{name}.max_entries"), "must be at least 1");
            }
            if c.ttl.is_zero() {
                issues.push(format!("{path}.{name}.ttl"), "must be greater than 0");
            }
            if c.ttl > MAX_TTL {
                issues.push(format!("{path}.{name}.ttl"), "must be at most 365d");
            }
        }
        if let Some(hold) = &self.correlation_hold {
            if hold.directory.as_os_str().is_empty() {
                issues.push(format!("{path}.correlation_hold.directory"), "must not be empty");
            }
            if hold.ttl.is_zero() {
                issues.push(format!("{path}.correlation_hold.ttl"), "must be greater than 0");
            }
            if hold.ttl > MAX_TTL {
                issues.push(format!("{path}.correlation_hold.ttl"), "must be at most 365d");
            }
            if hold.max_bytes.0 < 64 * 1024 {
                issues.push(format!("{path}.correlation_hold.max_bytes"), "must be at least 64KiB");
            }
            if self.correlation_keys.is_empty() {
                issues.push(format!("{path}.correlation_hold"), "holds spans by correlation value: give correlation_keys");
            }
        }
        if let Some(rules) = &self.rules {
            for (i, r) in rules.iter().enumerate() {
                let rp = format!("{path}.rules[{i}]");
                if r.set.stage.trim().is_empty() {
                    issues.push(format!("{rp}.set.stage"), "must not be empty");
                }
                for (label, re) in [("span_name", &r.when.span_name), ("service", &r.when.service)] {
                    if let Some(re) = re {
                        if let Err(e) = regex::Regex::new(re) {
                            issues.push(format!("{rp}.match.{label}"), format!("invalid regex: {e}"));
                        }
                    }
                }
                for (j, c) in r.when.attributes.iter().enumerate() {
                    let cp = format!("{rp}.match.attributes[{j}]");
                    if c.key.is_none() && c.keys.is_empty() {
                        issues.push(cp.clone(), "name the attribute: key or keys");
                    }
                    if [c.equals.is_some(), c.regex.is_some(), c.exists.is_some()].iter().filter(|b| **b).count() > 1 {
                        issues.push(cp.clone(), "use one of equals, regex, exists");
                    }
                    if let Some(re) = &c.regex {
                        if let Err(e) = regex::Regex::new(re) {
                            issues.push(format!("{cp}.regex"), format!("invalid regex: {e}"));
                        }
                    }
                }
            }
        }
    }
}
