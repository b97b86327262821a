//! The consumer loop: connect, declare, consume; each message is mapped to order events and
//! admitted to the receiver's pipelines, and only then acknowledged. A refusal that a retry can
//! cure (a full queue, the memory limit, shutdown) sends the message back to the queue (nack with
//! requeue) and pauses for the retry hint; a message that can never be admitted goes to the
//! dead-letter destination. A lost connection is retried with exponential backoff; what was
//! delivered and not acknowledged is delivered again by the broker, so nothing is lost.

use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Confirmation, Connection, ConnectionProperties};
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

use super::config::RabbitMqReceiverConfig;
use super::mapping::map_message;
use super::metrics::RabbitMqMetrics;
use crate::pipeline::Fanout;
use crate::receivers::error::IngestError;
use crate::receivers::order_events::to_resource_spans;
use crate::receivers::{strip_credentials, IngestLimits};
use crate::shared::{now_unix_nanos, redact_url};
use crate::telemetry::{ReceiverHealth, ReceiverMetrics};

/// A session that lasted this long was a working connection: the next failure starts the
/// backoff from `initial_interval` again.
const STABLE_SESSION: Duration = Duration::from_secs(10);

/// How long closing the connection may take at shutdown or after an error.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// One running `rabbitmq` receiver.
pub struct RabbitMqReceiver {
    pub id: String,
    pub config: RabbitMqReceiverConfig,
    pub fanout: Arc<Fanout>,
    pub ingest: IngestLimits,
    /// Accepted and refused spans, transport `amqp`.
    pub metrics: ReceiverMetrics,
    pub bus: RabbitMqMetrics,
    pub health: ReceiverHealth,
}

/// Why a session ended, other than shutdown.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("{what}: {source}")]
    Amqp {
        what: &'static str,
        #[source]
        source: lapin::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// Adds what was being done to a lapin error.
trait Doing<T> {
    fn doing(self, what: &'static str) -> Result<T, SessionError>;
}

impl<T> Doing<T> for lapin::Result<T> {
    fn doing(self, what: &'static str) -> Result<T, SessionError> {
        self.map_err(|source| SessionError::Amqp { what, source })
    }
}

impl RabbitMqReceiver {
    /// Consumes until `stop` is cancelled, reconnecting for as long as it takes.
    pub async fn run(self, stop: CancellationToken) {
        let reconnect = self.config.reconnect.clone();
        let mut backoff = reconnect.initial_interval;
        let endpoint = redact_url(&self.config.endpoint).into_owned();
        loop {
            let started = Instant::now();
            let result = self.session(&stop).await;
            self.bus.connected.set(0);
            if stop.is_cancelled() {
                break;
            }
            let error = match result {
                Ok(()) => SessionError::Other("the session ended".into()),
                Err(error) => error,
            };
            self.health.disconnected(&error);
            self.bus.reconnects.inc();
            if started.elapsed() >= STABLE_SESSION {
                backoff = reconnect.initial_interval;
            }
            // A little jitter, so that gateways that lost the same broker do not return at once.
            let wait = backoff.mul_f64(1.0 + fastrand::f64() * 0.2);
            tracing::warn!(receiver = %self.id, %endpoint, error = %crate::shared::error_chain(&error), retry_in = ?wait, "no connection to the broker; will reconnect");
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
            backoff = (backoff * 2).min(reconnect.max_interval);
        }
        tracing::info!(receiver = %self.id, "rabbitmq receiver stopped");
    }

    /// One connection: `Ok` when `stop` ended it, an error when the connection or the channel
    /// was lost or refused.
    async fn session(&self, stop: &CancellationToken) -> Result<(), SessionError> {
        let connection = tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(()),
            connection = self.connect() => connection?,
        };
        let result = self.consume(&connection, stop).await;
        // Deliveries not acknowledged go back to the queue when the connection closes.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, "tracegate stops consuming".into())).await;
        result
    }

    async fn connect(&self) -> Result<Connection, SessionError> {
        let tls = match self.config.tls.as_ref().and_then(|t| t.ca_file.as_ref()) {
            Some(path) => {
                let pem = tokio::fs::read_to_string(path)
                    .await
                    .map_err(|e| SessionError::Other(format!("cannot read tls.ca_file {}: {e}", path.display())))?;
                lapin::tcp::OwnedTLSConfig { identity: None, cert_chain: Some(pem) }
            }
            None => lapin::tcp::OwnedTLSConfig::default(),
        };
        let properties = ConnectionProperties::default().with_connection_name(format!("tracegate receivers.{}", self.id).into());
        let runtime = lapin::runtime::default_runtime().doing("start the AMQP runtime")?;
        Connection::connect_with_config(&self.config.endpoint, properties, tls, runtime).await.doing("connect")
    }

    async fn consume(&self, connection: &Connection, stop: &CancellationToken) -> Result<(), SessionError> {
        let config = &self.config;
        let queue = ShortString::from(config.queue.as_str());
        let channel = connection.create_channel().await.doing("open a channel")?;
        let declare = if config.declare_queue {
            QueueDeclareOptions { durable: true, ..Default::default() }
        } else {
            // Passive: the queue must exist; its arguments are its owner's.
            QueueDeclareOptions { passive: true, ..Default::default() }
        };
        channel.queue_declare(queue.clone(), declare, FieldTable::default()).await.doing("declare the queue")?;
        if let Some(bind) = &config.bind {
            channel
                .queue_bind(
                    queue.clone(),
                    bind.exchange.as_str().into(),
                    bind.routing_key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .doing("bind the queue to its exchange")?;
        }
        let dead_letter = match &config.dead_letter {
            Some(dl) => {
                let channel = connection.create_channel().await.doing("open the dead-letter channel")?;
                channel.confirm_select(ConfirmSelectOptions::default()).await.doing("enable publisher confirms")?;
                if dl.exchange.is_empty() {
                    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
                    channel
                        .queue_declare(dl.routing_key.as_str().into(), durable, FieldTable::default())
                        .await
                        .doing("declare the dead-letter queue")?;
                }
                Some(channel)
            }
            None => None,
        };
        channel.basic_qos(config.prefetch, BasicQosOptions::default()).await.doing("set the prefetch")?;
        let tag = ShortString::try_new(format!("tracegate.{}", self.id)).unwrap_or_else(|_| "tracegate".into());
        let mut consumer =
            channel.basic_consume(queue, tag, BasicConsumeOptions::default(), FieldTable::default()).await.doing("start consuming")?;
        self.health.connected();
        self.bus.connected.set(1);
        tracing::info!(receiver = %self.id, queue = %config.queue, "consuming order events from the broker");
        loop {
            let delivery = tokio::select! {
                biased;
                // Shutdown: take no more messages; those delivered and not acknowledged go back
                // to the queue when the connection closes.
                _ = stop.cancelled() => return Ok(()),
                // The next message; the stream ends or fails when the channel or the connection
                // is lost, or when the broker cancels the consumer (its queue was deleted).
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => delivery,
                    Some(Err(source)) => return Err(SessionError::Amqp { what: "consume", source }),
                    None => return Err(SessionError::Other("the broker ended the consumer (was the queue deleted?)".into())),
                },
            };
            self.handle(delivery, dead_letter.as_ref(), stop).await?;
        }
    }

    /// Maps and admits one message, then acknowledges it, sends it back, or dead-letters it.
    async fn handle(&self, delivery: Delivery, dead_letter: Option<&Channel>, stop: &CancellationToken) -> Result<(), SessionError> {
        self.bus.received.inc();
        let events = match map_message(&delivery.data, self.config.mapping.as_ref(), &self.config.service, now_unix_nanos()) {
            Ok(events) => events,
            Err(unmappable) => {
                self.metrics.refused(0, "malformed");
                return self.dead_letter(delivery, dead_letter, &unmappable.0, stop).await;
            }
        };
        let count = events.len();
        let mut resource_spans = to_resource_spans(&events);
        drop(events);
        strip_credentials(&mut resource_spans);
        let limited = self.ingest.limit_spans(&mut resource_spans, None, &self.metrics);
        if !limited.rejected.is_empty() {
            let reason = limited.rejection_message(&self.ingest.spans);
            return self.dead_letter(delivery, dead_letter, &reason, stop).await;
        }
        let admitted = match self.ingest.check_memory() {
            Ok(()) => self.fanout.admit(resource_spans).await.map_err(IngestError::from),
            Err(error) => Err(error),
        };
        match admitted {
            Ok(admission) => {
                self.metrics.accepted(admission.accepted_spans);
                delivery.acker.ack(BasicAckOptions::default()).await.doing("acknowledge a message")?;
                self.bus.acked.inc();
                Ok(())
            }
            Err(error) if error.retryable() => {
                self.metrics.refused(count, error.reason());
                tracing::debug!(receiver = %self.id, %error, "message refused for now; back to the queue");
                self.requeue(delivery, error.retry_after(), stop).await
            }
            Err(error) => {
                self.metrics.refused(count, error.reason());
                self.dead_letter(delivery, dead_letter, &error.to_string(), stop).await
            }
        }
    }

    /// Sends a message back to the queue and waits `pause` (the broker would deliver it again
    /// at once).
    async fn requeue(&self, delivery: Delivery, pause: Duration, stop: &CancellationToken) -> Result<(), SessionError> {
        delivery.acker.nack(BasicNackOptions { requeue: true, multiple: false }).await.doing("send a message back to the queue")?;
        self.bus.requeued.inc();
        tokio::select! {
            biased;
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(pause) => {}
        }
        Ok(())
    }

    /// A message that can never be admitted: published to `dead_letter` with the reason in its
    /// headers and acknowledged once the broker confirmed it; without a configured destination,
    /// rejected without requeue (the queue's own dead-letter exchange, if any, takes it).
    async fn dead_letter(
        &self,
        delivery: Delivery,
        channel: Option<&Channel>,
        reason: &str,
        stop: &CancellationToken,
    ) -> Result<(), SessionError> {
        tracing::warn!(receiver = %self.id, reason, "a message cannot be taken as order events; dead-lettered");
        let (Some(channel), Some(dl)) = (channel, &self.config.dead_letter) else {
            delivery.acker.reject(BasicRejectOptions { requeue: false }).await.doing("reject a message")?;
            self.bus.dead_lettered.inc();
            return Ok(());
        };
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        headers.insert("x-tracegate-error".into(), AMQPValue::LongString(reason.into()));
        headers.insert("x-tracegate-receiver".into(), AMQPValue::LongString(self.id.as_str().into()));
        headers.insert("x-original-exchange".into(), AMQPValue::LongString(delivery.exchange.as_str().into()));
        headers.insert("x-original-routing-key".into(), AMQPValue::LongString(delivery.routing_key.as_str().into()));
        // Persistent, so that it survives a broker restart in a durable queue.
        let properties = delivery.properties.clone().with_headers(headers).with_delivery_mode(2);
        // Mandatory: a destination that routes nowhere comes back instead of vanishing.
        let options = BasicPublishOptions { mandatory: true, ..Default::default() };
        let confirmation = channel
            .basic_publish(dl.exchange.as_str().into(), dl.routing_key.as_str().into(), options, &delivery.data, properties)
            .await
            .doing("publish to the dead-letter destination")?
            .await
            .doing("confirm the dead-letter publish")?;
        match confirmation {
            Confirmation::Ack(None) => {
                delivery.acker.ack(BasicAckOptions::default()).await.doing("acknowledge a dead-lettered message")?;
                self.bus.dead_lettered.inc();
                Ok(())
            }
            other => {
                // Kept in the queue rather than lost; retried after the pause.
                let why = if other.is_nack() { "the broker refused it" } else { "it routes to no queue" };
                tracing::error!(receiver = %self.id, exchange = %dl.exchange, routing_key = %dl.routing_key, "cannot dead-letter a message: {why}; it stays in the queue");
                self.requeue(delivery, crate::receivers::RETRY_HINT, stop).await
            }
        }
    }
}
