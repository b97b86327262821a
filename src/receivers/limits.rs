//! Per-principal rate limits on ingest: a token bucket of spans per sender (the token's issuer
//! and subject, or `anonymous`). A sender over its rate is answered with OTLP's throttling
//! reply (HTTP 429 / gRPC RESOURCE_EXHAUSTED with a retry delay), so SDKs back off.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::auth::Principal;
use crate::shared::Issues;

/// `receivers.<id>.rate_limit`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained spans per second per sender.
    pub spans_per_second: u32,
    /// Spans a sender may send at once after being idle; defaults to one second's worth.
    #[serde(default)]
    pub burst: Option<u32>,
}

impl RateLimitConfig {
    pub fn validate(&self, path: &str, issues: &mut Issues) {
        if self.spans_per_second == 0 {
            issues.push(format!("{path}.spans_per_second"), "must be at least 1");
        }
        if self.burst == Some(0) {
            issues.push(format!("{path}.burst"), "must be at least 1");
        }
    }
}

/// The buckets of every sender seen.
pub struct SenderLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl SenderLimiter {
    pub fn new(config: &RateLimitConfig) -> SenderLimiter {
        let rate = config.spans_per_second.max(1) as f64;
        SenderLimiter { rate, burst: config.burst.map(f64::from).unwrap_or(rate).max(1.0), buckets: Mutex::default() }
    }

    /// Takes `spans` from the sender's bucket, or says how long to wait. A request larger than
    /// the burst needs a full bucket.
    pub fn admit(&self, principal: Option<&Principal>, spans: usize) -> Result<(), Duration> {
        let key = match principal {
            Some(p) if !p.anonymous => format!("{}\u{0}{}", p.issuer, p.subject),
            _ => "anonymous".to_string(),
        };
        let want = (spans as f64).min(self.burst);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > 100_000 {
            // Forget senders idle long enough to have a full bucket again.
            let full_after = Duration::from_secs_f64(self.burst / self.rate);
            buckets.retain(|_, (_, at)| now.duration_since(*at) < full_after);
        }
        let (tokens, at) = buckets.entry(key).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= want {
            *tokens -= want;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(((want - *tokens) / self.rate).max(0.001)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_sender_over_its_rate_waits_and_others_are_not_affected() {
        let limiter = SenderLimiter::new(&RateLimitConfig { spans_per_second: 100, burst: Some(200) });
        let mut shop = Principal::anonymous();
        shop.anonymous = false;
        shop.subject = "shop".into();
        let mut crm = shop.clone();
        crm.subject = "crm".into();
        assert!(limiter.admit(Some(&shop), 150).is_ok());
        let wait = limiter.admit(Some(&shop), 100).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(limiter.admit(Some(&crm), 200).is_ok(), "another sender has its own bucket");
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(limiter.admit(Some(&shop), 100).is_ok());
    }
}
