//! `${env:NAME}` and `${env:NAME:-default}` substitution in string values, as the Collector does.
//!
//! Substitution runs on the parsed YAML tree, never on the raw text, so a variable's value cannot
//! inject YAML structure. A scalar that is exactly one reference is re-read as a YAML scalar, so
//! `port: ${env:PORT}` yields a number. `$$` is a literal `$`.

use serde_yaml_ng::Value;

/// Replaces every reference in `value`; returns one message per unresolved reference, each with
/// the path of the value that held it.
pub fn substitute(value: &mut Value, path: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    let mut errors = Vec::new();
    walk(value, path, lookup, &mut errors);
    errors
}

fn walk(value: &mut Value, path: &str, lookup: &dyn Fn(&str) -> Option<String>, errors: &mut Vec<String>) {
    match value {
        Value::String(s) if s.contains('$') => match expand(s, lookup) {
            Ok(expanded) => {
                let whole_reference = s.trim().starts_with("${") && s.trim().ends_with('}') && s.matches("${").count() == 1;
                *value = if whole_reference {
                    match serde_yaml_ng::from_str::<Value>(&expanded) {
                        Ok(v @ (Value::Bool(_) | Value::Number(_))) => v,
                        _ => Value::String(expanded),
                    }
                } else {
                    Value::String(expanded)
                };
            }
            Err(message) => errors.push(format!("{}: {message}", display_path(path))),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(item, &format!("{path}[{i}]"), lookup, errors);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let key = key.as_str().map(str::to_owned).unwrap_or_else(|| format!("{key:?}"));
                let child = if path.is_empty() { key } else { format!("{path}.{key}") };
                walk(item, &child, lookup, errors);
            }
        }
        Value::Tagged(tagged) => walk(&mut tagged.value, path, lookup, errors),
        _ => {}
    }
}

fn display_path(path: &str) -> &str {
    if path.is_empty() {
        "."
    } else {
        path
    }
}

/// A `${...}` reference that cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("unterminated reference in {0:?}")]
    Unterminated(String),
    #[error("unsupported reference ${{{0}}}; only ${{env:NAME}} is known")]
    Unsupported(String),
    #[error("invalid environment variable name {0:?}")]
    InvalidName(String),
    #[error("environment variable {0} is not set and has no default (use ${{env:{0}:-default}})")]
    NotSet(String),
}

/// Expands the references in one string.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, EnvError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(body) = tail.strip_prefix("${") {
            let end = body.find('}').ok_or_else(|| EnvError::Unterminated(input.to_string()))?;
            let reference = &body[..end];
            let spec = reference.strip_prefix("env:").ok_or_else(|| EnvError::Unsupported(reference.to_string()))?;
            let (name, default) = match spec.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (spec, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(EnvError::InvalidName(name.to_string()));
            }
            match (lookup(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(EnvError::NotSet(name.to_string())),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("jaeger".into()),
            "PORT" => Some("4317".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_references_and_defaults() {
        assert_eq!(expand("http://${env:HOST}:${env:PORT}", &env).unwrap(), "http://jaeger:4317");
        assert_eq!(expand("${env:MISSING:-fallback}", &env).unwrap(), "fallback");
        assert_eq!(expand("${env:MISSING:-}", &env).unwrap(), "");
        assert_eq!(expand("cost $$5 and $x", &env).unwrap(), "cost $5 and $x");
    }

    #[test]
    fn reports_missing_variable_with_path() {
        let mut v: Value = serde_yaml_ng::from_str("exporters: {j: {endpoint: '${env:NOPE}'}}").unwrap();
        let errors = substitute(&mut v, "", &env);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("exporters.j.endpoint: environment variable NOPE is not set"), "{}", errors[0]);
    }

    #[test]
    fn whole_reference_becomes_a_number() {
        let mut v: Value = serde_yaml_ng::from_str("port: ${env:PORT}\nurl: x${env:PORT}").unwrap();
        assert!(substitute(&mut v, "", &env).is_empty());
        assert_eq!(v["port"], Value::Number(4317.into()));
        assert_eq!(v["url"], Value::String("x4317".into()));
    }
}
