//! The `rabbitmq` receiver: order events from a system that cannot emit OTLP (MES) and publishes
//! on the bus instead. It consumes a queue, maps each JSON message to order events with JSON
//! pointers, and acknowledges a message only once the gateway admitted its events.

mod config;
mod consumer;
mod mapping;
mod metrics;

pub use config::{AmqpTlsConfig, BindConfig, DeadLetterConfig, RabbitMqReceiverConfig, ReconnectConfig};
pub use consumer::RabbitMqReceiver;
pub use mapping::{map_message, FieldSource, MappingConfig, Unmappable};
pub use metrics::{RabbitMqMetricFamilies, RabbitMqMetrics};
