//! Personal data in Jaeger's JSON answers: the same keys and pseudonyms as the read API
//! (`auth.personal_data`), applied to Jaeger's tags (`tags`, `logs[].fields`, `process.tags`:
//! `{"key", "type", "value"}`) and to the OTLP JSON of `/api/v3` (`{"key", "value": {...}}`).
//! Jaeger writes an OTLP map or list attribute as a JSON string; such a string is read as JSON
//! and masked inside, by key and dotted path, as the read API masks nested attributes.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::auth::Pseudonymizer;

/// Nesting beyond this is hidden whole (the read API's limit).
const MAX_DEPTH: usize = 64;
const TOO_DEEP: &str = "<too deep to show>";

/// Masks every personal attribute in a Jaeger (`/api/traces...`) or OTLP JSON
/// (`/api/v3/traces...`) answer.
pub fn mask_answer(p: &Pseudonymizer, answer: &mut Value) {
    walk(p, answer, 0);
}

fn personal(p: &Pseudonymizer, key: &str, path: &str) -> bool {
    p.is_personal(key) || p.is_personal(path)
}

/// Finds attribute lists (objects with a string `key` and a `value`) anywhere in the answer.
fn walk(p: &Pseudonymizer, value: &mut Value, depth: usize) {
    if depth > MAX_DEPTH {
        *value = Value::String(TOO_DEEP.into());
        return;
    }
    match value {
        Value::Object(map) if is_attribute(map) => attribute(p, map, "", depth),
        Value::Object(map) => map.values_mut().for_each(|v| walk(p, v, depth + 1)),
        Value::Array(items) => items.iter_mut().for_each(|v| walk(p, v, depth + 1)),
        _ => {}
    }
}

fn is_attribute(map: &Map<String, Value>) -> bool {
    map.get("key").is_some_and(Value::is_string) && map.contains_key("value")
}

/// One attribute, found under `prefix` (the dotted path of the maps around it).
fn attribute(p: &Pseudonymizer, map: &mut Map<String, Value>, prefix: &str, depth: usize) {
    let key = map.get("key").and_then(Value::as_str).unwrap_or_default().to_string();
    let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
    let jaeger_tag = map.contains_key("type");
    let Some(value) = map.get_mut("value") else { return };
    if personal(p, &key, &path) {
        if jaeger_tag {
            *value = Value::String(p.pseudonym(&scalar_text(value)));
            map.insert("type".into(), Value::String("string".into()));
        } else {
            *value = serde_json::json!({"stringValue": p.pseudonym(&any_value_text(value))});
        }
        return;
    }
    if jaeger_tag {
        // A map or list attribute, written by Jaeger as JSON text.
        if let Some(text) = value.as_str().filter(|t| t.starts_with('{') || t.starts_with('[')) {
            if let Ok(mut inner) = serde_json::from_str::<Value>(text) {
                if plain(p, &mut inner, &path, depth + 1) {
                    *value = Value::String(inner.to_string());
                }
            }
        }
    } else {
        any_value(p, value, &path, depth + 1);
    }
}

/// An OTLP JSON `AnyValue`: maps (`kvlistValue.values`) and lists (`arrayValue.values`) are
/// walked with the path of the attribute that holds them.
fn any_value(p: &Pseudonymizer, value: &mut Value, path: &str, depth: usize) {
    if depth > MAX_DEPTH {
        *value = serde_json::json!({"stringValue": TOO_DEEP});
        return;
    }
    let Some(map) = value.as_object_mut() else { return };
    if let Some(values) = map.get_mut("kvlistValue").and_then(|l| l.get_mut("values")).and_then(Value::as_array_mut) {
        for kv in values.iter_mut().filter_map(Value::as_object_mut).filter(|kv| is_attribute(kv)) {
            attribute(p, kv, path, depth + 1);
        }
    } else if let Some(values) = map.get_mut("arrayValue").and_then(|l| l.get_mut("values")).and_then(Value::as_array_mut) {
        values.iter_mut().for_each(|v| any_value(p, v, path, depth + 1));
    }
}

/// Plain JSON (a map attribute as Jaeger writes it): keys matched by name and dotted path.
/// Whether anything changed.
fn plain(p: &Pseudonymizer, value: &mut Value, prefix: &str, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        *value = Value::String(TOO_DEEP.into());
        return true;
    }
    match value {
        Value::Object(map) => {
            let mut changed = false;
            for (key, v) in map.iter_mut() {
                let path = format!("{prefix}.{key}");
                if personal(p, key, &path) {
                    *v = Value::String(p.pseudonym(&scalar_text(v)));
                    changed = true;
                } else {
                    changed |= plain(p, v, &path, depth + 1);
                }
            }
            changed
        }
        Value::Array(items) => items.iter_mut().fold(false, |changed, v| plain(p, v, prefix, depth + 1) | changed),
        _ => false,
    }
}

/// A value as the text its pseudonym is made from, as the read API makes it: strings as
/// written, numbers and booleans as their text.
fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An OTLP JSON `AnyValue`'s text: `intValue` is a JSON string or number, either way its digits.
fn any_value_text(value: &Value) -> String {
    let Some(map) = value.as_object() else { return scalar_text(value) };
    for key in ["stringValue", "intValue", "doubleValue", "boolValue", "bytesValue"] {
        if let Some(v) = map.get(key) {
            return scalar_text(v);
        }
    }
    value.to_string()
}

/// The trace ids in an answer: Jaeger's `data[].traceID`, or the spans' `traceId` of OTLP JSON
/// (`result.resourceSpans[].scopeSpans[].spans[]`).
pub fn trace_ids(answer: &Value) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    if let Some(data) = answer.get("data").and_then(Value::as_array) {
        ids.extend(data.iter().filter_map(|t| t.get("traceID")?.as_str()).map(str::to_string));
    }
    let resource_spans = answer.get("result").and_then(|r| r.get("resourceSpans")).and_then(Value::as_array);
    for rs in resource_spans.into_iter().flatten() {
        for ss in rs.get("scopeSpans").and_then(Value::as_array).into_iter().flatten() {
            for span in ss.get("spans").and_then(Value::as_array).into_iter().flatten() {
                if let Some(id) = span.get("traceId").and_then(Value::as_str) {
                    ids.insert(id.to_string());
                }
            }
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::PersonalDataConfig;
    use serde_json::json;

    fn pseudonymizer() -> Pseudonymizer {
        Pseudonymizer::new(&PersonalDataConfig { pseudonym_key: Some("k".repeat(32)), ..Default::default() })
    }

    #[test]
    fn jaeger_tags_fields_and_process_tags_are_masked() {
        let p = pseudonymizer();
        let mut answer = json!({"data": [{
            "traceID": "0af7651916cd43dd8448eb211c80319c",
            "spans": [{
                "tags": [
                    {"key": "enduser.id", "type": "string", "value": "u-42"},
                    {"key": "order.id", "type": "string", "value": "A-1"},
                    {"key": "user.phone", "type": "int64", "value": 4930123},
                    {"key": "customer", "type": "string", "value": "{\"user.email\":\"ann@shop.test\",\"tier\":\"gold\"}"},
                    {"key": "user", "type": "string", "value": "{\"name\":\"Ann\"}"}
                ],
                "logs": [{"timestamp": 1, "fields": [{"key": "user.email", "type": "string", "value": "ann@shop.test"}]}]
            }],
            "processes": {"p1": {"serviceName": "shop-api", "tags": [{"key": "client.address", "type": "string", "value": "10.0.0.7"}]}}
        }]});
        mask_answer(&p, &mut answer);
        let text = answer.to_string();
        for secret in ["u-42", "4930123", "ann@shop.test", "Ann", "10.0.0.7"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        let tags = &answer["data"][0]["spans"][0]["tags"];
        assert_eq!(tags[0]["value"], p.pseudonym("u-42"), "the read API's pseudonym");
        assert_eq!(tags[1]["value"], "A-1");
        assert_eq!(tags[2], json!({"key": "user.phone", "type": "string", "value": p.pseudonym("4930123")}));
        let customer: Value = serde_json::from_str(tags[3]["value"].as_str().unwrap()).unwrap();
        assert_eq!(customer, json!({"user.email": p.pseudonym("ann@shop.test"), "tier": "gold"}));
        assert!(tags[4]["value"].as_str().unwrap().contains(&p.pseudonym("Ann")), "user > name is user.name");
        assert_eq!(trace_ids(&answer).into_iter().collect::<Vec<_>>(), ["0af7651916cd43dd8448eb211c80319c"]);
    }

    #[test]
    fn otlp_json_attributes_are_masked_at_any_depth() {
        let p = pseudonymizer();
        let mut answer = json!({"result": {"resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "shop-api"}}]},
            "scopeSpans": [{"spans": [{
                "traceId": "0af7651916cd43dd8448eb211c80319c",
                "attributes": [
                    {"key": "enduser.id", "value": {"stringValue": "u-42"}},
                    {"key": "user.phone", "value": {"intValue": "4930123"}},
                    {"key": "customer", "value": {"kvlistValue": {"values": [
                        {"key": "user.email", "value": {"stringValue": "ann@shop.test"}},
                        {"key": "tier", "value": {"stringValue": "gold"}}]}}},
                    {"key": "user", "value": {"kvlistValue": {"values": [{"key": "name", "value": {"stringValue": "Ann"}}]}}}
                ]
            }]}]
        }]}});
        mask_answer(&p, &mut answer);
        let text = answer.to_string();
        for secret in ["u-42", "4930123", "ann@shop.test", "Ann"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("gold") && text.contains("shop-api"), "{text}");
        let attributes = &answer["result"]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"];
        assert_eq!(attributes[0]["value"], json!({"stringValue": p.pseudonym("u-42")}));
        assert_eq!(attributes[1]["value"], json!({"stringValue": p.pseudonym("4930123")}));
        assert_eq!(trace_ids(&answer).len(), 1);
    }
}
