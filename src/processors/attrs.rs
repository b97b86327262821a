//! Reading and writing span attributes.

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};

/// The value of `key` as text, if present and a scalar.
pub fn get<'a>(attrs: &'a [KeyValue], key: &str) -> Option<std::borrow::Cow<'a, str>> {
    use std::borrow::Cow;
    let kv = attrs.iter().find(|kv| kv.key == key)?;
    match kv.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(Cow::Borrowed(s.as_str())),
        Value::IntValue(i) => Some(Cow::Owned(i.to_string())),
        Value::BoolValue(b) => Some(Cow::Owned(b.to_string())),
        Value::DoubleValue(d) => Some(Cow::Owned(d.to_string())),
        _ => None,
    }
}

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
