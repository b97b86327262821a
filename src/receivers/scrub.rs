//! Credentials never travel on: request and response header attributes that carry them
//! (`http.request.header.authorization`, `...cookie`, `http.response.header.set-cookie`, ...)
//! are removed from every span, event and link before the batch reaches any processor,
//! exporter or log.

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

/// Header names (lowercase, as OpenTelemetry's semantic conventions write them) whose values are
/// credentials.
const CREDENTIAL_HEADERS: [&str; 6] =
    ["authorization", "proxy-authorization", "cookie", "set-cookie", "x-forwarded-access-token", "x-api-key"];

/// Whether an attribute key carries a credential header's value.
pub fn is_credential_attribute(key: &str) -> bool {
    let Some(header) = key.strip_prefix("http.request.header.").or_else(|| key.strip_prefix("http.response.header.")) else {
        return false;
    };
    let header = header.to_ascii_lowercase().replace('_', "-");
    CREDENTIAL_HEADERS.contains(&header.as_str())
}

fn scrub(attributes: &mut Vec<KeyValue>) -> usize {
    let before = attributes.len();
    attributes.retain(|kv| !is_credential_attribute(&kv.key));
    before - attributes.len()
}

/// Removes credential attributes everywhere in `resource_spans`; returns how many were removed.
pub fn strip_credentials(resource_spans: &mut [ResourceSpans]) -> usize {
    let mut removed = 0;
    for rs in resource_spans {
        if let Some(resource) = rs.resource.as_mut() {
            removed += scrub(&mut resource.attributes);
        }
        for ss in &mut rs.scope_spans {
            for span in &mut ss.spans {
                removed += scrub(&mut span.attributes);
                for event in &mut span.events {
                    removed += scrub(&mut event.attributes);
                }
                for link in &mut span.links {
                    removed += scrub(&mut link.attributes);
                }
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_headers_are_recognised() {
        for key in [
            "http.request.header.authorization",
            "http.request.header.cookie",
            "http.response.header.set-cookie",
            "http.request.header.x_forwarded_access_token",
            "http.request.header.Authorization",
        ] {
            assert!(is_credential_attribute(key), "{key}");
        }
        for key in ["http.request.header.content-type", "authorization", "http.request.method"] {
            assert!(!is_credential_attribute(key), "{key}");
        }
    }
}
