//! Reading span attributes: the one reader every layer uses, so that the processor that tags a
//! span, the stores that index it and the exporters that send it agree on what it says (an
//! `order.id` sent as a number or a bool is the same id everywhere).

use std::borrow::Cow;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;

/// The value of `key` as text, if present and a scalar (string, int, bool or double).
pub fn attr_text<'a>(attrs: &'a [KeyValue], key: &str) -> Option<Cow<'a, str>> {
    kv_text(attrs.iter().find(|kv| kv.key == key)?)
}

/// One attribute's value as text, if a scalar: [`attr_text`] for a caller that walks the
/// attributes itself (one pass for several keys).
pub fn kv_text(kv: &KeyValue) -> Option<Cow<'_, str>> {
    match kv.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(Cow::Borrowed(s.as_str())),
        Value::IntValue(i) => Some(Cow::Owned(i.to_string())),
        Value::BoolValue(b) => Some(Cow::Owned(b.to_string())),
        Value::DoubleValue(d) => Some(Cow::Owned(d.to_string())),
        _ => None,
    }
}

/// [`attr_text`], owned.
pub fn attr_string(attrs: &[KeyValue], key: &str) -> Option<String> {
    attr_text(attrs, key).map(Cow::into_owned)
}

/// The first non-empty value among `keys` (a span's correlation value, e.g.
/// `constructor.file_id`).
pub fn first_value(attrs: &[KeyValue], keys: &[String]) -> Option<String> {
    keys.iter().find_map(|k| attr_text(attrs, k).filter(|v| !v.is_empty()).map(Cow::into_owned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::AnyValue;

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
    }

    #[test]
    fn scalars_read_as_text_and_the_first_non_empty_value_wins() {
        let attrs = vec![
            kv("order.id", Value::BoolValue(true)),
            kv("n", Value::IntValue(42)),
            kv("d", Value::DoubleValue(1.5)),
            kv("empty", Value::StringValue(String::new())),
            kv("file.id", Value::StringValue("F-1".into())),
            kv("bytes", Value::BytesValue(vec![1])),
        ];
        assert_eq!(attr_string(&attrs, "order.id").as_deref(), Some("true"));
        assert_eq!(attr_string(&attrs, "n").as_deref(), Some("42"));
        assert_eq!(attr_string(&attrs, "d").as_deref(), Some("1.5"));
        assert_eq!(attr_string(&attrs, "bytes"), None);
        assert_eq!(first_value(&attrs, &["empty".into(), "file.id".into()]).as_deref(), Some("F-1"));
    }
}
