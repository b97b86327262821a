//! The `rabbitmq` receiver's own metrics, beside the receivers' common ones (accepted and
//! refused spans, with transport `amqp`):
//! - `tracegate_rabbitmq_messages_total{receiver, outcome}`: `received`, `acked`, `requeued`
//!   (nacked for a retry: the gateway refused them for now), `dead_lettered`;
//! - `tracegate_rabbitmq_reconnects_total{receiver}`: connections lost or refused;
//! - `tracegate_rabbitmq_connected{receiver}`: 1 while connected and consuming.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::telemetry::Metrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    receiver: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReceiverLabels {
    receiver: String,
}

/// The families, registered once per process; `for_receiver` hands out one receiver's handle.
#[derive(Clone, Default)]
pub struct RabbitMqMetricFamilies {
    messages: Family<MessageLabels, Counter>,
    reconnects: Family<ReceiverLabels, Counter>,
    connected: Family<ReceiverLabels, Gauge>,
}

impl RabbitMqMetricFamilies {
    pub fn register(metrics: &Metrics) -> RabbitMqMetricFamilies {
        let families = RabbitMqMetricFamilies::default();
        metrics.register(
            "tracegate_rabbitmq_messages",
            "Messages of a rabbitmq receiver by outcome: received, acked, requeued (refused for now), dead_lettered",
            families.messages.clone(),
        );
        metrics.register("tracegate_rabbitmq_reconnects", "Connections to the broker lost or refused", families.reconnects.clone());
        metrics.register("tracegate_rabbitmq_connected", "1 while the receiver is connected and consuming", families.connected.clone());
        families
    }

    pub fn for_receiver(&self, receiver: &str) -> RabbitMqMetrics {
        let outcome = |outcome: &str| {
            let labels = MessageLabels { receiver: receiver.into(), outcome: outcome.into() };
            self.messages.get_or_create(&labels).clone()
        };
        let labels = ReceiverLabels { receiver: receiver.into() };
        // One statement per family (a second `get_or_create` in one expression would wait for
        // the first one's lock).
        let received = outcome("received");
        let acked = outcome("acked");
        let requeued = outcome("requeued");
        let dead_lettered = outcome("dead_lettered");
        let reconnects = self.reconnects.get_or_create(&labels).clone();
        let connected = self.connected.get_or_create(&labels).clone();
        RabbitMqMetrics { received, acked, requeued, dead_lettered, reconnects, connected }
    }
}

/// One receiver's counters.
#[derive(Clone)]
pub struct RabbitMqMetrics {
    pub received: Counter,
    pub acked: Counter,
    pub requeued: Counter,
    pub dead_lettered: Counter,
    pub reconnects: Counter,
    pub connected: Gauge,
}
