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
pub fn parse_go_duration(text: &str) -> Result<u64, String> {
    let bad = || format!("time: invalid duration {text:?}");
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
            rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(|| format!("time: missing unit in duration {text:?}"))?;
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
            other => return Err(format!("time: unknown unit {other:?} in duration {text:?}")),
        };
        rest = &rest[unit_end..];
        total += number * unit;
    }
    if total > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(total.round() as u64)
}

fn parse_error(param: &str, error: impl std::fmt::Display) -> String {
    format!("unable to parse param '{param}': {error}")
}

/// Go's `strconv.ParseInt` error text.
fn go_parse_int_error(text: &str, error: &std::num::ParseIntError) -> String {
    use std::num::IntErrorKind::{NegOverflow, PosOverflow};
    let why = if matches!(error.kind(), PosOverflow | NegOverflow) { "value out of range" } else { "invalid syntax" };
    format!("strconv.ParseInt: parsing {text:?}: {why}")
}

fn integer(params: &Params, name: &str) -> Result<Option<i64>, String> {
    params.get(name).map(|v| v.parse::<i64>().map_err(|e| parse_error(name, e))).transpose()
}

/// Microseconds or milliseconds since the epoch, in nanoseconds (clamped at 0).
fn epoch_ns(value: i64, unit_ns: u64) -> u64 {
    u64::try_from(value).unwrap_or(0).saturating_mul(unit_ns)
}

/// The tags of a search: `tag=key:value` (repeated) and `tags={json}`, later ones winning.
pub fn tags(params: &Params, tag_key: &str, json_key: &str) -> Result<Vec<(String, String)>, String> {
    let mut tags: Vec<(String, String)> = Vec::new();
    let mut put = |key: String, value: String| match tags.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = value,
        None => tags.push((key, value)),
    };
    for tag in params.all(tag_key) {
        let Some((key, value)) = tag.split_once(':') else {
            return Err(format!("malformed '{tag_key}' parameter, expecting key:value, received: {tag}"));
        };
        put(key.to_string(), value.to_string());
    }
    for json in params.all(json_key).filter(|j| !j.is_empty()) {
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(json).map_err(|e| format!("malformed '{json_key}' parameter, cannot unmarshal JSON: {e}"))?;
        for (key, value) in object {
            match value {
                serde_json::Value::String(s) => put(key, s),
                other => return Err(format!("malformed '{json_key}' parameter: the value of {key:?} is {other}, not a string")),
            }
        }
    }
    Ok(tags)
}

/// `limit`: absent or 0 is [`DEFAULT_LIMIT`]; more than [`MAX_LIMIT`] is cut to it.
pub fn limit(value: Option<&str>, name: &str) -> Result<usize, String> {
    match value {
        None => Ok(DEFAULT_LIMIT),
        // Jaeger passes Go's own message on.
        Some(text) => match text.parse::<i64>().map_err(|e| go_parse_int_error(text, &e))? {
            0 => Ok(DEFAULT_LIMIT),
            n if n < 0 => Err(parse_error(name, "a limit is not negative")),
            n => Ok(usize::try_from(n).unwrap_or(MAX_LIMIT).min(MAX_LIMIT)),
        },
    }
}

/// `/api/traces`: `service` (required), `operation`, `tags`/`tag`, `start`/`end` (µs),
/// `minDuration`/`maxDuration`, `limit`. `lookback` is the UI's own and is ignored, as Jaeger does.
pub fn trace_query(params: &Params, now_ns: u64) -> Result<TraceQuery, String> {
    let service = params.get("service").ok_or("parameter 'service' is required")?.to_string();
    let start_min_ns = integer(params, "start")?.map(|us| epoch_ns(us, 1_000)).unwrap_or(now_ns.saturating_sub(DEFAULT_LOOKBACK_NS));
    let start_max_ns = integer(params, "end")?.map(|us| epoch_ns(us, 1_000)).unwrap_or(now_ns);
    let duration = |name: &str| params.get(name).map(|d| parse_go_duration(d).map_err(|e| parse_error(name, e))).transpose();
    let (duration_min_ns, duration_max_ns) = (duration("minDuration")?, duration("maxDuration")?);
    if let (Some(min), Some(max)) = (duration_min_ns, duration_max_ns) {
        if max < min {
            return Err("'maxDuration' should be greater than 'minDuration'".into());
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
pub fn graph_window(params: &Params, now_ns: u64) -> Result<(u64, u64), String> {
    let end = integer(params, "endTs")?.map(|ms| epoch_ns(ms, 1_000_000)).unwrap_or(now_ns);
    let lookback_ms = match integer(params, "lookback")? {
        Some(ms) if ms < 0 => return Err(parse_error("lookback", "a lookback is not negative")),
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
        assert!(parse_go_duration("5").unwrap_err().contains("missing unit"));
        assert!(parse_go_duration("5d").unwrap_err().contains("unknown unit"));
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
        assert_eq!(trace_query(&params(&[]), now).unwrap_err(), "parameter 'service' is required");
        assert!(trace_query(&params(&[("service", "a"), ("tags", "notjson")]), now).unwrap_err().starts_with("malformed 'tags' parameter"));
        assert!(trace_query(&params(&[("service", "a"), ("tag", "nocolon")]), now).unwrap_err().starts_with("malformed 'tag' parameter"));
        assert_eq!(
            trace_query(&params(&[("service", "a"), ("limit", "abc")]), now).unwrap_err(),
            r#"strconv.ParseInt: parsing "abc": invalid syntax"#
        );
        assert!(trace_query(&params(&[("service", "a"), ("minDuration", "2s"), ("maxDuration", "1s")]), now).is_err());
        assert_eq!(graph_window(&params(&[("endTs", "5000"), ("lookback", "1000")]), now).unwrap(), (4_000_000_000, 5_000_000_000));
    }
}
