//! From a bus message to order events. A message is JSON: one object, or an array of objects.
//! With a `mapping`, each object's fields are found by JSON pointers (RFC 6901) and built into an
//! order event, which is then read exactly as a posted one is (`receivers/order_events.rs`);
//! without one, each object is an order event as `POST /v1/order-events` takes it.
//!
//! A message maps whole or not at all: if any of its objects cannot be mapped, the message is
//! refused (and dead-lettered), so that nothing of it is half delivered; sent again after a fix,
//! its events get the same span ids and replace rather than duplicate.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::receivers::order_events::{read_order_event, OrderEvent};
use crate::shared::Issues;

/// Where a field of an order event comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldSource {
    /// A JSON pointer into the message, e.g. `/orderNo` or `/line/id`.
    Pointer(String),
    /// The same value for every message: `{value: mes-api}`.
    Value(String),
}

impl FieldSource {
    /// The value in `object`, `None` when the pointer finds nothing (or null).
    fn resolve(&self, object: &Value) -> Option<Value> {
        match self {
            FieldSource::Pointer(p) => object.pointer(p).filter(|v| !v.is_null()).cloned(),
            FieldSource::Value(v) => Some(Value::String(v.clone())),
        }
    }

    /// How the source is written, for error messages.
    fn describe(&self) -> String {
        match self {
            FieldSource::Pointer(p) => p.clone(),
            FieldSource::Value(v) => format!("{{value: {v:?}}}"),
        }
    }
}

impl<'de> Deserialize<'de> for FieldSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SourceVisitor;
        impl<'de> Visitor<'de> for SourceVisitor {
            type Value = FieldSource;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON pointer such as /orderNo, or {value: <constant>}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FieldSource, E> {
                Ok(FieldSource::Pointer(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FieldSource, A::Error> {
                let mut value: Option<String> = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "value" if value.is_none() => value = Some(map.next_value()?),
                        "value" => return Err(de::Error::duplicate_field("value")),
                        other => return Err(de::Error::unknown_field(other, &["value"])),
                    }
                }
                value.map(FieldSource::Value).ok_or_else(|| de::Error::missing_field("value"))
            }
        }
        deserializer.deserialize_any(SourceVisitor)
    }
}

impl Serialize for FieldSource {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            FieldSource::Pointer(p) => serializer.serialize_str(p),
            FieldSource::Value(v) => {
                use serde::ser::SerializeMap;
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("value", v)?;
                map.end()
            }
        }
    }
}

/// `mapping`: where each field of an order event is in a message.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    /// Required. A number is taken as its decimal text.
    #[serde(default)]
    pub order_id: Option<FieldSource>,
    /// The business status after the step; absent: the event records no status.
    #[serde(default)]
    pub status: Option<FieldSource>,
    /// RFC 3339; absent: the time the message was received.
    #[serde(default)]
    pub time: Option<FieldSource>,
    /// The service the event names; it must be the receiver's `service` (its identity). Unset:
    /// the receiver's `service`.
    #[serde(default)]
    pub service: Option<FieldSource>,
    /// Absent: `status_change`.
    #[serde(default)]
    pub stage: Option<FieldSource>,
    /// Span attributes by name; one whose pointer finds nothing is left out.
    #[serde(default)]
    pub attributes: BTreeMap<String, FieldSource>,
}

/// Why a pointer is not one, if it is not.
fn pointer_problem(pointer: &str) -> Option<String> {
    if pointer.is_empty() {
        return Some("the empty pointer is the whole message, never a field; write e.g. /orderNo".into());
    }
    if !pointer.starts_with('/') {
        return Some(format!("{pointer:?} is not a JSON pointer: it starts with / (write /{pointer})"));
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Some(format!("{pointer:?} is not a JSON pointer: ~ is written ~0 and / inside a name ~1"));
        }
    }
    None
}

impl MappingConfig {
    /// The event's own fields, by name.
    fn fields(&self) -> [(&'static str, &Option<FieldSource>); 5] {
        [("order_id", &self.order_id), ("status", &self.status), ("time", &self.time), ("service", &self.service), ("stage", &self.stage)]
    }

    pub fn validate(&self, path: &str, issues: &mut Issues) {
        if self.order_id.is_none() {
            issues.push(format!("{path}.order_id"), "missing: where the order id is in a message (e.g. order_id: /orderNo)");
        }
        let fields = self.fields();
        let attributes = self.attributes.iter().map(|(name, source)| (format!("attributes.{name}"), Some(source)));
        for (field, source) in fields.into_iter().map(|(f, s)| (f.to_string(), s.as_ref())).chain(attributes) {
            match source {
                Some(FieldSource::Pointer(p)) => {
                    if let Some(problem) = pointer_problem(p) {
                        issues.push(format!("{path}.{field}"), problem);
                    }
                }
                Some(FieldSource::Value(v)) if v.trim().is_empty() => issues.push(format!("{path}.{field}.value"), "must not be empty"),
                _ => {}
            }
        }
        for name in self.attributes.keys() {
            if name.is_empty() {
                issues.push(format!("{path}.attributes"), "an attribute needs a name");
            } else if ["order.id", "order.stage", "order.status"].contains(&name.as_str()) {
                issues.push(format!("{path}.attributes.{name}"), "set from order_id, stage and status; map those instead");
            }
        }
    }
}

/// Why a message maps to no order events; it is dead-lettered with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unmappable(pub String);

/// Maps a message body to order events; all of them, or an error naming the first problem.
/// `identity` is the receiver's service; events without a time happened at `now_ns`.
pub fn map_message(body: &[u8], mapping: Option<&MappingConfig>, identity: &str, now_ns: u64) -> Result<Vec<OrderEvent>, Unmappable> {
    let value: Value = serde_json::from_slice(body).map_err(|e| Unmappable(format!("the message is not JSON: {e}")))?;
    let (items, many) = match value {
        Value::Array(items) => (items, true),
        object @ Value::Object(_) => (vec![object], false),
        _ => return Err(Unmappable("the message must be a JSON object or an array of them".into())),
    };
    let mut events = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let at = |Unmappable(message)| Unmappable(if many { format!("element {index}: {message}") } else { message });
        let event = match mapping {
            Some(mapping) => map_object(&item, mapping, identity, now_ns),
            None => read_plain(item, identity, now_ns),
        }
        .map_err(at)?;
        if event.service != identity {
            return Err(at(Unmappable(format!("names service {:?}; this receiver's messages speak for {identity:?}", event.service))));
        }
        events.push(event);
    }
    Ok(events)
}

/// An object that is an order event already; its service defaults to the receiver's.
fn read_plain(mut item: Value, identity: &str, now_ns: u64) -> Result<OrderEvent, Unmappable> {
    if let Value::Object(object) = &mut item {
        object.entry("service").or_insert_with(|| Value::String(identity.to_string()));
    }
    read_order_event(item, now_ns).map_err(|(field, error)| {
        Unmappable(match field {
            Some(field) => format!("{field}: {error}"),
            None => error,
        })
    })
}

fn map_object(item: &Value, mapping: &MappingConfig, identity: &str, now_ns: u64) -> Result<OrderEvent, Unmappable> {
    if !item.is_object() {
        return Err(Unmappable("an order event message must be a JSON object".into()));
    }
    let mut event = Map::new();
    let mut sources: BTreeMap<String, &FieldSource> = BTreeMap::new();
    for (field, source) in mapping.fields() {
        let Some(source) = source else { continue };
        sources.insert(field.to_string(), source);
        if let Some(value) = source.resolve(item) {
            // An id or a status may be a number in the source system's JSON.
            let value = match value {
                Value::Number(n) if field != "time" => Value::String(n.to_string()),
                other => other,
            };
            event.insert(field.into(), value);
        }
    }
    if !event.contains_key("service") {
        event.insert("service".into(), Value::String(identity.to_string()));
    }
    let mut attributes = Map::new();
    for (name, source) in &mapping.attributes {
        sources.insert(format!("attributes.{name}"), source);
        if let Some(value) = source.resolve(item) {
            attributes.insert(name.clone(), value);
        }
    }
    if !attributes.is_empty() {
        event.insert("attributes".into(), Value::Object(attributes));
    }
    read_order_event(Value::Object(event), now_ns).map_err(|(field, error)| {
        Unmappable(match field {
            Some(field) => match sources.get(&field) {
                Some(source) => format!("{field} (from {}): {error}", source.describe()),
                None => format!("{field}: {error}"),
            },
            None => error,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000_000_000;
    const T: u64 = 1_795_168_800_000_000_000; // 2026-11-20T10:00:00Z

    fn mapping(yaml: &str) -> MappingConfig {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn mes() -> MappingConfig {
        mapping("{order_id: /orderNo, status: /state, time: /ts, stage: {value: status_change}, attributes: {mes.line: /line/id, mes.shift: /shift}}")
    }

    #[test]
    fn maps_a_message_by_pointers() {
        let body = br#"{"orderNo": "A-1001", "state": "manufactured", "ts": "2026-11-20T10:00:00Z", "line": {"id": 3}, "extra": true}"#;
        let events = map_message(body, Some(&mes()), "mes-api", NOW).unwrap();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(
            (e.order_id.as_str(), e.service.as_str(), e.stage.as_str(), e.status.as_deref(), e.time_ns),
            ("A-1001", "mes-api", "status_change", Some("manufactured"), T)
        );
        let attrs: Vec<_> = e.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(attrs, ["mes.line"], "a pointer that finds nothing (/shift) leaves its attribute out");
    }

    #[test]
    fn numbers_become_ids_and_missing_fields_take_defaults() {
        let events = map_message(br#"[{"orderNo": 1001}, {"orderNo": "A-2", "state": null}]"#, Some(&mes()), "mes-api", NOW).unwrap();
        assert_eq!(events.iter().map(|e| e.order_id.as_str()).collect::<Vec<_>>(), ["1001", "A-2"]);
        assert!(events.iter().all(|e| e.status.is_none() && e.time_ns == NOW && e.stage == "status_change"));
    }

    #[test]
    fn names_the_pointer_of_each_problem() {
        let cases: [(&[u8], &str); 7] = [
            (b"{not json", "the message is not JSON"),
            (b"\"A-1\"", "must be a JSON object or an array"),
            (br#"{"state": "new"}"#, "order_id (from /orderNo): required"),
            (br#"{"orderNo": ""}"#, "order_id (from /orderNo): must not be empty"),
            (br#"{"orderNo": "A-1", "ts": "yesterday"}"#, "time (from /ts): \"yesterday\" is not an RFC 3339 time"),
            (br#"{"orderNo": "A-1", "line": {"id": [1]}}"#, "attributes.mes.line (from /line/id): must be a string, number or boolean"),
            (br#"[{"orderNo": "A-1"}, 42]"#, "element 1: an order event message must be a JSON object"),
        ];
        for (body, expected) in cases {
            let error = map_message(body, Some(&mes()), "mes-api", NOW).unwrap_err().0;
            assert!(error.contains(expected), "{}: {error}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn a_message_speaks_only_for_the_receivers_service() {
        let m = mapping("{order_id: /orderNo, service: /source}");
        assert_eq!(map_message(br#"{"orderNo": "A-1", "source": "mes-api"}"#, Some(&m), "mes-api", NOW).unwrap()[0].service, "mes-api");
        let error = map_message(br#"{"orderNo": "A-1", "source": "crm-api"}"#, Some(&m), "mes-api", NOW).unwrap_err().0;
        assert_eq!(error, r#"names service "crm-api"; this receiver's messages speak for "mes-api""#);
        let error = map_message(br#"{"order_id": "A-1", "service": "crm-api"}"#, None, "mes-api", NOW).unwrap_err().0;
        assert!(error.starts_with("names service \"crm-api\""), "{error}");
    }

    #[test]
    fn without_a_mapping_a_message_is_an_order_event() {
        let body = br#"[{"order_id": "A-1", "status": "manufactured", "time": "2026-11-20T10:00:00Z", "attributes": {"mes.line": "3"}}]"#;
        let events = map_message(body, None, "mes-api", NOW).unwrap();
        assert_eq!((events[0].service.as_str(), events[0].time_ns, events[0].attributes.len()), ("mes-api", T, 1));
        let error = map_message(br#"{"order_id": "A-1", "colour": "red"}"#, None, "mes-api", NOW).unwrap_err().0;
        assert!(error.starts_with("colour: unknown field"), "{error}");
    }

    #[test]
    fn validation_names_bad_pointers_and_a_missing_order_id() {
        let m = mapping("{status: state, time: '', stage: {value: ''}, attributes: {a: /x~2y, order.id: /id}}");
        let mut issues = Issues::default();
        m.validate("receivers.bus.mapping", &mut issues);
        let found: Vec<String> = issues.found().iter().map(|i| format!("{}: {}", i.path, i.message)).collect();
        let expected = [
            "receivers.bus.mapping.order_id: missing",
            "receivers.bus.mapping.status: \"state\" is not a JSON pointer: it starts with / (write /state)",
            "receivers.bus.mapping.time: the empty pointer is the whole message",
            "receivers.bus.mapping.stage.value: must not be empty",
            "receivers.bus.mapping.attributes.a: \"/x~2y\" is not a JSON pointer",
            "receivers.bus.mapping.attributes.order.id: set from order_id",
        ];
        assert_eq!(found.len(), expected.len(), "{found:#?}");
        for e in expected {
            assert!(found.iter().any(|f| f.starts_with(e)), "{e} not in {found:#?}");
        }
        let error = serde_yaml_ng::from_str::<MappingConfig>("{order_id: {value: x, other: y}}").unwrap_err().to_string();
        assert!(error.contains("unknown field `other`"), "{error}");
    }
}
