//! Reading and writing span attributes.

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};

/// The value of `key` as text, if present and a scalar (the crate's one attribute reader).
pub use crate::shared::attr_text as get;

pub fn has(attrs: &[KeyValue], key: &str) -> bool {
    attrs.iter().any(|kv| kv.key == key)
}

/// Sets `key` to a string value, replacing any value it had.
pub fn set(attrs: &mut Vec<KeyValue>, key: &str, value: &str) {
    let value = Some(AnyValue { value: Some(Value::StringValue(value.to_string())) });
    match attrs.iter_mut().find(|kv| kv.key == key) {
        Some(kv) => kv.value = value,
        None => attrs.push(KeyValue { key: key.to_string(), value, ..Default::default() }),
    }
}
