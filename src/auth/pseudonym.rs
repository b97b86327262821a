//! Personal data in read responses: the configured attribute keys are shown as keyed HMAC
//! pseudonyms (stable for a key, not reversible without it), unless an admin unmasks them.

use hmac::{Hmac, Mac};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// `auth.personal_data`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PersonalDataConfig {
    /// Attribute keys whose values are personal data.
    pub keys: Vec<String>,
    /// The HMAC-SHA256 key of the pseudonyms (use `${env:NAME}`; at least 32 bytes). Without
    /// one, a random key is drawn at start and pseudonyms change with every restart.
    pub pseudonym_key: Option<String>,
}

impl Default for PersonalDataConfig {
    fn default() -> Self {
        PersonalDataConfig {
            keys: ["enduser.id", "user.email", "user.phone", "user.name", "client.address"].map(String::from).to_vec(),
            pseudonym_key: None,
        }
    }
}

/// Replaces personal data with pseudonyms.
pub struct Pseudonymizer {
    keys: Vec<String>,
    secret: Vec<u8>,
}

impl Pseudonymizer {
    pub fn new(config: &PersonalDataConfig) -> Pseudonymizer {
        let secret = match &config.pseudonym_key {
            Some(key) => key.as_bytes().to_vec(),
            None => {
                let mut key = vec![0u8; 32];
                if getrandom::fill(&mut key).is_err() {
                    // No OS randomness (practically impossible on Linux): a per-process fallback,
                    // still never a fixed key.
                    let mut rng = fastrand::Rng::new();
                    key.iter_mut().for_each(|b| *b = rng.u8(..));
                }
                key
            }
        };
        Pseudonymizer { keys: config.keys.clone(), secret }
    }

    /// `pseud:` and the first 16 bytes of HMAC-SHA256(key, value), in hex.
    pub fn pseudonym(&self, value: &str) -> String {
        // HMAC accepts keys of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(value.as_bytes());
        format!("pseud:{}", hex::encode(&mac.finalize().into_bytes()[..16]))
    }

    /// Whether an attribute key (or dotted path) names personal data.
    pub fn is_personal(&self, key: &str) -> bool {
        self.keys.iter().any(|k| k == key)
    }

    /// Masks personal values among `attributes`, at any depth: a personal key's whole value
    /// (a nested list or map included) becomes one pseudonym; inside maps (`kvlistValue`) and
    /// arrays, keys are matched by their own name and by their dotted path (`user` > `email`
    /// matches `user.email`).
    fn mask(&self, attributes: &mut [KeyValue]) {
        self.mask_at(attributes, "", 0);
    }

    fn mask_at(&self, attributes: &mut [KeyValue], prefix: &str, depth: usize) {
        for kv in attributes.iter_mut() {
            let path = if prefix.is_empty() { kv.key.clone() } else { format!("{prefix}.{}", kv.key) };
            if self.keys.iter().any(|k| *k == kv.key || *k == path) {
                if let Some(value) = kv.value.as_mut().filter(|v| v.value.is_some()) {
                    *value = AnyValue { value: Some(AnyValueKind::StringValue(self.pseudonym(&clear_text(value)))) };
                }
            } else if let Some(value) = kv.value.as_mut() {
                self.mask_value(value, &path, depth + 1);
            }
        }
    }

    fn mask_value(&self, value: &mut AnyValue, path: &str, depth: usize) {
        if depth > MAX_DEPTH {
            // Deeper than any real attribute: hide it whole rather than walk on.
            *value = AnyValue { value: Some(AnyValueKind::StringValue("<too deep to show>".into())) };
            return;
        }
        match value.value.as_mut() {
            Some(AnyValueKind::KvlistValue(list)) => self.mask_at(&mut list.values, path, depth),
            Some(AnyValueKind::ArrayValue(array)) => {
                for item in &mut array.values {
                    self.mask_value(item, path, depth + 1);
                }
            }
            _ => {}
        }
    }

    /// Masks every personal attribute of resources, scopes, spans, events and links.
    pub fn mask_spans(&self, resource_spans: &mut [ResourceSpans]) {
        for rs in resource_spans {
            if let Some(r) = rs.resource.as_mut() {
                self.mask(&mut r.attributes);
            }
            for ss in &mut rs.scope_spans {
                if let Some(scope) = ss.scope.as_mut() {
                    self.mask(&mut scope.attributes);
                }
                for span in &mut ss.spans {
                    self.mask(&mut span.attributes);
                    for e in &mut span.events {
                        self.mask(&mut e.attributes);
                    }
                    for l in &mut span.links {
                        self.mask(&mut l.attributes);
                    }
                }
            }
        }
    }
}

/// Nesting beyond this is masked whole (OTLP puts no limit on it; the receivers' message size
/// does).
const MAX_DEPTH: usize = 64;

/// A value as the text its pseudonym is made from: scalars as written, anything else as its
/// OTLP JSON form (stable for equal values).
fn clear_text(value: &AnyValue) -> String {
    match &value.value {
        Some(AnyValueKind::StringValue(s)) => s.clone(),
        Some(AnyValueKind::IntValue(i)) => i.to_string(),
        Some(AnyValueKind::DoubleValue(d)) => d.to_string(),
        Some(AnyValueKind::BoolValue(b)) => b.to_string(),
        Some(AnyValueKind::BytesValue(b)) => hex::encode(b),
        _ => serde_json::to_string(value).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_stable_per_key_and_differ_across_keys() {
        let a = Pseudonymizer::new(&PersonalDataConfig { pseudonym_key: Some("k".repeat(32)), ..Default::default() });
        let b = Pseudonymizer::new(&PersonalDataConfig { pseudonym_key: Some("j".repeat(32)), ..Default::default() });
        assert_eq!(a.pseudonym("u-42"), a.pseudonym("u-42"));
        assert_ne!(a.pseudonym("u-42"), a.pseudonym("u-43"));
        assert_ne!(a.pseudonym("u-42"), b.pseudonym("u-42"));
        assert!(!a.pseudonym("u-42").contains("u-42"));
    }

    fn kv(key: &str, value: AnyValueKind) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
    }

    fn text(s: &str) -> AnyValueKind {
        AnyValueKind::StringValue(s.into())
    }

    #[test]
    fn personal_data_is_masked_at_any_depth() {
        use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
        let p = Pseudonymizer::new(&PersonalDataConfig { pseudonym_key: Some("k".repeat(32)), ..Default::default() });
        let list = |values: Vec<KeyValue>| AnyValueKind::KvlistValue(KeyValueList { values });
        let array = |values: Vec<AnyValueKind>| {
            AnyValueKind::ArrayValue(ArrayValue { values: values.into_iter().map(|v| AnyValue { value: Some(v) }).collect() })
        };
        let mut attributes = vec![
            kv("customer", list(vec![kv("user.email", text("ann@shop.test")), kv("tier", text("gold"))])),
            kv("user", list(vec![kv("phone", text("+49 30 1234"))])),
            kv("recipients", array(vec![list(vec![kv("enduser.id", text("u-42"))]), list(vec![kv("note", text("ok"))])])),
            kv("user.name", list(vec![kv("first", text("Ann"))])),
        ];
        let mut deep = kv("enduser.id", text("u-7"));
        for _ in 0..10 {
            deep = kv("wrap", list(vec![deep]));
        }
        attributes.push(deep);
        p.mask(&mut attributes);
        let json = serde_json::to_string(&attributes).unwrap();
        for secret in ["ann@shop.test", "+49 30 1234", "u-42", "Ann", "u-7"] {
            assert!(!json.contains(secret), "{secret} in {json}");
        }
        for kept in ["gold", "ok"] {
            assert!(json.contains(kept), "{kept} lost: {json}");
        }
        assert_eq!(json.matches("pseud:").count(), 5, "{json}");
    }
}
