//! Metric families a component renders itself, beside the `prometheus_client` registry (the
//! `span_metrics` processor: series limits and exemplars that the registry's families do not
//! offer), and the two expositions `/metrics` negotiates: Prometheus text 0.0.4 and
//! OpenMetrics 1.0 (exemplars only there).

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The content type of the OpenMetrics exposition.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the Prometheus text exposition.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Families a component renders itself.
pub trait MetricSection: Send + Sync {
    /// Appends its families; `openmetrics`: OpenMetrics 1.0 (counter families named without
    /// `_total`, exemplars allowed), otherwise Prometheus text 0.0.4.
    fn encode(&self, out: &mut String, openmetrics: bool);
    /// The section itself, for its owner to find it again after a configuration reload.
    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

/// The sections of a process, by key.
#[derive(Default)]
pub struct Sections(Mutex<BTreeMap<String, Arc<dyn MetricSection>>>);

impl Sections {
    pub fn get(&self, key: &str) -> Option<Arc<dyn MetricSection>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }

    /// Puts `section` under `key`, replacing the one there.
    pub fn set(&self, key: &str, section: Arc<dyn MetricSection>) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(key.to_string(), section);
    }

    pub fn encode(&self, out: &mut String, openmetrics: bool) {
        let sections: Vec<Arc<dyn MetricSection>> = self.0.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        for s in sections {
            s.encode(out, openmetrics);
        }
    }
}

/// Whether an `Accept` header asks for OpenMetrics (what Prometheus sends first).
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|part| {
            let mut params = part.split(';');
            let media = params.next().unwrap_or("").trim();
            let refused = params.any(|p| p.trim().replace(' ', "") == "q=0");
            media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        })
    })
}

/// The registry's OpenMetrics text as Prometheus text 0.0.4: a counter family is named after its
/// `_total` samples (as `promtool check metrics` expects), and there is no `# EOF`.
pub fn openmetrics_to_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .filter(|name| !name.ends_with("_total"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 64);
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let meta = line.strip_prefix("# HELP ").or_else(|| line.strip_prefix("# TYPE "));
        if let Some(rest) = meta {
            let name = rest.split(' ').next().unwrap_or("");
            if counters.contains(name) {
                out.push_str(&line[..7]);
                out.push_str(name);
                out.push_str("_total");
                out.push_str(&rest[name.len()..]);
                out.push('\n');
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_asks_for_openmetrics_and_curl_does_not() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_openmetrics(Some(prometheus)));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
        assert!(!wants_openmetrics(Some("application/openmetrics-text;q=0, text/plain")));
    }

    #[test]
    fn counter_families_take_their_samples_name_in_the_text_format() {
        let om = "# HELP a_spans Spans.\n# TYPE a_spans counter\na_spans_total{x=\"1\"} 3\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n# EOF\n";
        assert_eq!(
            openmetrics_to_text(om),
            "# HELP a_spans_total Spans.\n# TYPE a_spans_total counter\na_spans_total{x=\"1\"} 3\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n"
        );
    }
}
