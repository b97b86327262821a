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
                let mut rng = fastrand::Rng::new();
                (0..32).map(|_| rng.u8(..)).collect()
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

    fn mask(&self, attributes: &mut [KeyValue]) {
        for kv in attributes.iter_mut().filter(|kv| self.keys.contains(&kv.key)) {
            let clear = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValueKind::StringValue(s)) => s.clone(),
                Some(AnyValueKind::IntValue(i)) => i.to_string(),
                Some(AnyValueKind::DoubleValue(d)) => d.to_string(),
                Some(AnyValueKind::BoolValue(b)) => b.to_string(),
                Some(other) => format!("{other:?}"),
                None => continue,
            };
            kv.value = Some(AnyValue { value: Some(AnyValueKind::StringValue(self.pseudonym(&clear))) });
        }
    }

    /// Masks every personal attribute of resources, spans, events and links.
    pub fn mask_spans(&self, resource_spans: &mut [ResourceSpans]) {
        for rs in resource_spans {
            if let Some(r) = rs.resource.as_mut() {
                self.mask(&mut r.attributes);
            }
            for ss in &mut rs.scope_spans {
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
}
