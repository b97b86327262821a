//! What to do with each bulk item, read from Elasticsearch's reply item by item, and with a
//! whole request when it fails before any item is looked at.

use std::time::Duration;

use serde::Deserialize;

/// The fate of one bulk item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    /// 200 / 201: stored now.
    Indexed,
    /// 409 on `create`: a document with this id exists, i.e. an earlier attempt stored it.
    AlreadyIndexed,
    /// 429 or 5xx: send it again later.
    Retry { status: u16, reason: String },
    /// Any other 4xx: it will never be accepted; goes to the dead-letter file.
    Reject { status: u16, error: serde_json::Value },
}

/// The fate of a whole bulk request.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestOutcome {
    /// The reply lists one outcome per item, in the order sent.
    Items(Vec<ItemOutcome>),
    /// 413 Payload Too Large: send the items in smaller requests.
    TooLarge,
    /// 429 / 5xx / no reply: send the whole request again after `retry_after` or a backoff.
    Retry { reason: String, retry_after: Option<Duration> },
    /// 401 / 403: these credentials may not write; retrying will not help.
    Unauthorized { status: u16, reason: String },
    /// Another 4xx for the whole request; its items go to the dead-letter file.
    Reject { status: u16, reason: String },
}

#[derive(Deserialize)]
struct BulkReply {
    #[serde(default)]
    items: Vec<std::collections::HashMap<String, ItemReply>>,
}

#[derive(Deserialize)]
struct ItemReply {
    status: u16,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

fn item_outcome(reply: &ItemReply) -> ItemOutcome {
    match reply.status {
        200..=299 => ItemOutcome::Indexed,
        409 => ItemOutcome::AlreadyIndexed,
        429 | 500..=599 => ItemOutcome::Retry { status: reply.status, reason: reason(reply.error.as_ref()) },
        status => ItemOutcome::Reject { status, error: reply.error.clone().unwrap_or(serde_json::Value::Null) },
    }
}

fn reason(error: Option<&serde_json::Value>) -> String {
    match error {
        Some(e) => match (e.get("type").and_then(|t| t.as_str()), e.get("reason").and_then(|r| r.as_str())) {
            (Some(t), Some(r)) => format!("{t}: {r}"),
            (Some(t), None) => t.to_string(),
            _ => e.to_string(),
        },
        None => "no error given".into(),
    }
}

/// Reads a bulk reply for `sent` items.
pub fn classify(status: u16, retry_after: Option<&str>, body: &[u8], sent: usize) -> RequestOutcome {
    let text = || String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
    match status {
        200..=299 => match serde_json::from_slice::<BulkReply>(body) {
            Ok(reply) if reply.items.len() == sent => RequestOutcome::Items(
                reply.items.iter().map(|item| item.values().next().map(item_outcome).unwrap_or_else(malformed)).collect(),
            ),
            Ok(reply) => {
                RequestOutcome::Retry { reason: format!("bulk reply lists {} items for {sent} sent", reply.items.len()), retry_after: None }
            }
            Err(e) => RequestOutcome::Retry { reason: format!("unreadable bulk reply: {e}"), retry_after: None },
        },
        413 => RequestOutcome::TooLarge,
        401 | 403 => RequestOutcome::Unauthorized { status, reason: text() },
        429 | 500..=599 => {
            RequestOutcome::Retry { reason: format!("HTTP {status}: {}", text()), retry_after: retry_after.and_then(parse_retry_after) }
        }
        _ => RequestOutcome::Reject { status, reason: text() },
    }
}

fn malformed() -> ItemOutcome {
    ItemOutcome::Retry { status: 0, reason: "bulk reply item without an operation".into() }
}

/// `Retry-After` as seconds or an HTTP date.
pub(super) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(300)));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(std::time::SystemTime::now()).unwrap_or_default().min(Duration::from_secs(300)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_items_each_get_their_own_fate() {
        let body = br#"{"took":3,"errors":true,"items":[
            {"create":{"_index":"i","_id":"a","status":201,"result":"created"}},
            {"create":{"_index":"i","_id":"b","status":409,"error":{"type":"version_conflict_engine_exception","reason":"[b]: version conflict"}}},
            {"create":{"_index":"i","_id":"c","status":429,"error":{"type":"es_rejected_execution_exception","reason":"rejected execution"}}},
            {"create":{"_index":"i","_id":"d","status":400,"error":{"type":"document_parsing_exception","reason":"failed to parse field [duration]"}}},
            {"create":{"_index":"i","_id":"e","status":503,"error":{"type":"unavailable_shards_exception","reason":"primary shard is not active"}}}
        ]}"#;
        let RequestOutcome::Items(items) = classify(200, None, body, 5) else { panic!("expected items") };
        assert_eq!(items[0], ItemOutcome::Indexed);
        assert_eq!(items[1], ItemOutcome::AlreadyIndexed);
        assert_eq!(items[2], ItemOutcome::Retry { status: 429, reason: "es_rejected_execution_exception: rejected execution".into() });
        assert!(matches!(&items[3], ItemOutcome::Reject { status: 400, error } if error["type"] == "document_parsing_exception"));
        assert!(matches!(&items[4], ItemOutcome::Retry { status: 503, .. }));
    }

    #[test]
    fn whole_request_failures() {
        assert_eq!(classify(413, None, b"", 3), RequestOutcome::TooLarge);
        assert_eq!(
            classify(429, Some("7"), b"slow down", 3),
            RequestOutcome::Retry { reason: "HTTP 429: slow down".into(), retry_after: Some(Duration::from_secs(7)) }
        );
        assert!(matches!(classify(503, None, b"", 3), RequestOutcome::Retry { retry_after: None, .. }));
        assert!(matches!(classify(401, None, b"", 3), RequestOutcome::Unauthorized { status: 401, .. }));
        assert!(matches!(classify(403, None, b"", 3), RequestOutcome::Unauthorized { status: 403, .. }));
        assert!(matches!(classify(400, None, b"bad", 3), RequestOutcome::Reject { status: 400, .. }));
        // A reply that does not account for every item is not trusted.
        assert!(matches!(classify(200, None, br#"{"errors":false,"items":[]}"#, 2), RequestOutcome::Retry { .. }));
        assert!(matches!(classify(200, None, b"<html>", 2), RequestOutcome::Retry { .. }));
    }
}
