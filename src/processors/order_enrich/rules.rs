//! Stage rules, compiled. Stage and status are separate facts: the first rule whose every
//! condition holds names the stage, except that a rule naming `status_change` yields to any
//! later rule that matches too (a consume span that also sets the new status is `bus_consume`);
//! the status is the span's own status key whatever the stage, else the first matching rule's.

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use regex::Regex;

use super::config::{AttributeCondition, RuleConfig, StatusConfig};
use crate::processors::attrs;

/// A compiled regex with a copy for each thread that searches with it. A `regex::Regex` keeps
/// its search caches in a pool whose fast path belongs to the first thread that used it; every
/// other thread takes a cache from a locked stack and puts it back, on every search (with the
/// enricher on two threads, a sixth of what the second thread spent more than the first). Each
/// thread's copy shares the compiled program and owns its own pool.
pub struct ThreadRegex {
    regex: Regex,
    copies: thread_local::ThreadLocal<Regex>,
}

impl ThreadRegex {
    pub fn new(pattern: &str) -> Result<ThreadRegex, regex::Error> {
        Ok(ThreadRegex { regex: Regex::new(pattern)?, copies: thread_local::ThreadLocal::new() })
    }

    /// This thread's copy.
    pub fn get(&self) -> &Regex {
        self.copies.get_or(|| self.regex.clone())
    }
}

pub struct Rule {
    pub name: String,
    span_name: Option<ThreadRegex>,
    kinds: Vec<i32>,
    service: Option<ThreadRegex>,
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
    Matches(ThreadRegex),
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
                span_name: r.when.span_name.as_deref().map(ThreadRegex::new).transpose()?,
                kinds: r.when.kind.iter().map(|k| k.otlp()).collect(),
                service: r.when.service.as_deref().map(ThreadRegex::new).transpose()?,
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
        (_, Some(re), _) => Test::Matches(ThreadRegex::new(re)?),
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
        if self.span_name.as_ref().is_some_and(|re| !re.get().is_match(&span.name)) {
            return false;
        }
        if self.service.as_ref().is_some_and(|re| !re.get().is_match(service)) {
            return false;
        }
        self.conditions.iter().all(|c| {
            let present = c.keys.iter().any(|k| attrs::has(&span.attributes, k) || attrs::has(resource, k));
            match &c.test {
                Test::Exists => present,
                Test::Absent => !present,
                Test::Equals(v) => lookup(&c.keys, &span.attributes, resource).is_some_and(|x| x == v.as_str()),
                Test::Matches(re) => lookup(&c.keys, &span.attributes, resource).is_some_and(|x| re.get().is_match(&x)),
            }
        })
    }
}

/// The stage a rule gives way to: a status alone is the least specific step.
pub const STATUS_CHANGE: &str = "status_change";

/// The step the rules name, or `None` when no rule matches. `status_keys` are read first for
/// the status, whatever rule names the stage.
pub fn classify(rules: &[Rule], span: &Span, resource: &[KeyValue], service: &str, status_keys: &[String]) -> Option<Step> {
    let mut matching = rules.iter().filter(|r| r.matches(span, resource, service)).peekable();
    let first = *matching.peek()?;
    let mut chosen = first;
    let mut status = None;
    for rule in matching {
        if status.is_none() {
            status = rule.status.as_ref().and_then(|s| {
                s.from_attributes.iter().find_map(|k| attrs::get(&span.attributes, k).map(|v| v.into_owned())).or_else(|| s.value.clone())
            });
        }
        if chosen.stage == STATUS_CHANGE && rule.stage != STATUS_CHANGE {
            chosen = rule;
        }
    }
    let status = span_status(span, status_keys).or(status);
    Some(Step { rule: chosen.name.clone(), stage: chosen.stage.clone(), status })
}

/// The status a span records itself: the first of `status_keys` present and not empty.
pub fn span_status(span: &Span, status_keys: &[String]) -> Option<String> {
    status_keys.iter().find_map(|k| attrs::get(&span.attributes, k)).filter(|v| !v.is_empty()).map(|v| v.into_owned())
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
        let keys = ["order.status".to_string(), "order.new_status".to_string()];
        let rules = compile(&default_rules(&keys)).unwrap();
        classify(&rules, s, &[], "svc", &keys).map(|st| (st.stage, st.status))
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

    #[test]
    fn a_status_does_not_take_the_stage_of_a_step() {
        let consume = span("orders process", 5, &[("messaging.system", "rabbitmq"), ("order.new_status", "accepted")]);
        assert_eq!(step(&consume), Some(("bus_consume".into(), Some("accepted".into()))));
        let save = span(
            "INSERT shop.orders",
            3,
            &[("db.system", "h2"), ("db.statement", "insert into orders values (?)"), ("order.status", "paid")],
        );
        assert_eq!(step(&save), Some(("db_save".into(), Some("paid".into()))));
        // Rules swapped, written by hand: the status-change rule first still yields the stage.
        let keys = ["order.status".to_string()];
        let mut rules = default_rules(&keys);
        let status_rule = rules.pop().unwrap();
        rules.insert(0, status_rule);
        let rules = compile(&rules).unwrap();
        let got = classify(&rules, &consume, &[], "crm", &["order.new_status".into()]).unwrap();
        assert_eq!((got.stage.as_str(), got.status.as_deref()), ("bus_consume", Some("accepted")));
        let only_status = span("set status", 1, &[("order.status", "manufactured")]);
        assert_eq!(classify(&rules, &only_status, &[], "mes", &keys).unwrap().stage, "status_change");
    }

    #[test]
    fn writes_are_found_in_old_and_new_conventions_and_awkward_sql() {
        let db = |kv: &[(&str, &str)]| step(&span("q", 3, kv)).map(|s| s.0);
        let save = Some("db_save".to_string());
        assert_eq!(db(&[("db.system", "sqlite"), ("db.statement", "/* shop */ INSERT INTO files VALUES (?)")]), save);
        assert_eq!(db(&[("db.system", "postgresql"), ("db.statement", "-- audit\n  update orders set s = $1")]), save);
        assert_eq!(db(&[("db.system.name", "h2"), ("db.query.text", "WITH x AS (SELECT 1) INSERT INTO orders SELECT * FROM x")]), save);
        assert_eq!(
            db(&[("db.system.name", "h2"), ("db.query.text", "with recent as (select * from orders) select update_time from recent")]),
            None
        );
        assert_eq!(db(&[("db.system", "h2"), ("db.operation", "INSERT")]), save, "operation only");
        assert_eq!(db(&[("db.system", "sqlite"), ("db.statement", "SELECT * FROM orders")]), None);
        let bus = |name: &str, kind: i32, kv: &[(&str, &str)]| step(&span(name, kind, kv)).map(|s| s.0);
        assert_eq!(
            bus("orders publish", 4, &[("messaging.system", "rabbitmq"), ("messaging.destination", "orders")]).unwrap(),
            "bus_publish"
        );
        assert_eq!(bus("shop -> orders send", 4, &[("messaging.system", "rabbitmq")]).unwrap(), "bus_publish", "kind only");
        assert_eq!(
            bus("orders receive", 1, &[("messaging.system", "rabbitmq"), ("messaging.operation", "receive")]).unwrap(),
            "bus_consume"
        );
        assert_eq!(
            bus("orders process", 1, &[("messaging.system", "rabbitmq"), ("messaging.operation.type", "process")]).unwrap(),
            "bus_consume"
        );
    }
}
