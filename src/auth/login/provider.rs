//! The OpenID Connect provider as tracegate talks to it: discovery
//! (`/.well-known/openid-configuration`), the token endpoint (code and refresh grants), userinfo,
//! and the provider's keys through the JWKS cache. Every call is bounded in time and size.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::Validation;
use serde_json::Value;
use tokio::time::Instant;

use super::config::{check_url, LoginConfig};
use crate::auth::jwks::{JwksConfig, JwksSource};
use crate::auth::setup::ClientSetupError;

/// The largest answer read from the provider.
const MAX_BODY_BYTES: usize = 256 * 1024;
/// How long a discovery document is used before it is fetched again.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);

/// Why a call to the provider did not give what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// No answer, a timeout or a 5xx: the provider could not say yes or no.
    #[error("identity provider unreachable: {0}")]
    Unreachable(String),
    /// The provider said no (`invalid_grant`: account disabled, token revoked or expired; 401
    /// from userinfo).
    #[error("identity provider refused: {0}")]
    Refused(String),
    /// An answer that breaks the protocol (bad signature, wrong issuer or audience, nonce).
    #[error("identity provider answer not accepted: {0}")]
    Invalid(String),
}

/// The endpoints the discovery document names.
pub struct Endpoints {
    pub authorization: String,
    pub token: String,
    pub userinfo: Option<String>,
    pub end_session: Option<String>,
    /// `client_secret_basic` (the default of OpenID Connect) unless only `client_secret_post`
    /// is offered.
    pub secret_in_body: bool,
    pub jwks: Arc<JwksSource>,
}

/// What the token endpoint answered.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub id_token: Option<String>,
    /// The access token's lifetime in seconds, when given.
    pub expires_in: Option<u64>,
    /// The refresh token's lifetime (Keycloak says it; most providers do not).
    pub refresh_expires_in: Option<u64>,
}

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One configured provider, discovered on first use and again every hour.
pub struct Provider {
    config: LoginConfig,
    client: HttpClient,
    discovered: tokio::sync::Mutex<Option<(Arc<Endpoints>, Instant)>>,
    leeway: u64,
}

pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Provider {
    pub fn new(config: &LoginConfig, leeway: Duration) -> Result<Provider, ClientSetupError> {
        let connector = crate::shared::https_connector(config.ca_file.as_deref(), "auth.login.ca_file", config.timeout)?;
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Provider { config: config.clone(), client, discovered: tokio::sync::Mutex::new(None), leeway: leeway.as_secs() })
    }

    /// The provider's endpoints (discovered once an hour; a failed discovery is tried again on
    /// the next call).
    pub async fn endpoints(&self) -> Result<Arc<Endpoints>, ProviderError> {
        let mut cached = self.discovered.lock().await;
        if let Some((endpoints, at)) = cached.as_ref() {
            if at.elapsed() < DISCOVERY_TTL {
                return Ok(endpoints.clone());
            }
        }
        let endpoints = Arc::new(self.discover().await?);
        *cached = Some((endpoints.clone(), Instant::now()));
        Ok(endpoints)
    }

    async fn discover(&self) -> Result<Endpoints, ProviderError> {
        let url = format!("{}/.well-known/openid-configuration", self.config.issuer.trim_end_matches('/'));
        let request = http::Request::get(&url).header(http::header::ACCEPT, "application/json").body(Full::default());
        let (status, body) = self.send(request).await?;
        if status != 200 {
            return Err(ProviderError::Unreachable(format!("discovery answered HTTP {status}")));
        }
        let doc: Value = serde_json::from_slice(&body).map_err(|e| ProviderError::Invalid(format!("discovery document: {e}")))?;
        let text = |key: &str| doc.get(key).and_then(Value::as_str).map(str::to_string);
        if text("issuer").as_deref() != Some(self.config.issuer.as_str()) {
            return Err(ProviderError::Invalid(format!(
                "discovery names issuer {:?}, configured is {:?}",
                text("issuer").unwrap_or_default(),
                self.config.issuer
            )));
        }
        let endpoint = |key: &str, required: bool| -> Result<Option<String>, ProviderError> {
            match text(key) {
                Some(url) => match check_url(&url, self.config.allow_insecure_loopback) {
                    Ok(_) => Ok(Some(url)),
                    Err(e) => Err(ProviderError::Invalid(format!("discovery {key} {url:?}: {}", crate::shared::error_chain(&e)))),
                },
                None if required => Err(ProviderError::Invalid(format!("discovery document has no {key}"))),
                None => Ok(None),
            }
        };
        if let Some(methods) = doc.get("code_challenge_methods_supported").and_then(Value::as_array) {
            if !methods.iter().any(|m| m == "S256") {
                return Err(ProviderError::Invalid("the provider does not support PKCE with S256".into()));
            }
        }
        let methods: Vec<&str> = doc
            .get("token_endpoint_auth_methods_supported")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let secret_in_body = !methods.is_empty() && !methods.contains(&"client_secret_basic") && methods.contains(&"client_secret_post");
        let jwks_uri = endpoint("jwks_uri", true)?.unwrap_or_default();
        let mut jwks: JwksConfig =
            serde_json::from_value(serde_json::json!({ "url": jwks_uri })).map_err(|e| ProviderError::Invalid(format!("jwks_uri: {e}")))?;
        jwks.allow_insecure_loopback = self.config.allow_insecure_loopback;
        jwks.timeout = self.config.timeout;
        jwks.ca_file = self.config.ca_file.clone();
        let jwks = JwksSource::new(&jwks).map_err(|e| ProviderError::Invalid(crate::shared::error_chain(&e)))?;
        Ok(Endpoints {
            authorization: endpoint("authorization_endpoint", true)?.unwrap_or_default(),
            token: endpoint("token_endpoint", true)?.unwrap_or_default(),
            userinfo: endpoint("userinfo_endpoint", false)?,
            end_session: endpoint("end_session_endpoint", false)?,
            secret_in_body,
            jwks: Arc::new(jwks),
        })
    }

    /// The authorization-code grant with the PKCE verifier.
    pub async fn exchange_code(&self, code: &str, verifier: &str) -> Result<Tokens, ProviderError> {
        let redirect = self.config.redirect_uri();
        self.token_request(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &redirect),
            ("code_verifier", verifier),
        ])
        .await
    }

    /// The refresh-token grant: the provider confirms the account is still current.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, ProviderError> {
        self.token_request(&[("grant_type", "refresh_token"), ("refresh_token", refresh_token)]).await
    }

    async fn token_request(&self, params: &[(&str, &str)]) -> Result<Tokens, ProviderError> {
        let endpoints = self.endpoints().await?;
        let mut request = http::Request::post(&endpoints.token)
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        // The serializer is not Send: the body is finished before any await.
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.extend_pairs(params.iter());
            match &self.config.client_secret {
                // RFC 6749 §2.3.1: both parts form-encoded, then Basic.
                Some(secret) if !endpoints.secret_in_body => {
                    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                    let basic = STANDARD.encode(format!("{}:{}", encode(&self.config.client_id), encode(secret)));
                    request = request.header(http::header::AUTHORIZATION, format!("Basic {basic}"));
                }
                Some(secret) => {
                    form.append_pair("client_id", &self.config.client_id);
                    form.append_pair("client_secret", secret);
                }
                None => {
                    form.append_pair("client_id", &self.config.client_id);
                }
            }
            form.finish()
        };
        let (status, body) = self.send(request.body(Full::new(Bytes::from(body)))).await?;
        let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status >= 500 {
            return Err(ProviderError::Unreachable(format!("token endpoint answered HTTP {status}")));
        }
        if status != 200 {
            let error = answer.get("error").and_then(Value::as_str).unwrap_or("no error code");
            let description = answer.get("error_description").and_then(Value::as_str).unwrap_or("");
            return Err(ProviderError::Refused(format!("token endpoint: HTTP {status} {error} {description}").trim().to_string()));
        }
        let text = |key: &str| answer.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
        let Some(access_token) = text("access_token") else {
            return Err(ProviderError::Invalid("token response without access_token".into()));
        };
        Ok(Tokens {
            access_token,
            refresh_token: text("refresh_token"),
            id_token: text("id_token"),
            expires_in: answer.get("expires_in").and_then(Value::as_u64),
            refresh_expires_in: answer.get("refresh_expires_in").and_then(Value::as_u64).filter(|s| *s > 0),
        })
    }

    /// The userinfo claims of `access_token` (JSON answers only).
    pub async fn userinfo(&self, access_token: &str) -> Result<Value, ProviderError> {
        let endpoints = self.endpoints().await?;
        let Some(url) = &endpoints.userinfo else {
            return Err(ProviderError::Invalid("the provider has no userinfo_endpoint".into()));
        };
        let request = http::Request::get(url)
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::AUTHORIZATION, format!("Bearer {access_token}"))
            .body(Full::default());
        let (status, body) = self.send(request).await?;
        match status {
            200 => serde_json::from_slice::<Value>(&body)
                .ok()
                .filter(Value::is_object)
                .ok_or_else(|| ProviderError::Invalid("userinfo is not a JSON object".into())),
            401 | 403 => Err(ProviderError::Refused(format!("userinfo answered HTTP {status}"))),
            s if s >= 500 => Err(ProviderError::Unreachable(format!("userinfo answered HTTP {s}"))),
            s => Err(ProviderError::Refused(format!("userinfo answered HTTP {s}"))),
        }
    }

    /// Verifies a JWT the provider signed (an ID token, or a JWT access token): the key and
    /// algorithm come from the provider's JWKS, never from the token; `iss` and `exp` always,
    /// `aud` when `audience` is given.
    pub async fn verify_jwt(&self, token: &str, audience: Option<&str>) -> Result<Value, ProviderError> {
        let invalid = |m: String| ProviderError::Invalid(m);
        let header = jsonwebtoken::decode_header(token).map_err(|e| invalid(format!("not a JWT: {e}")))?;
        let endpoints = self.endpoints().await?;
        let alg = format!("{:?}", header.alg);
        let pick = |keys: &[crate::auth::jwt::VerifyKey]| -> Vec<usize> {
            keys.iter()
                .enumerate()
                .filter(|(_, k)| k.name == alg && (header.kid.is_none() || k.kid.is_none() || k.kid == header.kid))
                .map(|(i, _)| i)
                .collect()
        };
        let (mut keys, _) = endpoints.jwks.keys();
        if pick(&keys).is_empty() {
            // A new key (rotation) or the first use: one fetch per cooldown, shared by all.
            endpoints.jwks.refresh().await;
            keys = endpoints.jwks.keys().0;
        }
        let chosen = pick(&keys);
        if chosen.is_empty() {
            return Err(invalid(format!("no key of the provider verifies alg {alg} kid {:?}", header.kid)));
        }
        let mut last = invalid("signature does not verify".into());
        for i in chosen {
            let key = &keys[i];
            let mut validation = Validation::new(key.algorithm);
            validation.leeway = self.leeway;
            validation.set_issuer(&[self.config.issuer.as_str()]);
            match audience {
                Some(aud) => validation.set_audience(&[aud]),
                None => validation.validate_aud = false,
            }
            validation.set_required_spec_claims(&["exp", "iss", "sub"]);
            match jsonwebtoken::decode::<Value>(token, &key.key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => last = invalid(format!("{:?}", e.kind())),
            }
        }
        Err(last)
    }

    /// An ID token's claims after its checks (OpenID Connect Core §3.1.3.7): signature, issuer,
    /// audience = our client, `azp` if present, `exp`, `iat`, and the `nonce` of this sign-in.
    pub async fn verify_id_token(&self, token: &str, nonce: &str) -> Result<Value, ProviderError> {
        let claims = self.verify_jwt(token, Some(&self.config.client_id)).await?;
        let invalid = |m: &str| Err(ProviderError::Invalid(m.to_string()));
        if let Some(azp) = claims.get("azp") {
            if azp.as_str() != Some(self.config.client_id.as_str()) {
                return invalid("azp is not this client");
            }
        }
        if let Some(aud) = claims.get("aud").and_then(Value::as_array) {
            if aud.len() > 1 && claims.get("azp").is_none() {
                return invalid("several audiences and no azp");
            }
        }
        match claims.get("iat").and_then(Value::as_u64) {
            Some(iat) if iat <= now_secs() + self.leeway => {}
            Some(_) => return invalid("issued in the future (iat)"),
            None => return invalid("missing iat"),
        }
        if claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
            return invalid("nonce does not match this sign-in");
        }
        if claims.get("sub").and_then(Value::as_str).is_none_or(str::is_empty) {
            return invalid("missing sub");
        }
        Ok(claims)
    }

    async fn send(&self, request: Result<http::Request<Full<Bytes>>, http::Error>) -> Result<(u16, Bytes), ProviderError> {
        let request = request.map_err(|e| ProviderError::Invalid(format!("request: {e}")))?;
        let target = crate::shared::redact_url(&request.uri().to_string()).into_owned();
        let work = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| ProviderError::Unreachable(format!("{target}: {}", crate::shared::error_chain(&e))))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| ProviderError::Unreachable(format!("{target}: reading the answer: {e}")))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(self.config.timeout, work)
            .await
            .map_err(|_| ProviderError::Unreachable(format!("{target}: no answer within {:?}", self.config.timeout)))?
    }
}

/// A random value of 32 bytes, base64url: session ids, `state`, `nonce`, PKCE verifiers.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // The OS's CSPRNG; failing it is failing the machine, and nothing can be signed in safely.
    getrandom::fill(&mut bytes).expect("the operating system's random number generator failed");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The PKCE S256 challenge of `verifier` (RFC 7636 §4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    use sha2::Digest;
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_is_base64url_sha256_without_padding() {
        // Computed apart: base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip("=").
        assert_eq!(pkce_challenge("dBjftJeZ4CVP-mB92K9uhyUlkGjYIGmjaDKi2d1vF4I"), "3ArvofakPVTSrjwsE1J51srkN37CexXVK5DggMuW684");
        let a = random_token();
        assert_eq!(a.len(), 43);
        assert_ne!(a, random_token());
    }
}
