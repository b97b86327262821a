//! Stage rules, compiled: the first rule whose every condition holds sets `order.stage` and,
//! when it says so, `order.status`.

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use regex::Regex;

use super::config::{AttributeCondition, RuleConfig, StatusConfig};
use crate::processors::attrs;

pub struct Rule {
    pub name: String,
    span_name: Option<Regex>,
    kinds: Vec<i32>,
    service: Option<Regex>,
    conditions: Vec<Condition>,
    stage: String,
    status: Option<StatusConfig>,
}

struct Condition {
    keys: Vec<String>,
    test: Test,
}

enum Test {
    Exists,
    Absent,
    Equals(String),
    Matches(Regex),
}

/// What a matching rule decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The rule that matched.
    pub rule: String,
    pub stage: String,
    pub status: Option<String>,
}

/// Compiles rules; the configuration was validated, so the regexes compile.
pub fn compile(rules: &[RuleConfig]) -> Result<Vec<Rule>, regex::Error> {
    rules
        .iter()
        .map(|r| {
            Ok(Rule {
                name: r.name.clone(),
                span_name: r.when.span_name.as_deref().map(Regex::new).transpose()?,
                kinds: r.when.kind.iter().map(|k| k.otlp()).collect(),
                service: r.when.service.as_deref().map(Regex::new).transpose()?,
                conditions: r.when.attributes.iter().map(condition).collect::<Result<_, _>>()?,
                stage: r.set.stage.clone(),
                status: r.set.status.clone(),
            })
        })
        .collect()
}

fn condition(c: &AttributeCondition) -> Result<Condition, regex::Error> {
    let mut keys = c.keys.clone();
    if let Some(k) = &c.key {
        keys.insert(0, k.clone());
    }
    let test = match (&c.equals, &c.regex, c.exists) {
        (Some(v), _, _) => Test::Equals(v.clone()),
        (_, Some(re), _) => Test::Matches(Regex::new(re)?),
        (_, _, Some(false)) => Test::Absent,
        _ => Test::Exists,
    };
    Ok(Condition { keys, test })
}

/// The first of `keys` present on the span, else on the resource.
fn lookup<'a>(keys: &[String], span: &'a [KeyValue], resource: &'a [KeyValue]) -> Option<std::borrow::Cow<'a, str>> {
    keys.iter().find_map(|k| attrs::get(span, k)).or_else(|| keys.iter().find_map(|k| attrs::get(resource, k)))
}

impl Rule {
    fn matches(&self, span: &Span, resource: &[KeyValue], service: &str) -> bool {
        if !self.kinds.is_empty() && !self.kinds.contains(&span.kind) {
            return false;
        }
        if self.span_name.as_ref().is_some_and(|re| !re.is_match(&span.name)) {
            return false;
        }
        if self.service.as_ref().is_some_and(|re| !re.is_match(service)) {
            return false;
        }
        self.conditions.iter().all(|c| {
            let present = c.keys.iter().any(|k| attrs::has(&span.attributes, k) || attrs::has(resource, k));
            match &c.test {
                Test::Exists => present,
                Test::Absent => !present,
                Test::Equals(v) => lookup(&c.keys, &span.attributes, resource).is_some_and(|x| x == v.as_str()),
                Test::Matches(re) => lookup(&c.keys, &span.attributes, resource).is_some_and(|x| re.is_match(&x)),
            }
        })
    }
}

/// The step the first matching rule names.
pub fn classify(rules: &[Rule], span: &Span, resource: &[KeyValue], service: &str) -> Option<Step> {
    let rule = rules.iter().find(|r| r.matches(span, resource, service))?;
    let status = rule.status.as_ref().and_then(|s| {
        s.from_attributes.iter().find_map(|k| attrs::get(&span.attributes, k).map(|v| v.into_owned())).or_else(|| s.value.clone())
    });
    Some(Step { rule: rule.name.clone(), stage: rule.stage.clone(), status })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processors::order_enrich::config::default_rules;

    fn span(name: &str, kind: i32, kv: &[(&str, &str)]) -> Span {
        let mut s = Span { name: name.into(), kind, ..Default::default() };
        for (k, v) in kv {
            attrs::set(&mut s.attributes, k, v);
        }
        s
    }

    fn step(s: &Span) -> Option<(String, Option<String>)> {
        let rules = compile(&default_rules(&["order.status".into(), "order.new_status".into()])).unwrap();
        classify(&rules, s, &[], "svc").map(|st| (st.stage, st.status))
    }

    #[test]
    fn default_rules_follow_the_semantic_conventions() {
        let created = span("POST /orders", 2, &[("http.request.method", "POST"), ("http.route", "/orders")]);
        assert_eq!(step(&created), Some(("created".into(), Some("new".into()))));
        let status = span("update status", 1, &[("order.new_status", "accepted")]);
        assert_eq!(step(&status), Some(("status_change".into(), Some("accepted".into()))));
        assert_eq!(step(&span("orders publish", 4, &[("messaging.system", "rabbitmq")])).unwrap().0, "bus_publish");
        assert_eq!(
            step(&span("send", 1, &[("messaging.system", "rabbitmq"), ("messaging.operation.type", "send")])).unwrap().0,
            "bus_publish"
        );
        assert_eq!(step(&span("orders process", 5, &[("messaging.system", "rabbitmq")])).unwrap().0, "bus_consume");
        assert_eq!(
            step(&span("INSERT orders", 3, &[("db.system.name", "postgresql"), ("db.operation.name", "INSERT")])).unwrap().0,
            "db_save"
        );
        assert_eq!(step(&span("q", 3, &[("db.system", "mssql"), ("db.statement", "update orders set x=1")])).unwrap().0, "db_save");
        assert_eq!(
            step(&span("SELECT orders", 3, &[("db.system.name", "postgresql"), ("db.operation.name", "SELECT")])),
            None,
            "reads are not saves"
        );
        assert_eq!(step(&span("save file", 1, &[("constructor.file_id", "F-1")])).unwrap().0, "file_link");
        assert_eq!(step(&span("GET /catalog", 2, &[("http.request.method", "GET")])), None);
    }
}
