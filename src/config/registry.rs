//! The component registry: for each family (receivers, processors, exporters, notifiers,
//! monitors) one table from the `type` a configuration names to the function that reads that
//! kind's section. Reading a component goes through its family's table, and the "known: ..."
//! list of an unknown `type` is the table's names, so adding a component is its folder (config
//! type, `validate`, build), its variant in the family's config enum, and one line here
//! (docs/development.md, "Adding a component").

use serde_yaml_ng::Value;

use super::load::typed;
use crate::exporters::{DebugExporterConfig, ElasticsearchExporterConfig, EmbeddedExporterConfig, ExporterConfig, OtlpExporterConfig};
use crate::monitors::{MonitorConfig, OrderSlaConfig};
use crate::notifiers::{AlertmanagerConfig, EmailConfig, NotifierConfig, WebhookConfig};
use crate::processors::{OrderEnrichConfig, OrderSamplingConfig, ProcessorConfig, SpanMetricsConfig};
use crate::receivers::{OtlpReceiverConfig, RabbitMqReceiverConfig, ReceiverConfig};
use crate::shared::Issues;

/// Reads one component's body (its `type` already taken out) at `path`, recording every error
/// in `issues`; `None` when it could not be read.
type Read<T> = fn(Value, &str, &mut Issues) -> Option<T>;

/// One kind of component.
pub(super) struct Kind<T: 'static> {
    /// The `type` that selects it (and the id prefix that does when `type` is left out).
    pub name: &'static str,
    /// Other `type` values that select it; not listed in errors.
    pub aliases: &'static [&'static str],
    pub read: Read<T>,
}

/// Every kind of one family, in the order errors list them.
pub(super) struct Family<T: 'static> {
    /// The family's name in messages: "unknown {what} type ...".
    pub what: &'static str,
    pub kinds: &'static [Kind<T>],
}

impl<T> Family<T> {
    /// The kind a `type` names.
    pub fn kind(&self, name: &str) -> Option<&Kind<T>> {
        self.kinds.iter().find(|k| k.name == name || k.aliases.contains(&name))
    }

    /// The names listed after "known:" when a `type` names no kind.
    pub fn known(&self) -> String {
        self.kinds.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
    }

    /// Reads `body` as the kind `name` at `path`; an unknown kind is reported at `{path}.type`.
    pub fn read(&self, name: &str, body: Value, path: &str, issues: &mut Issues) -> Option<T> {
        match self.kind(name) {
            Some(kind) => (kind.read)(body, path, issues),
            None => {
                issues.push(format!("{path}.type"), format!("unknown {} type {name:?}; known: {}", self.what, self.known()));
                None
            }
        }
    }
}

pub(super) const RECEIVERS: Family<ReceiverConfig> = Family {
    what: "receiver",
    kinds: &[
        Kind { name: "otlp", aliases: &[], read: |v, p, i| typed::<OtlpReceiverConfig>(v, p, i).map(ReceiverConfig::Otlp) },
        Kind { name: "rabbitmq", aliases: &[], read: |v, p, i| typed::<RabbitMqReceiverConfig>(v, p, i).map(ReceiverConfig::RabbitMq) },
    ],
};

pub(super) const PROCESSORS: Family<ProcessorConfig> = Family {
    what: "processor",
    kinds: &[
        Kind { name: "order_enrich", aliases: &[], read: |v, p, i| typed::<OrderEnrichConfig>(v, p, i).map(ProcessorConfig::OrderEnrich) },
        Kind {
            name: "order_sampling",
            aliases: &[],
            read: |v, p, i| typed::<OrderSamplingConfig>(v, p, i).map(ProcessorConfig::OrderSampling),
        },
        Kind { name: "span_metrics", aliases: &[], read: |v, p, i| typed::<SpanMetricsConfig>(v, p, i).map(ProcessorConfig::SpanMetrics) },
    ],
};

pub(super) const EXPORTERS: Family<ExporterConfig> = Family {
    what: "exporter",
    kinds: &[
        Kind {
            name: "otlp",
            aliases: &["otlp_grpc", "otlp_http"],
            read: |v, p, i| typed::<OtlpExporterConfig>(v, p, i).map(ExporterConfig::Otlp),
        },
        Kind { name: "embedded", aliases: &[], read: |v, p, i| typed::<EmbeddedExporterConfig>(v, p, i).map(ExporterConfig::Embedded) },
        Kind {
            name: "elasticsearch",
            aliases: &[],
            read: |v, p, i| typed::<ElasticsearchExporterConfig>(v, p, i).map(ExporterConfig::Elasticsearch),
        },
        Kind { name: "debug", aliases: &[], read: |v, p, i| typed::<DebugExporterConfig>(v, p, i).map(ExporterConfig::Debug) },
    ],
};

pub(super) const NOTIFIERS: Family<NotifierConfig> = Family {
    what: "notifier",
    kinds: &[
        Kind { name: "alertmanager", aliases: &[], read: |v, p, i| typed::<AlertmanagerConfig>(v, p, i).map(NotifierConfig::Alertmanager) },
        Kind { name: "email", aliases: &[], read: |v, p, i| typed::<EmailConfig>(v, p, i).map(NotifierConfig::Email) },
        Kind { name: "webhook", aliases: &[], read: |v, p, i| typed::<WebhookConfig>(v, p, i).map(NotifierConfig::Webhook) },
    ],
};

pub(super) const MONITORS: Family<MonitorConfig> = Family {
    what: "monitor",
    kinds: &[Kind { name: "order_sla", aliases: &[], read: |v, p, i| typed::<OrderSlaConfig>(v, p, i).map(MonitorConfig::OrderSla) }],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_known_lists_come_from_the_tables() {
        assert_eq!(RECEIVERS.known(), "otlp, rabbitmq");
        assert_eq!(PROCESSORS.known(), "order_enrich, order_sampling, span_metrics");
        assert_eq!(EXPORTERS.known(), "otlp, embedded, elasticsearch, debug");
        assert_eq!(NOTIFIERS.known(), "alertmanager, email, webhook");
        assert_eq!(MONITORS.known(), "order_sla");
    }

    #[test]
    fn an_alias_selects_its_kind_and_an_unknown_type_is_named_with_the_known_ones() {
        assert_eq!(EXPORTERS.kind("otlp_http").map(|k| k.name), Some("otlp"));
        let mut issues = Issues::default();
        let read = EXPORTERS.read("jeager", Value::Mapping(Default::default()), "exporters.jaeger", &mut issues);
        assert!(read.is_none());
        assert_eq!(issues.found().len(), 1);
        assert_eq!(issues.found()[0].path, "exporters.jaeger.type");
        assert_eq!(issues.found()[0].message, r#"unknown exporter type "jeager"; known: otlp, embedded, elasticsearch, debug"#);
    }

    #[test]
    fn every_kind_reads_an_empty_body_or_names_what_is_missing() {
        // A registered kind reaches its own reader: an empty body either reads or fails with an
        // error under the component's path, never as an unknown type.
        fn each<T>(family: &Family<T>) {
            for kind in family.kinds {
                let mut issues = Issues::default();
                let path = format!("{}s.x", family.what);
                let _ = (kind.read)(Value::Mapping(Default::default()), &path, &mut issues);
                assert!(issues.found().iter().all(|i| i.path.starts_with(&path) && !i.message.contains("unknown")), "{}", kind.name);
            }
        }
        each(&RECEIVERS);
        each(&PROCESSORS);
        each(&EXPORTERS);
        each(&NOTIFIERS);
        each(&MONITORS);
    }
}
