//! Query parameters as Jaeger's query service reads them: times in microseconds (search) or
//! milliseconds (service graph), durations in Go's notation (`1.5ms`, `2s`), tags as a JSON
//! object (`tags={"order.id":"A-1001"}`) and/or repeated `tag=key:value`.

use crate::query::TraceQuery;

/// Traces a search returns when `limit` is absent or 0 (Jaeger's default).
pub const DEFAULT_LIMIT: usize = 100;
/// The most traces one search returns (Jaeger UI offers up to 1500); a larger `limit` is cut.
pub const MAX_LIMIT: usize = 1500;
/// A search without `start` looks this far back (Jaeger's default: two days).
const DEFAULT_LOOKBACK_NS: u64 = 2 * 24 * 3600 * 1_000_000_000;
/// The service graph without `lookback`: one day.
const DEFAULT_GRAPH_LOOKBACK_MS: u64 = 24 * 3600 * 1000;

/// A parameter Jaeger's query service would refuse. The client sees [`ParamError::message`]:
/// Jaeger's own text (Jaeger UI shows it as it comes), the cause after the parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("parameter '{0}' is required")]
    Required(&'static str),
    /// Not an integer (`start`, `end`, `endTs`, `lookback`).
    #[error("unable to parse param '{name}'")]
    Integer {
        name: String,
        #[source]
        source: std::num::ParseIntError,
    },
    /// Not a Go duration (`minDuration`, `maxDuration`).
    #[error("unable to parse param '{name}'")]
    Duration {
        name: String,
        #[source]
        source: DurationError,
    },
    /// A limit or lookback below 0.
    #[error("unable to parse param '{name}': a {what} is not negative")]
    Negative { name: String, what: &'static str },
    /// `limit` as Go's `strconv.ParseInt` refuses it (Jaeger passes Go's message on).
    #[error("strconv.ParseInt: parsing {text:?}: {}", if *.out_of_range { "value out of range" } else { "invalid syntax" })]
    GoInteger { text: String, out_of_range: bool },
    #[error("'maxDuration' should be greater than 'minDuration'")]
    DurationOrder,
    #[error("malformed '{key}' parameter, expecting key:value, received: {tag}")]
    Tag { key: String, tag: String },
    #[error("malformed '{key}' parameter, cannot unmarshal JSON")]
    TagsJson {
        key: String,
        #[source]
        source: JsonError,
    },
    #[error("malformed '{key}' parameter: the value of {name:?} is {value}, not a string")]
    TagNotText { key: String, name: String, value: String },
}

impl ParamError {
    /// What the client is told: the error and its cause.
    pub fn message(&self) -> String {
        crate::shared::error_chain(self)
    }
}

/// `serde_json::Error` is neither `Clone` nor `PartialEq`; its text is what the client sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JsonError(String);

/// Why a text is not a Go duration, in Go's words (`time.ParseDuration`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("time: invalid duration {0:?}")]
    Invalid(String),
    #[error("time: missing unit in duration {0:?}")]
    MissingUnit(String),
    #[error("time: unknown unit {unit:?} in duration {text:?}")]
    UnknownUnit { unit: String, text: String },
}

/// The query string, every occurrence of every key, in order.
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// The first non-empty value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, v)| k == key && !v.is_empty()).map(|(_, v)| v.as_str())
    }

    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Go's `time.ParseDuration`, in nanoseconds (negative durations are refused).
pub fn parse_go_duration(text: &str) -> Result<u64, DurationError> {
    let bad = || DurationError::Invalid(text.to_string());
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() || rest.starts_with('-') {
        return Err(bad());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let number_end =
            rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(|| DurationError::MissingUnit(text.to_string()))?;
        let number: f64 = rest[..number_end].parse().map_err(|_| bad())?;
        rest = &rest[number_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            other => return Err(DurationError::UnknownUnit { unit: other.to_string(), text: text.to_string() }),
        };
        rest = &rest[unit_end..];
        total += number * unit;
    }
    if total > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(total.round() as u64)
}

/// Go's `strconv.ParseInt` error.
fn go_parse_int_error(text: &str, error: &std::num::ParseIntError) -> ParamError {
    use std::num::IntErrorKind::{NegOverflow, PosOverflow};
    ParamError::GoInteger { text: text.to_string(), out_of_range: matches!(error.kind(), PosOverflow | NegOverflow) }
}

fn integer(params: &Params, name: &str) -> Result<Option<i64>, ParamError> {
    params.get(name).map(|v| v.parse::<i64>().map_err(|source| ParamError::Integer { name: name.to_string(), source })).transpose()
}

/// Microseconds or milliseconds since the epoch, in nanoseconds (clamped at 0).
fn epoch_ns(value: i64, unit_ns: u64) -> u64 {
    u64::try_from(value).unwrap_or(0).saturating_mul(unit_ns)
}

/// The tags of a search: `tag=key:value` (repeated) and `tags={json}`, later ones winning.
pub fn tags(params: &Params, tag_key: &str, json_key: &str) -> Result<Vec<(String, String)>, ParamError> {
    let mut tags: Vec<(String, String)> = Vec::new();
    let mut put = |key: String, value: String| match tags.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = value,
        None => tags.push((key, value)),
    };
    for tag in params.all(tag_key) {
        let Some((key, value)) = tag.split_once(':') else {
            return Err(ParamError::Tag { key: tag_key.to_string(), tag: tag.to_string() });
        };
        put(key.to_string(), value.to_string());
    }
    for json in params.all(json_key).filter(|j| !j.is_empty()) {
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(json).map_err(|e| ParamError::TagsJson { key: json_key.to_string(), source: JsonError(e.to_string()) })?;
        for (key, value) in object {
            match value {
                serde_json::Value::String(s) => put(key, s),
                other => return Err(ParamError::TagNotText { key: json_key.to_string(), name: key, value: other.to_string() }),
            }
        }
    }
    Ok(tags)
}

/// `limit`: absent or 0 is [`DEFAULT_LIMIT`]; more than [`MAX_LIMIT`] is cut to it.
pub fn limit(value: Option<&str>, name: &str) -> Result<usize, ParamError> {
    match value {
        None => Ok(DEFAULT_LIMIT),
        // Jaeger passes Go's own message on.
        Some(text) => match text.parse::<i64>().map_err(|e| go_parse_int_error(text, &e))? {
            0 => Ok(DEFAULT_LIMIT),
            n if n < 0 => Err(ParamError::Negative { name: name.to_string(), what: "limit" }),
            n => Ok(usize::try_from(n).unwrap_or(MAX_LIMIT).min(MAX_LIMIT)),
        },
    }
}

/// `/api/traces`: `service` (required), `operation`, `tags`/`tag`, `start`/`end` (µs),
/// `minDuration`/`maxDuration`, `limit`. `lookback` is the UI's own and is ignored, as Jaeger does.
pub fn trace_query(params: &Params, now_ns: u64) -> Result<TraceQuery, ParamError> {
    let service = params.get("service").ok_or(ParamError::Required("service"))?.to_string();
    let start_min_ns = integer(params, "start")?.map(|us| epoch_ns(us, 1_000)).unwrap_or(now_ns.saturating_sub(DEFAULT_LOOKBACK_NS));
    let start_max_ns = integer(params, "end")?.map(|us| epoch_ns(us, 1_000)).unwrap_or(now_ns);
    let duration = |name: &str| {
        params.get(name).map(|d| parse_go_duration(d).map_err(|source| ParamError::Duration { name: name.to_string(), source })).transpose()
    };
    let (duration_min_ns, duration_max_ns) = (duration("minDuration")?, duration("maxDuration")?);
    if let (Some(min), Some(max)) = (duration_min_ns, duration_max_ns) {
        if max < min {
            return Err(ParamError::DurationOrder);
        }
    }
    Ok(TraceQuery {
        service: Some(service),
        operation: params.get("operation").map(String::from),
        tags: tags(params, "tag", "tags")?,
        start_min_ns,
        start_max_ns,
        duration_min_ns,
        duration_max_ns,
        limit: limit(params.get("limit"), "limit")?,
    })
}

/// `/api/dependencies`: `endTs` (ms, default now) and `lookback` (ms, default a day), as a
/// window in nanoseconds.
pub fn graph_window(params: &Params, now_ns: u64) -> Result<(u64, u64), ParamError> {
    let end = integer(params, "endTs")?.map(|ms| epoch_ns(ms, 1_000_000)).unwrap_or(now_ns);
    let lookback_ms = match integer(params, "lookback")? {
        Some(ms) if ms < 0 => return Err(ParamError::Negative { name: "lookback".into(), what: "lookback" }),
        Some(ms) => ms as u64,
        None => DEFAULT_GRAPH_LOOKBACK_MS,
    };
    Ok((end.saturating_sub(lookback_ms.saturating_mul(1_000_000)), end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn durations_read_as_go_reads_them() {
        assert_eq!(parse_go_duration("1.5ms"), Ok(1_500_000));
        assert_eq!(parse_go_duration("100us"), Ok(100_000));
        assert_eq!(parse_go_duration("100µs"), Ok(100_000));
        assert_eq!(parse_go_duration("1h2m3s"), Ok(3_723_000_000_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("5").unwrap_err().to_string(), r#"time: missing unit in duration "5""#);
        assert_eq!(parse_go_duration("5d").unwrap_err().to_string(), r#"time: unknown unit "d" in duration "5d""#);
        assert!(parse_go_duration("-1s").is_err());
    }

    #[test]
    fn a_search_reads_every_parameter() {
        let q = trace_query(
            &params(&[
                ("service", "shop-api"),
                ("operation", "POST /orders"),
                ("tags", r#"{"order.id":"A-1001","http.route":"/orders"}"#),
                ("tag", "order.stage:created"),
                ("tag", "url:http://x:1"),
                ("start", "1000"),
                ("end", "2000"),
                ("minDuration", "1ms"),
                ("maxDuration", "1s"),
                ("limit", "20"),
                ("lookback", "1h"),
            ]),
            5_000_000,
        )
        .unwrap();
        assert_eq!(q.service.as_deref(), Some("shop-api"));
        assert_eq!(q.operation.as_deref(), Some("POST /orders"));
        let tags: Vec<(&str, &str)> = q.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(tags, [("order.stage", "created"), ("url", "http://x:1"), ("http.route", "/orders"), ("order.id", "A-1001")]);
        assert_eq!((q.start_min_ns, q.start_max_ns), (1_000_000, 2_000_000));
        assert_eq!((q.duration_min_ns, q.duration_max_ns), (Some(1_000_000), Some(1_000_000_000)));
        assert_eq!(q.limit, 20);
    }

    #[test]
    fn defaults_limits_and_refusals() {
        let now = 10 * DEFAULT_LOOKBACK_NS;
        let q = trace_query(&params(&[("service", "a")]), now).unwrap();
        assert_eq!((q.start_min_ns, q.start_max_ns, q.limit), (now - DEFAULT_LOOKBACK_NS, now, DEFAULT_LIMIT));
        assert_eq!(trace_query(&params(&[("service", "a"), ("limit", "99999")]), now).unwrap().limit, MAX_LIMIT);
        let refusal = |pairs: &[(&str, &str)]| trace_query(&params(pairs), now).unwrap_err().message();
        assert_eq!(refusal(&[]), "parameter 'service' is required");
        assert!(
            refusal(&[("service", "a"), ("tags", "notjson")]).starts_with("malformed 'tags' parameter, cannot unmarshal JSON: expected")
        );
        assert!(refusal(&[("service", "a"), ("tag", "nocolon")]).starts_with("malformed 'tag' parameter"));
        assert_eq!(refusal(&[("service", "a"), ("limit", "abc")]), r#"strconv.ParseInt: parsing "abc": invalid syntax"#);
        assert_eq!(refusal(&[("service", "a"), ("limit", "-1")]), "unable to parse param 'limit': a limit is not negative");
        assert_eq!(refusal(&[("service", "a"), ("start", "x")]), "unable to parse param 'start': invalid digit found in string");
        assert_eq!(
            refusal(&[("service", "a"), ("minDuration", "5d")]),
            r#"unable to parse param 'minDuration': time: unknown unit "d" in duration "5d""#
        );
        assert!(trace_query(&params(&[("service", "a"), ("minDuration", "2s"), ("maxDuration", "1s")]), now).is_err());
        assert_eq!(graph_window(&params(&[("endTs", "5000"), ("lookback", "1000")]), now).unwrap(), (4_000_000_000, 5_000_000_000));
    }
}
