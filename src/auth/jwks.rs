//! Keys from an issuer's JWKS URL: HTTPS only (plain HTTP to loopback only when configured),
//! response size and time bounded, cached for at most `refresh_interval` (10 min at most). A
//! token with an unknown `kid` triggers at most one fetch per `refetch_cooldown`, shared by every
//! concurrent request; when the IdP is down the last good keys keep working for `max_stale`.
//! `kty: oct` keys (shared secrets have no place in a public document) and `use: enc` keys are
//! ignored.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;

use super::jwt::VerifyKey;
use super::setup::ClientSetupError;
use crate::shared::Issues;

/// The longest a fetched key set is used before it is fetched again.
pub const MAX_REFRESH_INTERVAL: Duration = Duration::from_secs(600);

/// `auth.issuers[].jwks`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwksConfig {
    pub url: String,
    /// Allows `http://` for a loopback host (tests, a sidecar); never for any other host.
    #[serde(default)]
    pub allow_insecure_loopback: bool,
    #[serde(default = "default_refresh", with = "humantime_serde")]
    pub refresh_interval: Duration,
    #[serde(default = "default_cooldown", with = "humantime_serde")]
    pub refetch_cooldown: Duration,
    /// How long the last good keys stay usable after a refresh is due but the IdP cannot answer.
    #[serde(default = "default_max_stale", with = "humantime_serde")]
    pub max_stale: Duration,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// A CA bundle (PEM) for an IdP behind a private CA; the public web roots otherwise.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
}

fn default_refresh() -> Duration {
    Duration::from_secs(300)
}
fn default_cooldown() -> Duration {
    Duration::from_secs(30)
}
fn default_max_stale() -> Duration {
    Duration::from_secs(3600)
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_max_bytes() -> usize {
    256 * 1024
}

impl JwksConfig {
    pub fn validate(&self, path: &str, issues: &mut Issues) {
        match self.url.parse::<http::Uri>() {
            Ok(uri) => {
                let loopback = matches!(uri.host(), Some("127.0.0.1" | "localhost" | "[::1]" | "::1"));
                match uri.scheme_str() {
                    Some("https") => {}
                    Some("http") if loopback && self.allow_insecure_loopback => {}
                    Some("http") if loopback => {
                        issues.push(format!("{path}.url"), "plain http needs allow_insecure_loopback: true (loopback only)")
                    }
                    _ => issues.push(format!("{path}.url"), "a JWKS URL must be https://"),
                }
            }
            Err(e) => issues.push(format!("{path}.url"), format!("not a URL: {e}")),
        }
        if self.refresh_interval > MAX_REFRESH_INTERVAL || self.refresh_interval.is_zero() {
            issues.push(format!("{path}.refresh_interval"), "must be more than 0s and at most 10m");
        }
        if self.timeout.is_zero() {
            issues.push(format!("{path}.timeout"), "must be more than 0s");
        }
        if let Some(ca) = &self.ca_file {
            crate::shared::check_readable_file(issues, format!("{path}.ca_file"), ca);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("request failed")]
    Request(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    #[error("not a JWK set: {0}")]
    Malformed(String),
}

/// How usable the cached keys are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Fetched within `refresh_interval`.
    Fresh,
    /// A refresh is due; the keys still work (outage tolerance).
    Stale,
    /// Never fetched, or older than `refresh_interval + max_stale`: no keys.
    Expired,
}

struct Cached {
    keys: Arc<Vec<VerifyKey>>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
}

/// One issuer's JWKS endpoint and its cached keys.
pub struct JwksSource {
    config: JwksConfig,
    uri: http::Uri,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>,
    cache: RwLock<Cached>,
    /// Held while fetching, so that concurrent requests wait for one fetch.
    fetching: tokio::sync::Mutex<()>,
}

impl JwksSource {
    pub fn new(config: &JwksConfig) -> Result<JwksSource, ClientSetupError> {
        let uri: http::Uri = config.url.parse().map_err(|source| ClientSetupError::Url { setting: "jwks.url", source })?;
        // The URL was checked: https, or http to loopback when explicitly allowed.
        let connector = crate::shared::https_connector(config.ca_file.as_deref(), "ca_file", config.timeout)?;
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(JwksSource {
            config: config.clone(),
            uri,
            client,
            cache: RwLock::new(Cached { keys: Arc::new(Vec::new()), fetched_at: None, last_attempt: None }),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// The cached keys and how fresh they are (expired keys are not handed out).
    pub fn keys(&self) -> (Arc<Vec<VerifyKey>>, Freshness) {
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        let freshness = match cache.fetched_at {
            None => Freshness::Expired,
            Some(at) if at.elapsed() < self.config.refresh_interval => Freshness::Fresh,
            Some(at) if at.elapsed() < self.config.refresh_interval + self.config.max_stale => Freshness::Stale,
            Some(_) => Freshness::Expired,
        };
        match freshness {
            Freshness::Expired => (Arc::new(Vec::new()), freshness),
            _ => (cache.keys.clone(), freshness),
        }
    }

    /// Fetches the key set unless a fetch was attempted within the cooldown (or while this
    /// caller waited for another fetch). Failures keep the last good keys.
    pub async fn refresh(&self) {
        let asked = Instant::now();
        let _guard = self.fetching.lock().await;
        {
            let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
            if let Some(last) = cache.last_attempt {
                // Someone fetched while we waited, or the cooldown has not passed.
                if last >= asked || last.elapsed() < self.config.refetch_cooldown {
                    return;
                }
            }
        }
        let result = self.fetch().await;
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        cache.last_attempt = Some(Instant::now());
        match result {
            Ok(keys) => {
                tracing::debug!(url = %crate::shared::redact_url(&self.config.url), keys = keys.len(), "JWKS fetched");
                cache.keys = Arc::new(keys);
                cache.fetched_at = Some(Instant::now());
            }
            Err(error) => {
                tracing::warn!(error = %crate::shared::error_chain(&error), url = %crate::shared::redact_url(&self.config.url), "JWKS fetch failed; keeping the last good keys");
            }
        }
    }

    async fn fetch(&self) -> Result<Vec<VerifyKey>, JwksError> {
        let request = http::Request::get(self.uri.clone())
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| JwksError::Request(Box::new(e)))?;
        let limit = self.config.max_bytes;
        let work = async {
            let response = self.client.request(request).await.map_err(|e| JwksError::Request(Box::new(e)))?;
            if response.status() != http::StatusCode::OK {
                return Err(JwksError::Status(response.status().as_u16()));
            }
            match Limited::new(response.into_body(), limit).collect().await {
                Ok(body) => Ok(body.to_bytes()),
                Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(JwksError::TooLarge(limit)),
                Err(e) => Err(JwksError::Request(e)),
            }
        };
        let body = tokio::time::timeout(self.config.timeout, work).await.map_err(|_| JwksError::Timeout(self.config.timeout))??;
        parse_jwks(&body)
    }
}

/// The usable verification keys of a JWK set.
pub fn parse_jwks(body: &[u8]) -> Result<Vec<VerifyKey>, JwksError> {
    let set: Value = serde_json::from_slice(body).map_err(|e| JwksError::Malformed(e.to_string()))?;
    let Some(keys) = set.get("keys").and_then(Value::as_array) else {
        return Err(JwksError::Malformed("no keys array".into()));
    };
    let mut out = Vec::new();
    for key in keys {
        let kty = key.get("kty").and_then(Value::as_str).unwrap_or("");
        if kty == "oct" || key.get("use").and_then(Value::as_str) == Some("enc") {
            continue;
        }
        let Ok(jwk) = serde_json::from_value::<Jwk>(key.clone()) else { continue };
        let Some(name) = algorithm_of(key) else { continue };
        let Ok(algorithm) = name.parse::<Algorithm>() else { continue };
        let Ok(decoding) = DecodingKey::from_jwk(&jwk) else { continue };
        out.push(VerifyKey { kid: key.get("kid").and_then(Value::as_str).map(str::to_string), algorithm, name, key: decoding });
    }
    Ok(out)
}

/// The key's own `alg`, or the one its type implies. Never the token's.
fn algorithm_of(key: &Value) -> Option<String> {
    let allowed = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"];
    if let Some(alg) = key.get("alg").and_then(Value::as_str) {
        return allowed.contains(&alg).then(|| alg.to_string());
    }
    let implied = match (key.get("kty").and_then(Value::as_str)?, key.get("crv").and_then(Value::as_str)) {
        ("RSA", _) => "RS256",
        ("EC", Some("P-256")) => "ES256",
        ("EC", Some("P-384")) => "ES384",
        ("OKP", Some("Ed25519")) => "EdDSA",
        _ => return None,
    };
    Some(implied.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issues_for(url: &str, allow: bool) -> usize {
        let mut config: JwksConfig = serde_json::from_value(serde_json::json!({"url": url})).unwrap();
        config.allow_insecure_loopback = allow;
        let yaml = format!(
            "receivers: {{otlp: {{http: {{}}}}}}\nexporters: {{debug: {{}}}}\nservice: {{pipelines: {{traces: {{receivers: [otlp], exporters: [debug]}}}}}}\n\
             auth: {{issuers: [{{issuer: x, audience: [t], jwks: {{url: \"{}\", allow_insecure_loopback: {}}}}}]}}\n",
            config.url, config.allow_insecure_loopback
        );
        crate::Config::from_yaml(&yaml).err().map(|e| e.issues.len()).unwrap_or(0)
    }

    #[test]
    fn https_only_and_plain_http_only_to_loopback_when_allowed() {
        assert_eq!(issues_for("https://sso.shop.test/certs", false), 0);
        assert_eq!(issues_for("http://sso.shop.test/certs", false), 1);
        assert_eq!(issues_for("http://sso.shop.test/certs", true), 1, "never plain http beyond loopback");
        assert_eq!(issues_for("http://127.0.0.1:8080/certs", false), 1, "loopback needs the explicit switch");
        assert_eq!(issues_for("http://127.0.0.1:8080/certs", true), 0);
    }

    #[test]
    fn secret_and_encryption_keys_are_ignored() {
        let set = br#"{"keys": [
            {"kty": "oct", "kid": "s", "k": "c2VjcmV0", "alg": "HS256"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "enc", "use": "enc", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "sig", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "RSA", "kid": "weird", "alg": "HS256", "n": "AQAB", "e": "AQAB"}
        ]}"#;
        let keys = parse_jwks(set).unwrap();
        let kids: Vec<_> = keys.iter().map(|k| (k.kid.clone().unwrap(), k.name.clone())).collect();
        assert_eq!(kids, vec![("sig".to_string(), "EdDSA".to_string())]);
        assert!(parse_jwks(b"{\"nokeys\": []}").is_err());
    }
}
