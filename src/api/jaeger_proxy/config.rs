//! `api.jaeger_ui`: a real Jaeger query service that tracegate serves under a path of its API
//! port, behind its own sign-in, masking and audit.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::net::positive_duration;
use crate::shared::{check_readable_file, ByteSize, Issues};

/// Paths of tracegate's own that the proxy may not take.
const RESERVED: &[&str] = &["/api", "/v1", "/healthz", "/readyz", "/metrics", "/login", "/logout", "/auth", "/orders", "/static"];

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JaegerUiConfig {
    /// Jaeger's query service (its HTTP port, 16686 by default): `http://jaeger-query:16686`.
    /// Scheme, host and port only; the path is `path`, which Jaeger must serve under too.
    pub upstream: String,
    /// Where Jaeger UI and its `/api` are served on tracegate's API port. Jaeger must be started
    /// with the same base path (`QUERY_BASE_PATH=/jaeger`, or `base_path` in Jaeger v2's
    /// `jaeger_query` extension): the prefix is passed on as it is.
    #[serde(default = "default_path")]
    pub path: String,
    /// How long Jaeger may take to start its answer.
    #[serde(default = "default_timeout", deserialize_with = "positive_duration", serialize_with = "humantime_serde::serialize")]
    pub timeout: Duration,
    /// The largest trace or search answer read for masking; a larger one is refused (502).
    /// The UI's files are streamed and not bounded by this.
    #[serde(default = "default_max_response_size")]
    pub max_response_size: ByteSize,
    /// CA certificates (PEM) for an `https` upstream with a private CA; the public roots without.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_path() -> String {
    "/jaeger".into()
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_max_response_size() -> ByteSize {
    ByteSize::mib(64)
}

impl JaegerUiConfig {
    pub fn validate(&self, at: &str, issues: &mut Issues) {
        match self.upstream.parse::<http::Uri>() {
            Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {
                if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
                    issues.push(
                        format!("{at}.upstream"),
                        format!(
                            "{:?}: give Jaeger's scheme, host and port only (e.g. http://jaeger-query:16686); its base path is {at}.path",
                            self.upstream
                        ),
                    );
                }
            }
            _ => {
                issues.push(format!("{at}.upstream"), format!("{:?} is not an http(s) URL (e.g. http://jaeger-query:16686)", self.upstream))
            }
        }
        let path = self.path.as_str();
        let well_formed = path.len() > 1
            && path.starts_with('/')
            && !path.ends_with('/')
            && !path.contains("//")
            && path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b));
        if !well_formed {
            issues.push(
                format!("{at}.path"),
                format!("{path:?}: a path such as /jaeger (starts with /, does not end with /, letters, digits and - . _ ~ only)"),
            );
        } else if let Some(taken) = RESERVED.iter().find(|r| path == **r || path.starts_with(&format!("{r}/"))) {
            issues.push(format!("{at}.path"), format!("{path:?} is under {taken}, which tracegate serves itself; use e.g. /jaeger"));
        }
        if self.max_response_size.0 < 1024 {
            issues.push(format!("{at}.max_response_size"), format!("{} is too small for any trace; e.g. 64MiB", self.max_response_size));
        }
        if let Some(file) = &self.ca_file {
            check_readable_file(issues, format!("{at}.ca_file"), file);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str) -> Vec<String> {
        let config: JaegerUiConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let mut issues = Issues::default();
        config.validate("api.jaeger_ui", &mut issues);
        issues.into_vec().into_iter().map(|i| i.to_string()).collect()
    }

    #[test]
    fn defaults_and_good_values_pass() {
        let config: JaegerUiConfig = serde_yaml_ng::from_str("upstream: http://jaeger-query:16686").unwrap();
        assert_eq!(config.path, "/jaeger");
        assert_eq!(config.timeout, Duration::from_secs(30));
        assert!(problems("upstream: http://jaeger-query:16686").is_empty());
        assert!(problems("{upstream: 'https://jaeger.internal', path: /tools/jaeger}").is_empty());
    }

    #[test]
    fn bad_values_are_named_with_their_path() {
        assert_eq!(
            problems("upstream: jaeger-query:16686"),
            ["api.jaeger_ui.upstream: \"jaeger-query:16686\" is not an http(s) URL (e.g. http://jaeger-query:16686)"]
        );
        assert!(problems("upstream: http://jaeger:16686/jaeger")[0].starts_with("api.jaeger_ui.upstream: "));
        for path in ["jaeger", "/jaeger/", "/", "/api/jaeger", "/api", "/j?x", "/healthz"] {
            let found = problems(&format!("{{upstream: 'http://j:16686', path: '{path}'}}"));
            assert_eq!(found.len(), 1, "{path}: {found:?}");
            assert!(found[0].starts_with("api.jaeger_ui.path: "), "{found:?}");
        }
        assert!(problems("{upstream: 'http://j:16686', max_response_size: 10}")[0].starts_with("api.jaeger_ui.max_response_size: "));
        assert!(problems("{upstream: 'http://j:16686', ca_file: /nonexistent/ca.pem}")[0].contains("does not exist"));
        assert!(serde_yaml_ng::from_str::<JaegerUiConfig>("{upstream: 'http://j:16686', timeout: 0s}").is_err());
        assert!(serde_yaml_ng::from_str::<JaegerUiConfig>("{upstream: 'http://j:16686', base_path: /x}").is_err());
    }
}
